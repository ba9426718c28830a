"""0.1 module path, kept importable: the synthetic data now live in `refsam.data.synthetic`.

New code imports from the layer itself; this module only re-exports it."""

from .data.synthetic import *  # noqa: F403
from .data.synthetic import __all__  # noqa: F401
