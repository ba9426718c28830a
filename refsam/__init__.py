"""refsam — a NumPy/SciPy/autograd reference implementation of data attribution for
Sharpness-Aware Minimization (SAM).

Influence convention (SPEC §1): I_j(f) = ∂ f(θ_final(w)) / ∂ w_j at w = 1. Removing training point j
is Δw_j = −1, so −I_j(f) is the first-order prediction of the change of f when j is removed.
"""

from .closed_form import (
    HyperparameterSensitivity,
    UnverifiedRootError,
    UnverifiedRootWarning,
    hessian_influence,
    hyperparameter_sensitivity,
    parameter_influence,
    self_influence,
)
from .counterfactual import finite_difference_influence as finite_difference_replay
from .counterfactual import leave_one_out_replay
from .datasets import make_gaussian_classification
from .fixed_point import (
    FixedPoint,
    FixedPointError,
    NoFixedPointError,
    fixed_point_diagnostics,
    residual_jacobian,
    residual_map,
    residual_weight_jacobian,
    solve_fixed_point,
)
from .models import MLP, LogisticRegression, Model, SoftmaxRegression, model_from_spec
from .objective import Problem
from .resolve import finite_difference_influence, leave_one_out
from .sam import SAM, ZeroGradientError
from .training import Trajectory, replay, train
from .trajectory_influence import trajectory_influence, trajectory_parameter_influence

__version__ = "0.1.0"

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
