"""Training: base optimizers as objects (:mod:`.optimizers`), one SAM step (:mod:`.step`), runs over a batch
schedule (:mod:`.run`) and their record (:mod:`.trajectory`); presets of the public implementations."""

from .optimizers import OPTIMIZERS, SGD, Optimizer, optimizer_from_config
from .presets import PRESETS, Preset, preset
from .run import (
    check_optimizer,
    check_problem_sam,
    check_trajectory,
    make_batches,
    replay,
    replay_final,
    train,
)
from .step import Perturbation, StepTerms, perturbations, residual, sam_gradient, sharpness_chunks
from .trajectory import TRAJECTORY_FORMAT_VERSION, Trajectory

__all__ = [
    "OPTIMIZERS",
    "PRESETS",
    "SGD",
    "TRAJECTORY_FORMAT_VERSION",
    "Optimizer",
    "Perturbation",
    "Preset",
    "StepTerms",
    "Trajectory",
    "check_optimizer",
    "check_problem_sam",
    "check_trajectory",
    "make_batches",
    "optimizer_from_config",
    "perturbations",
    "preset",
    "replay",
    "replay_final",
    "residual",
    "sam_gradient",
    "sharpness_chunks",
    "train",
]
