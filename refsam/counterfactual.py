"""0.1 module path, kept importable: see `refsam.ground_truth.replay`.

New code imports from the layer itself; this module only re-exports it."""

from .ground_truth.replay import *  # noqa: F403
from .ground_truth.replay import __all__  # noqa: F401
