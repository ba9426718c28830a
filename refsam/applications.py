"""0.1 module path, kept importable: see `refsam.apps`.

New code imports from the layer itself; this module only re-exports it."""

from .apps import *  # noqa: F403
from .apps import __all__  # noqa: F401
