"""0.1 module path, kept importable: see `refsam.kit`.

New code imports from the layer itself; this module only re-exports it."""

from .kit import *  # noqa: F403
from .kit import __all__  # noqa: F401
