"""refsam — a NumPy/SciPy/autograd reference implementation of data attribution for
Sharpness-Aware Minimization (SAM).

Influence convention (docs/contract.md): I_j(f) = ∂ f(θ_final(w)) / ∂ w_j at w = 1. Removing training
point j is Δw_j = −1, so −I_j(f) is the first-order prediction of the change of f when j is removed.

The package follows the data, each layer importing only the layers above it in this list:
``data`` → ``models`` → ``objective``, ``sam`` → ``training`` → ``influence`` → ``ground_truth`` →
``kit`` (the oracle kit) → ``apps`` → ``cli``; ``validation`` and ``tolerances`` serve every layer.
"""

import importlib
from typing import TYPE_CHECKING, Any

# The exceptions and the version load at once (cheap); every other public name on first use (PEP 562),
# so that `import refsam.cli` — and `refsam --help` — loads no numerical code (no scipy.optimize, no
# autograd). Type checkers and readers see the names where they live:
# isort: off
from .errors import DivergenceError, InvalidInputError, NonFiniteResultError, RefsamError, SingularSystemError
from .version import __version__ as __version__
# isort: on

if TYPE_CHECKING:  # grouped by layer, in the order of the data flow (not alphabetically)
    # isort: off
    # data
    from .data import make_gaussian_classification

    # models
    from .models import MLP, LogisticRegression, Model, SoftmaxRegression, model_from_spec

    # objective and SAM rule
    from .objective import Problem
    from .sam import SAM, ZeroGradientError

    # training: the base optimizers, runs and their record
    from .training import SGD, Adam, AdamW, GradientClipping, Optimizer, Trajectory, replay, train
    from .training.trajectory import UnverifiedRunError

    # influence: the fixed point and the closed form at it
    from .influence import (
        FixedPoint,
        FixedPointError,
        HyperparameterSensitivity,
        NoFixedPointError,
        UnverifiedRootError,
        UnverifiedRootWarning,
        fixed_point_diagnostics,
        hessian_influence,
        hyperparameter_sensitivity,
        parameter_influence,
        residual_jacobian,
        residual_map,
        residual_weight_jacobian,
        self_influence,
        solve_fixed_point,
    )

    # influence: matrix-free systems, their solvers and the scalable approximations
    from .influence import SolveInfo, SolverConvergenceWarning, system_operators, trak_influence

    # influence: the recorded run
    from .influence import trajectory_influence, trajectory_parameter_influence, trajectory_self_influence
    from .influence import trajectory_hyperparameter_sensitivity

    # ground truth
    from .ground_truth import finite_difference_influence, finite_difference_replay, leave_one_out
    from .ground_truth import leave_one_out_replay

    # ground truth on random subsets: counterfactual banks, and grading scores on them (LDS, group effects)
    from .ground_truth.bank import CounterfactualBank, counterfactual_bank, load_bank, merge_bank_shards
    from .kit.lds import group_effects, lds
    from .kit.peers import export_bank, import_bank
    # isort: on

_HOMES: dict[str, tuple[str, ...]] = {  # module → the public names it defines, in the order of the data flow
    ".data": ("make_gaussian_classification",),
    ".models": ("MLP", "LogisticRegression", "Model", "SoftmaxRegression", "model_from_spec"),
    ".objective": ("Problem",),
    ".sam": ("SAM", "ZeroGradientError"),
    ".training": ("SGD", "Adam", "AdamW", "GradientClipping", "Optimizer", "Trajectory", "replay", "train"),
    ".training.trajectory": ("UnverifiedRunError",),
    ".influence": (
        "FixedPoint", "FixedPointError", "HyperparameterSensitivity", "NoFixedPointError",
        "UnverifiedRootError", "UnverifiedRootWarning", "fixed_point_diagnostics", "hessian_influence",
        "hyperparameter_sensitivity", "parameter_influence", "residual_jacobian", "residual_map",
        "residual_weight_jacobian", "self_influence", "solve_fixed_point", "SolveInfo",
        "SolverConvergenceWarning", "system_operators", "trak_influence", "trajectory_influence",
        "trajectory_parameter_influence", "trajectory_self_influence",
        "trajectory_hyperparameter_sensitivity"),
    ".ground_truth": ("finite_difference_influence", "finite_difference_replay", "leave_one_out",
                      "leave_one_out_replay"),
    ".ground_truth.bank": ("CounterfactualBank", "counterfactual_bank", "load_bank", "merge_bank_shards"),
    ".kit.lds": ("group_effects", "lds"),
    ".kit.peers": ("export_bank", "import_bank"),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use and then bound here."""
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'refsam' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))


__all__ = [
    "InvalidInputError",
    "DivergenceError",
    "NonFiniteResultError",
    "RefsamError",
    "SingularSystemError",
    "FixedPoint",
    "FixedPointError",
    "HyperparameterSensitivity",
    "NoFixedPointError",
    "UnverifiedRootError",
    "UnverifiedRootWarning",
    "fixed_point_diagnostics",
    "finite_difference_influence",
    "hessian_influence",
    "SolveInfo",
    "SolverConvergenceWarning",
    "system_operators",
    "trak_influence",
    "hyperparameter_sensitivity",
    "leave_one_out",
    "parameter_influence",
    "residual_jacobian",
    "residual_map",
    "residual_weight_jacobian",
    "self_influence",
    "solve_fixed_point",
    "MLP",
    "SAM",
    "LogisticRegression",
    "Model",
    "Optimizer",
    "Problem",
    "SGD",
    "Adam",
    "AdamW",
    "GradientClipping",
    "SoftmaxRegression",
    "Trajectory",
    "UnverifiedRunError",
    "ZeroGradientError",
    "make_gaussian_classification",
    "model_from_spec",
    "replay",
    "train",
    "trajectory_hyperparameter_sensitivity",
    "trajectory_influence",
    "trajectory_self_influence",
    "trajectory_parameter_influence",
    "finite_difference_replay",
    "leave_one_out_replay",
    "CounterfactualBank",
    "counterfactual_bank",
    "load_bank",
    "merge_bank_shards",
    "lds",
    "group_effects",
    "export_bank",
    "import_bank",
]
