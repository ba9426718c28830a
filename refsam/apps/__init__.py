"""Applications of influence, each checked against retraining: detection of mislabeled data
(`detection`), removal (`removal`), explanation (`explain`), every method beside its
ground truth (`agreement`), on a fitted model (`fitting`); the demo (`demo`) and
optional figures (`plotting`)."""

from ..tolerances import rel_err
from .agreement import H_RUN, Agreement, GroundTruth, choose_subset, compare_methods, ground_truth
from .detection import (
    BASELINES,
    DETECTION_FRACTIONS,
    PROTOCOL_FRACTIONS,
    DetectionResult,
    ProtocolResult,
    auroc,
    detect_mislabeled,
    detection_curve,
    detection_metrics,
    detection_protocols,
    detection_scores,
    recall_at_fraction,
    retrain_relabelled,
)
from .editing import EditResult, edit_prediction
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
from .removal import (
    RemovalCurve,
    RemovalResult,
    accuracy,
    mean_loss,
    removal_curves,
    remove_harmful,
    retrain_without,
)
from .tuning import TUNING_METHODS, GridResult, Trial, TuningResult, check_hypergradient, grid_search, tune

__all__ = [
    "BASELINES",
    "CLOSED_FORM_METHODS",
    "DETECTION_FRACTIONS",
    "H_RUN",
    "METHODS",
    "PROTOCOL_FRACTIONS",
    "TRAJECTORY_METHODS",
    "TUNING_METHODS",
    "Agreement",
    "DetectionResult",
    "EditResult",
    "Explanation",
    "Fit",
    "GridResult",
    "GroundTruth",
    "ProtocolResult",
    "RemovalCurve",
    "RemovalResult",
    "Trial",
    "TuningResult",
    "accuracy",
    "auroc",
    "check_hypergradient",
    "choose_subset",
    "compare_methods",
    "detect_mislabeled",
    "detection_curve",
    "detection_metrics",
    "detection_protocols",
    "detection_scores",
    "edit_prediction",
    "explain_prediction",
    "fit",
    "grid_search",
    "ground_truth",
    "influence",
    "mean_loss",
    "recall_at_fraction",
    "rel_err",
    "removal_curves",
    "remove_harmful",
    "resolve_method",
    "retrain_relabelled",
    "retrain_without",
    "self_influence",
    "tune",
]
