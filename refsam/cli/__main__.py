"""``python -m refsam.cli``: the ``refsam`` command."""

import sys

from . import main

sys.exit(main())
