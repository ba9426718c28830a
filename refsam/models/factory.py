"""The one model factory: a model from its name (CLI, demo, reference cases) or from its spec (files)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInputError
from .base import Model
from .linear import LogisticRegression, SoftmaxRegression
from .mlp import MLP

__all__ = ["MODEL_NAMES", "build_model", "model_from_spec"]

MODEL_NAMES = ("logistic", "softmax", "mlp")


def build_model(name: str, n_features: int, n_classes: int = 2, hidden: int | tuple[int, ...] = 8,
                activation: str = "tanh", label_smoothing: float = 0.0) -> Model:
    """The built-in model ``name`` for data with ``n_features`` columns and ``n_classes`` classes.

    ``hidden`` is the MLP's hidden width (or a tuple of widths); ignored by the linear models.
    """
    if name == "logistic":
        return LogisticRegression(label_smoothing)
    if name == "softmax":
        return SoftmaxRegression(n_classes, label_smoothing)
    if name == "mlp":
        widths = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        return MLP((n_features, *widths, n_classes), activation=activation, label_smoothing=label_smoothing)
    raise InvalidInputError(f"`model` must be one of {list(MODEL_NAMES)}, got {name!r}")


def model_from_spec(spec: Mapping[str, Any]) -> Model:
    """Rebuild a model from `Model.spec()` (used by saved trajectories and reference cases)."""
    if not isinstance(spec, Mapping):
        raise InvalidInputError(
            f"`spec` must be a mapping like Model.spec() returns (e.g. {{'name': 'logistic'}}), "
            f"got {type(spec).__name__}")
    name = spec.get("name")
    smoothing = spec.get("label_smoothing", 0.0)
    if name == "logistic":
        return LogisticRegression(smoothing)
    needs = {"softmax": "n_classes", "mlp": "sizes"}.get(str(name))
    if needs is not None and needs not in spec:
        raise InvalidInputError(f"model spec for {name!r} lacks the key {needs!r}")
    if name == "softmax":
        return SoftmaxRegression(spec["n_classes"], smoothing)
    if name == "mlp":
        return MLP(spec["sizes"], activation=spec.get("activation", "tanh"), label_smoothing=smoothing)
    raise InvalidInputError(f"model spec `name` must be one of {sorted(MODEL_NAMES)}, got {name!r}")
