"""Influence: the method table, the fixed point (residual, diagnostics, solvers), the closed form at a
root, and the exact and approximate derivatives of a recorded run."""

from .closed_form import (
    HyperparameterSensitivity,
    UnverifiedRootError,
    UnverifiedRootWarning,
    hessian_influence,
    hyperparameter_sensitivity,
    parameter_influence,
    self_influence,
)
from .fixed_point import (
    FixedPoint,
    FixedPointError,
    NoFixedPointError,
    fixed_point_diagnostics,
    no_root_reason,
    solve_fixed_point,
    spectral_radius,
)
from .linearisation import (
    Linearisation,
    linearise,
    residual_jacobian,
    residual_map,
    residual_weight_jacobian,
    weight_jacobian,
)
from .methods import METHOD_TABLE, MethodInfo, method_info
from .operators import CURVATURES, SystemOperators, system_operators
from .projection import trak_influence
from .solvers import SOLVERS, SolveInfo, SolverConvergenceWarning
from .trajectory import (
    trajectory_hyperparameter_sensitivity,
    trajectory_influence,
    trajectory_parameter_influence,
    trajectory_self_influence,
)

__all__ = [
    "CURVATURES",
    "METHOD_TABLE",
    "SOLVERS",
    "SolveInfo",
    "SolverConvergenceWarning",
    "SystemOperators",
    "FixedPoint",
    "FixedPointError",
    "HyperparameterSensitivity",
    "Linearisation",
    "MethodInfo",
    "NoFixedPointError",
    "UnverifiedRootError",
    "UnverifiedRootWarning",
    "fixed_point_diagnostics",
    "hessian_influence",
    "hyperparameter_sensitivity",
    "linearise",
    "method_info",
    "no_root_reason",
    "parameter_influence",
    "residual_jacobian",
    "residual_map",
    "residual_weight_jacobian",
    "self_influence",
    "solve_fixed_point",
    "spectral_radius",
    "system_operators",
    "trak_influence",
    "trajectory_hyperparameter_sensitivity",
    "trajectory_influence",
    "trajectory_parameter_influence",
    "trajectory_self_influence",
    "weight_jacobian",
]
