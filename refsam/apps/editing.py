"""Model editing: find a few training points whose removal changes one test prediction, then check it.

Conventions
-----------
* The prediction of test point x is argmax_c z_c(x; θ). To make class t win, refsam follows its margin
  m(θ) = z_t(x; θ) − z_r(x; θ), r the strongest other class at the trained weights (held fixed), so
  t beats r when m > 0 (a binary logistic model has one logit z: m = (2t − 1) z). With more than two
  classes a third class can still win: `EditResult.succeeded` asks whether t is the prediction.
* Influence on the margin: I_j(m) = ∇m(θ_T)ᵀ dθ/dw_j (the closed form's dθ̂/dw_j at the root the run
  converged to, or the run's own dθ_T/dw_j); the prediction and margin edited are the trained model's.
  Removing a set S changes m by about −Σ_{j∈S} I_j(m), so the smallest set predicted to flip the
  prediction takes the most negative I_j(m) first, until m − Σ I_j(m) > 0.
* Every edit is checked by retraining without S with the same procedure (θ_0, batches, learning rates):
  the actual margin and prediction beside the predicted ones, and the collateral change on the rest of
  the test set (predictions changed, accuracy before and after).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import autograd
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError
from ..influence import parameter_influence, trajectory_parameter_influence
from ..influence.methods import CLOSED_FORM
from ..validation import check_positive_int
from .fitting import Fit, check_fit, resolve_method
from .removal import accuracy, retrain_without

__all__ = ["EditResult", "edit_prediction", "first_misclassified", "margin_gradient"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class EditResult:
    """One edit, predicted and then checked by retraining (module docstring)."""

    method: str
    index: int  # the test point edited
    target: int  # the class it should be predicted as
    rival: int  # the class the margin is measured against
    removed: NDArray[np.int64]  # the training points removed (sorted)
    margin_before: float  # m at the trained weights (< 0: the target does not win)
    predicted_margin: float  # m − Σ_{j∈S} I_j(m)
    actual_margin: float  # m after retraining without S
    predicted_label: int  # the prediction after the edit, by retraining
    collateral_changed: float  # fraction of the other test points whose prediction changed
    accuracy_before: float  # test accuracy (all test points) before and after
    accuracy_after: float

    @property
    def succeeded(self) -> bool:
        """The retrained model predicts the target."""
        return self.predicted_label == self.target


def _logits(model: Any, theta: Any, x: Array) -> Any:
    """The K logits at one point (autograd-traceable); a binary logistic model's one logit z as ±z/2."""
    z = model.logits(theta, x[None, :])
    return z[0] if len(z.shape) == 2 else autograd.numpy.stack([-0.5 * z[0], 0.5 * z[0]])


def margin_gradient(fit_: Fit, theta: ArrayLike, x: ArrayLike, target: int,
                    rival: int) -> tuple[float, Array]:
    """(m, ∇m) at θ for m = z_target − z_rival (a binary logistic model: z_1 − z_0 = its one logit)."""
    model = fit_.problem.model

    def m(t: Any) -> Any:
        z = _logits(model, t, np.asarray(x, dtype=np.float64))
        return z[target] - z[rival]

    theta = np.asarray(theta, dtype=np.float64)
    return float(m(theta)), np.asarray(autograd.grad(m)(theta), dtype=np.float64)


def first_misclassified(fit_: Fit, X_test: ArrayLike, y_test: ArrayLike) -> int | None:
    """The index of the first test point the fitted model misclassifies (None: every one is right),
    the default point to edit."""
    check_fit(fit_)
    X_test, y_test = fit_.problem.model.check_data(X_test, y_test, "X_test", "y_test")
    predicted = np.argmax(fit_.problem.model.predict_proba(fit_.theta_final, X_test), axis=1)
    wrong = np.flatnonzero(predicted != y_test)
    return int(wrong[0]) if wrong.size else None


def edit_prediction(fit_: Fit, X_test: ArrayLike, y_test: ArrayLike, index: int, target: int | None = None,
                    method: str = "closed_form", max_remove: int | None = None) -> EditResult:
    """Change the prediction of test point ``index`` to ``target`` by removing the fewest training points
    predicted to do it, then retrain and report (module docstring).

    ``target`` defaults to the true label when the point is misclassified, else the runner-up class.
    ``max_remove`` (default 10% of the training set) bounds the set; if even that is not predicted to
    flip the prediction, the whole budget is removed and the result says whether it flipped.
    """
    check_fit(fit_)
    problem = fit_.problem
    X_test, y_test = problem.model.check_data(X_test, y_test, "X_test", "y_test")
    if not 0 <= int(index) < X_test.shape[0]:
        raise InvalidInputError(f"`index` must lie in 0..{X_test.shape[0] - 1}, got {index}")
    index = int(index)
    info = resolve_method(method)
    if info.family == CLOSED_FORM and not fit_.has_root:
        raise InvalidInputError(f"method {info.name!r} needs a verified SAM fixed point: "
                                f"{fit_.fixed_point_note}")
    max_remove = check_positive_int("max_remove", max_remove if max_remove is not None
                                    else max(1, problem.n // 10))
    theta = fit_.theta_final  # the trained model: its prediction and margin are what is edited
    proba = problem.model.predict_proba(theta, X_test[index:index + 1])[0]
    predicted = int(np.argmax(proba))
    K = proba.size
    if target is None:
        target = int(y_test[index]) if predicted != int(y_test[index]) else int(np.argsort(-proba)[1])
    if not 0 <= int(target) < K or int(target) == predicted:
        raise InvalidInputError(f"`target` must be a class in 0..{K - 1} other than the current prediction "
                                f"{predicted}, got {target}")
    target = int(target)
    rival = predicted
    m0, grad = margin_gradient(fit_, theta, X_test[index], target, rival)
    if info.family == CLOSED_FORM:
        assert fit_.fixed_point is not None  # has_root, checked above
        d_theta = parameter_influence(problem, fit_.sam, fit_.fixed_point, variant=info.call)  # dθ̂/dw
    else:
        if info.call not in ("adjoint", "forward"):
            raise InvalidInputError(f"`method` must be an exact one (closed_form, closed_form_frozen, "
                                    f"closed_form_erm, trajectory), got {info.name!r}")
        d_theta = trajectory_parameter_influence(problem, fit_.trajectory, "adjoint", progress=False)
    I_m = d_theta @ grad  # I_j(m), (n,)
    order = np.argsort(I_m, kind="stable")  # most negative first: removing them raises m most
    gains = np.cumsum(-I_m[order])
    reach = np.nonzero(m0 + gains[:max_remove] > 0)[0]
    k = int(reach[0]) + 1 if reach.size else max_remove
    removed = np.sort(order[:k])
    predicted_margin = m0 + float(gains[k - 1])
    theta_new = retrain_without(fit_, removed)
    actual_margin = margin_gradient(fit_, theta_new, X_test[index], target, rival)[0]
    before = np.argmax(problem.model.predict_proba(fit_.theta_final, X_test), axis=1)
    after = np.argmax(problem.model.predict_proba(theta_new, X_test), axis=1)
    others = np.arange(X_test.shape[0]) != index
    collateral = float(np.mean(before[others] != after[others])) if others.any() else 0.0
    return EditResult(info.name, index, target, rival, removed, m0, predicted_margin, actual_margin,
                      int(after[index]), collateral, accuracy(problem, fit_.theta_final, X_test, y_test),
                      accuracy(problem, theta_new, X_test, y_test))
