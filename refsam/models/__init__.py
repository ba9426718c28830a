"""Models: per-sample losses on one flat float64 θ, each with the one object that owns its derivatives.

* `Model` — the protocol and the autograd defaults (any user model: define ``losses``,
  ``n_params``, ``n_classes``); `BatchDerivatives` — what ``model.at(theta, X, y, c)`` returns.
* `LogisticRegression`, `SoftmaxRegression` — hand-written gradients and Hessians.
* `MLP` — hand-written backpropagation, the R-operator and the layer-wise exact Hessian.
* `build_model()`, `model_from_spec()` — the one factory.
"""

from .base import AutogradDerivatives, BatchDerivatives, LayerFactors, Model, grad_norm_sum_screen
from .factory import MODEL_NAMES, build_model, model_from_spec
from .linear import LogisticDerivatives, LogisticRegression, SoftmaxDerivatives, SoftmaxRegression
from .mlp import ACTIVATIONS, MLP, MLPDerivatives

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "MODEL_NAMES",
    "AutogradDerivatives",
    "BatchDerivatives",
    "LayerFactors",
    "LogisticDerivatives",
    "LogisticRegression",
    "MLPDerivatives",
    "Model",
    "SoftmaxDerivatives",
    "SoftmaxRegression",
    "build_model",
    "grad_norm_sum_screen",
    "model_from_spec",
]
