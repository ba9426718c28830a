"""0.1 module path, kept importable: see `refsam.kit.testing` (needs the test extra: hypothesis).

New code imports from the layer itself; this module only re-exports it."""

from .kit.testing import *  # noqa: F403
from .kit.testing import (  # noqa: F401
    ACTIVATIONS,
    MAX_WORST_ENTRIES,
    __all__,  # noqa: F401
)
