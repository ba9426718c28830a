"""0.1 module path, kept importable: the loaders now live in `refsam.data.loaders`.

New code imports from the layer itself; this module only re-exports it."""

from .data.loaders import *  # noqa: F403
from .data.loaders import __all__  # noqa: F401
