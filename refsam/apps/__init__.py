"""Applications of influence, each checked against retraining: detection of mislabeled data
(:mod:`.detection`), removal (:mod:`.removal`), explanation (:mod:`.explain`), every method beside its
ground truth (:mod:`.agreement`), on a fitted model (:mod:`.fitting`); the demo (:mod:`.demo`) and
optional figures (:mod:`.plotting`)."""

from ..tolerances import rel_err
from .agreement import H_RUN, Agreement, GroundTruth, choose_subset, compare_methods, ground_truth
from .detection import (
    BASELINES,
    DETECTION_FRACTIONS,
    DetectionResult,
    auroc,
    detect_mislabeled,
    detection_curve,
    detection_metrics,
    detection_scores,
    recall_at_fraction,
)
from .explain import Explanation, explain_prediction
from .fitting import (
    CLOSED_FORM_METHODS,
    METHODS,
    TRAJECTORY_METHODS,
    Fit,
    fit,
    influence,
    resolve_method,
    self_influence,
)
from .removal import RemovalResult, mean_loss, remove_harmful, retrain_without

__all__ = [
    "BASELINES",
    "CLOSED_FORM_METHODS",
    "DETECTION_FRACTIONS",
    "H_RUN",
    "METHODS",
    "TRAJECTORY_METHODS",
    "Agreement",
    "DetectionResult",
    "Explanation",
    "Fit",
    "GroundTruth",
    "RemovalResult",
    "auroc",
    "choose_subset",
    "compare_methods",
    "detect_mislabeled",
    "detection_curve",
    "detection_metrics",
    "detection_scores",
    "explain_prediction",
    "fit",
    "ground_truth",
    "influence",
    "mean_loss",
    "recall_at_fraction",
    "rel_err",
    "remove_harmful",
    "resolve_method",
    "retrain_without",
    "self_influence",
]
