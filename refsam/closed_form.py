"""0.1 module path, kept importable: see `refsam.influence.closed_form`.

New code imports from the layer itself; this module only re-exports it."""

from .influence.closed_form import *  # noqa: F403
from .influence.closed_form import (
    ROOT_TOL_DEFAULT,  # noqa: F401
    __all__,  # noqa: F401
)
from .tolerances import COND_WARN  # noqa: F401
