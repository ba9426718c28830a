"""refsam — a NumPy/SciPy/autograd reference implementation of data attribution for
Sharpness-Aware Minimization (SAM).

Influence convention (SPEC §1): I_j(f) = ∂ f(θ_final(w)) / ∂ w_j at w = 1. Removing training point j
is Δw_j = −1, so −I_j(f) is the first-order prediction of the change of f when j is removed.
"""

from .datasets import make_gaussian_classification
from .models import MLP, LogisticRegression, Model, SoftmaxRegression, model_from_spec
from .objective import Problem
from .sam import SAM, ZeroGradientError
from .training import Trajectory, replay, train

__version__ = "0.1.0"

__all__ = [
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
]
