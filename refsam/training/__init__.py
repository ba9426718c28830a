"""Training: base optimizers as objects (`optimizers`), one SAM step (`step`), runs over a batch
schedule (`run`) and their record (`trajectory`); presets of the public implementations."""

from .clipping import CLIP_CONVENTIONS, GradientClipping
from .optimizers import OPTIMIZERS, SGD, Adam, AdamW, Optimizer, optimizer_from_config
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
from .schedules import cosine_annealing_lr, linear_lr, linear_warmup_cosine_lr, step_lr
from .step import (
    Perturbation,
    StepTerms,
    perturbations,
    residual,
    root_residual,
    root_scale,
    sam_gradient,
    sharpness_chunks,
)
from .trajectory import TRAJECTORY_FORMAT_VERSION, Trajectory

__all__ = [
    "CLIP_CONVENTIONS",
    "GradientClipping",
    "cosine_annealing_lr",
    "linear_lr",
    "linear_warmup_cosine_lr",
    "step_lr",
    "OPTIMIZERS",
    "PRESETS",
    "SGD",
    "Adam",
    "AdamW",
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
    "root_residual",
    "root_scale",
    "sam_gradient",
    "sharpness_chunks",
    "train",
]
