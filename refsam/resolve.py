"""0.1 module path, kept importable: see `refsam.ground_truth.resolve`.

New code imports from the layer itself; this module only re-exports it."""

from .ground_truth.resolve import *  # noqa: F403
from .ground_truth.resolve import __all__  # noqa: F401
from .tolerances import RESOLVE_TOL  # noqa: F401
