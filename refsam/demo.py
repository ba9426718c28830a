"""0.1 module path, kept importable: see `refsam.apps.demo`.

New code imports from the layer itself; this module only re-exports it."""

from .apps.demo import *  # noqa: F403
from .apps.demo import __all__  # noqa: F401
