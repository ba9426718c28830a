"""refsam — a NumPy/SciPy/autograd reference implementation of data attribution for
Sharpness-Aware Minimization (SAM).

Influence convention (docs/contract.md): I_j(f) = ∂ f(θ_final(w)) / ∂ w_j at w = 1. Removing training
point j is Δw_j = −1, so −I_j(f) is the first-order prediction of the change of f when j is removed.

The package follows the data, each layer importing only the layers above it in this list:
``data`` → ``models`` → ``objective``, ``sam`` → ``training`` → ``influence`` → ``ground_truth`` →
``kit`` (the oracle kit) → ``apps`` → ``cli``; ``validation`` and ``tolerances`` serve every layer.
"""

# data
from .data import make_gaussian_classification

# ground truth
from .ground_truth import (
    finite_difference_influence,
    finite_difference_replay,
    leave_one_out,
    leave_one_out_replay,
)

# influence: the fixed point and the closed form at it
# influence: the recorded run
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
    trajectory_influence,
    trajectory_parameter_influence,
)

# models
from .models import MLP, LogisticRegression, Model, SoftmaxRegression, model_from_spec

# objective and SAM rule
from .objective import Problem
from .sam import SAM, ZeroGradientError

# training
from .training import Trajectory, replay, train
from .version import __version__ as __version__

__all__ = [
    "FixedPoint",
    "FixedPointError",
    "HyperparameterSensitivity",
    "NoFixedPointError",
    "UnverifiedRootError",
    "UnverifiedRootWarning",
    "fixed_point_diagnostics",
    "finite_difference_influence",
    "hessian_influence",
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
    "trajectory_influence",
    "trajectory_parameter_influence",
    "finite_difference_replay",
    "leave_one_out_replay",
]
