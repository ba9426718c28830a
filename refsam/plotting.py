"""0.1 module path, kept importable: see `refsam.apps.plotting`.

New code imports from the layer itself; this module only re-exports it."""

from .apps.plotting import *  # noqa: F403
from .apps.plotting import __all__  # noqa: F401
