"""refsam's exceptions: one base class, each subclass also the standard type a caller expects.

``except refsam.RefsamError`` catches every failure refsam raises on purpose — bad input, a singular
system, a missing fixed point, a gradient with no direction — and nothing else (a bug in refsam or in a
user model surfaces as its own exception). Each subclass is also a ``ValueError``, ``LinAlgError``,
``FloatingPointError`` or ``RuntimeError``, so code written against 0.1's standard exceptions keeps
working. Messages name the argument or file and what was expected.
"""

from __future__ import annotations

import numpy as np

__all__ = ["InvalidInputError", "RefsamError", "SingularSystemError"]


class RefsamError(Exception):
    """Base of every exception refsam raises on purpose."""


class InvalidInputError(RefsamError, ValueError):
    """An argument, array or file that refsam cannot use as given; the message names it."""


class SingularSystemError(RefsamError, np.linalg.LinAlgError):
    """A linear system that is singular relative to its own scale, so its solution is undefined."""
