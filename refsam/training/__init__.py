"""Training: one SAM step (`step`), runs over a batch schedule (`run`) and their record
(`trajectory`)."""

from .presets import PRESETS, Preset, preset
from .run import make_batches, replay, replay_final, train
from .step import SGDMomentum, StepTerms, descent_direction, sam_step, sharpness_chunks
from .trajectory import TRAJECTORY_FORMAT_VERSION, Trajectory

__all__ = [
    "TRAJECTORY_FORMAT_VERSION",
    "PRESETS",
    "Preset",
    "SGDMomentum",
    "StepTerms",
    "Trajectory",
    "descent_direction",
    "make_batches",
    "preset",
    "replay",
    "replay_final",
    "sam_step",
    "sharpness_chunks",
    "train",
]
