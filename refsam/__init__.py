"""refsam — a NumPy/SciPy/autograd reference implementation of data attribution for
Sharpness-Aware Minimization (SAM).

Influence convention (docs/contract.md): I_j(f) = ∂ f(θ_final(w)) / ∂ w_j at w = 1. Removing training
point j is Δw_j = −1, so −I_j(f) is the first-order prediction of the change of f when j is removed.

The package follows the data, each layer importing only the layers above it in this list:
``data`` → ``models`` → ``objective``, ``sam`` → ``training`` → ``influence`` → ``ground_truth`` →
``kit`` (the oracle kit) → ``apps`` → ``cli``; ``validation`` and ``tolerances`` serve every layer.
"""

# Grouped by layer, in the order of the data flow (not alphabetically):
# isort: off
# data
from .data import make_gaussian_classification

# exceptions: one base class, each subclass also the standard type
from .errors import DivergenceError, InvalidInputError, NonFiniteResultError, RefsamError, SingularSystemError

# models
from .models import MLP, LogisticRegression, Model, SoftmaxRegression, model_from_spec

# objective and SAM rule
from .objective import Problem
from .sam import SAM, ZeroGradientError

# training
from .training import Trajectory, replay, train

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

# influence: the recorded run. The 0.1 module path refsam.trajectory_influence is loaded first, so that the
# function of the same name, bound next, stays refsam.trajectory_influence after any later import of it.
from . import trajectory_influence as trajectory_influence_module  # noqa: F401
from .influence import trajectory_influence, trajectory_parameter_influence
from .influence import trajectory_hyperparameter_sensitivity

# ground truth
from .ground_truth import finite_difference_influence, finite_difference_replay, leave_one_out
from .ground_truth import leave_one_out_replay

# ground truth on random subsets: counterfactual banks, and grading scores on them (LDS, group effects)
from .ground_truth.bank import CounterfactualBank, counterfactual_bank, load_bank, merge_bank_shards
from .kit.lds import group_effects, lds
from .kit.peers import export_bank, import_bank

from .version import __version__ as __version__
# isort: on

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
    "Problem",
    "SoftmaxRegression",
    "Trajectory",
    "ZeroGradientError",
    "make_gaussian_classification",
    "model_from_spec",
    "replay",
    "train",
    "trajectory_hyperparameter_sensitivity",
    "trajectory_influence",
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
