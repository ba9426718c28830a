"""Training: one SAM step (:mod:`.step`), runs over a batch schedule (:mod:`.run`) and their record
(:mod:`.trajectory`)."""

from .run import make_batches, replay, train
from .step import SGDMomentum, StepTerms, descent_direction, sam_step
from .trajectory import TRAJECTORY_FORMAT_VERSION, Trajectory

__all__ = [
    "TRAJECTORY_FORMAT_VERSION",
    "SGDMomentum",
    "StepTerms",
    "Trajectory",
    "descent_direction",
    "make_batches",
    "replay",
    "sam_step",
    "train",
]
