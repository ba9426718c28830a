"""Banks from a recipe: rebuild a problem and its target from a few settings, and grade every method on it.

Conventions
-----------
* A `BankRecipe` names the data (a dataset of `refsam.data.load_dataset()`, split 80/20 into
  training points and queries, standardised), the model, the rule and the training procedure (SGD with
  learning rate ``lr`` and weight decay ``weight_decay``, ``refsam.SGD(lr, weight_decay=λ)``; the loss
  has no L2 term), and
  the target: ``"root"`` (a full-batch run refined to its SAM fixed point) or ``"run"`` (the recorded
  run itself, full batch or minibatch). ``refsam bank`` stores it in the bank's metadata, so ``refsam
  lds`` can rebuild the problem, check it against the bank's fingerprint, and compute the exact
  influence on the same bank.
* Scores of a method for a bank's output (`method_scores()`): the methods differentiate test losses;
  for the margin of a binary model, f = m and ℓ = log(1 + e^{−m}), so I(m) = −I(ℓ)·(1 + e^{m}) at the
  base point (the chain rule through a strictly decreasing map; per query a negative factor, so the
  margin bank's LDS equals the loss bank's). Other outputs have no exact scores here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidInputError
from ..ground_truth.bank import CounterfactualBank, model_outputs
from ..influence import FixedPoint
from ..kit.lds import LDSResult, lds
from ..models import build_model
from ..objective import Problem
from ..sam import SAM
from ..training import SGD, Trajectory
from ..validation import check_progress
from .demo import prepare_data
from .fitting import Fit, fit, influence

__all__ = ["TARGETS", "BankRecipe", "build_target", "exact_method", "method_lds", "method_scores"]

Array = NDArray[np.float64]
TARGETS = ("root", "run")


@dataclass(frozen=True)
class BankRecipe:
    """The settings that rebuild a bank's problem and target (module docstring); JSON via ``asdict``."""

    dataset: str = "synthetic"
    n: int | None = None  # rows used (None: 250 for the synthetic sets, all otherwise)
    pca: int | None = None  # principal components kept (None: the raw features)
    model: str = "logistic"
    hidden: int = 8  # MLP hidden width
    rule: str = "sam"
    rho: float = 0.05
    weight_decay: float = 1e-2  # λ, the SGD's weight decay (refsam.SGD(lr, weight_decay=λ))
    lr: float = 0.5
    steps: int = 300
    batch_size: int | None = None  # None: full batch
    seed: int = 0
    target: str = "root"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> BankRecipe:
        if not isinstance(data, dict):
            raise InvalidInputError(f"a bank recipe must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise InvalidInputError(f"a bank recipe has unknown keys {sorted(unknown)}")
        return cls(**data)


def build_target(recipe: BankRecipe,
                 progress: bool | None = None) -> tuple[Fit, FixedPoint | Trajectory, Array, Any]:
    """(fit, target, X_test, y_test): the trained model, its root or run, and the queries."""
    progress = check_progress(progress)
    if recipe.target not in TARGETS:
        raise InvalidInputError(f"the target must be one of {list(TARGETS)}, got {recipe.target!r}")
    if recipe.target == "root" and recipe.batch_size is not None:
        raise InvalidInputError("a root target needs a full-batch run: drop the batch size, or use the run "
                                "target")
    train, queries = prepare_data(recipe.dataset, recipe.n, recipe.model, 0.0, 0.2, recipe.seed, recipe.pca)
    model = build_model(recipe.model, train.p, train.n_classes, recipe.hidden)
    problem = Problem(model, train.X, train.y)
    optimizer = SGD(recipe.lr, weight_decay=recipe.weight_decay)
    fitted = fit(problem, SAM(recipe.rho, recipe.rule), optimizer, recipe.steps, batch_size=recipe.batch_size,
                 seed=recipe.seed, solve_root=recipe.target == "root", progress=progress)
    if recipe.target == "root":
        if not fitted.has_root or fitted.fixed_point is None:
            why = fitted.fixed_point_note or "the solver did not converge"
            raise InvalidInputError(f"no verified SAM root for this recipe ({why}): use the run target")
        return fitted, fitted.fixed_point, queries.X, queries.y
    return fitted, fitted.trajectory, queries.X, queries.y


def method_scores(fitted: Fit, method: str, X_test: Array, y_test: Any, output: str) -> Array | None:
    """The method's scores (n, m) for the bank's ``output``, refsam's sign; None where it has none
    (a margin of a model with more than two classes, or a user function)."""
    loss_scores = influence(fitted, method, X_test, y_test, progress=False)
    if output == "loss":
        return loss_scores
    if output == "margin" and fitted.problem.model.n_classes == 2:
        theta = fitted.theta_hat if method.startswith("closed_form") else fitted.theta_final
        margin = model_outputs(fitted.problem.model, theta, X_test, y_test, "margin")  # (m,)
        return -loss_scores * (1.0 + np.exp(margin))[None, :]  # I(m) = −I(ℓ)(1 + e^m)
    return None


def method_lds(fitted: Fit, bank: CounterfactualBank, methods: tuple[str, ...], X_test: Array,
               y_test: Any) -> dict[str, LDSResult]:
    """The LDS of each of ``methods`` (those that apply to the fit and the bank's output) on ``bank``."""
    out = {}
    for method in methods:
        if method not in fitted.available_methods():
            continue
        scores = method_scores(fitted, method, X_test, y_test, bank.meta["output"])
        if scores is not None:
            out[method] = lds(scores, bank)
    return out


def exact_method(target: FixedPoint | Trajectory) -> str:
    """The exact method of a target: the closed form at a root, the trajectory adjoint for a run."""
    return "closed_form" if isinstance(target, FixedPoint) else "trajectory"
