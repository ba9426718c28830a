"""0.1 module path, kept importable: see `refsam.influence.linearisation` and
`refsam.influence.fixed_point`.

New code imports from the layer itself; this module only re-exports it."""

from .influence.fixed_point import *  # noqa: F403
from .influence.fixed_point import TOL_DEFAULT  # noqa: F401
from .influence.fixed_point import __all__ as _fixed_point_all
from .influence.linearisation import *  # noqa: F403
from .influence.linearisation import __all__ as _linearisation_all

__all__ = [*_fixed_point_all, *_linearisation_all]
