"""0.1 module path, kept importable: see `refsam.influence.trajectory`.

New code imports from the layer itself; this module only re-exports it."""

from .influence.trajectory import *  # noqa: F403
from .influence.trajectory import __all__  # noqa: F401
