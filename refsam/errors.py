"""refsam's exceptions: one base class, each subclass also the standard type a caller expects.

``except refsam.RefsamError`` catches every failure refsam raises on purpose — bad input, a singular
system, a missing fixed point, a gradient with no direction — and nothing else (a bug in refsam or in a
user model surfaces as its own exception). Each subclass is also a ``ValueError``, ``LinAlgError``,
``FloatingPointError`` or ``RuntimeError``, so code written against 0.1's standard exceptions keeps
working. Messages name the argument or file and what was expected.

The hierarchy (importable from ``refsam`` unless a module is named):

* ``InvalidInputError`` (ValueError): an argument, array or file refsam cannot use as given.
  ``UnverifiedRootError``: θ̂ given to the closed form is not a root. ``CaseFileError``
  (``refsam.kit.files``): a reference-case directory, manifest or score file that is damaged or foreign.
* ``SingularSystemError`` (LinAlgError): ∂G/∂θ singular relative to its own scale.
* ``ZeroGradientError`` (FloatingPointError, ``refsam.sam``): a SAM/ASAM step at a gradient that is
  exactly zero, where ε has no direction.
* ``DivergenceError`` (FloatingPointError): a training run whose iterate left float64's range.
* ``NonFiniteResultError`` (FloatingPointError): a computed influence with NaN or inf entries (an
  intermediate left float64's range, e.g. weights so small that the gradients are subnormal): refsam
  raises rather than return it.
* ``FixedPointError`` (RuntimeError, ``refsam.influence.fixed_point``): the root solver's budget ran
  out; ``NoFixedPointError``: G provably has no root for this problem and rule.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DivergenceError", "InvalidInputError", "NonFiniteResultError", "RefsamError",
           "SingularSystemError", "check_finite_result"]


class RefsamError(Exception):
    """Base of every exception refsam raises on purpose."""


class InvalidInputError(RefsamError, ValueError):
    """An argument, array or file that refsam cannot use as given; the message names it."""


class SingularSystemError(RefsamError, np.linalg.LinAlgError):
    """A linear system that is singular relative to its own scale, so its solution is undefined."""


class DivergenceError(RefsamError, FloatingPointError):
    """A training run whose parameters left float64's range (non-finite θ_t); the message names the step
    and the arguments to lower."""


class NonFiniteResultError(RefsamError, FloatingPointError):
    """A result that came out NaN or inf although its inputs were finite; the message names the method
    and the likely cause."""


def check_finite_result(what: str, result: np.ndarray) -> np.ndarray:
    """``result`` if every entry is finite, else NonFiniteResultError naming ``what``."""
    if not np.all(np.isfinite(result)):
        bad = int(np.size(result) - np.count_nonzero(np.isfinite(result)))
        raise NonFiniteResultError(
            f"{what} has {bad} non-finite entries: an intermediate left float64's range (gradients or "
            f"weights near the subnormal range 1e-308, or above 1e154 where squares overflow); rescale "
            f"the sample weights, the data or the learning rate")
    return result
