"""Learning-rate schedules as the per-step arrays an optimizer's ``lr`` takes, with torch's semantics.

Each helper returns η_0 … η_{T−1} for a run of T = ``steps`` steps, as the matching
``torch.optim.lr_scheduler`` produces them when ``scheduler.step()`` is called once after every optimizer
step (t counts optimizer steps from 0):

    step_lr                  η_t = η γ^⌊t / step_size⌋                            (StepLR)
    cosine_annealing_lr      η_t = η_min + (η − η_min)(1 + cos(π t / T_max)) / 2  (CosineAnnealingLR)
    linear_lr                η_t = η (s + (e − s) min(t, N)/N)                     (LinearLR)
    linear_warmup_cosine_lr  linear_lr from s to 1 over W steps, then cosine_annealing_lr over the
                             remaining T − W steps                                 (SequentialLR of the two)

(CosineAnnealingLR's recursive form equals this closed form up to rounding.) Use as
``refsam.SGD(cosine_annealing_lr(0.1, T), momentum=0.9)``; the run records the array it used.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidInputError
from ..validation import check_nonnegative, check_positive, check_positive_int

__all__ = ["cosine_annealing_lr", "linear_lr", "linear_warmup_cosine_lr", "step_lr"]

Array = NDArray[np.float64]


def _steps(steps: object) -> NDArray[np.float64]:
    return np.arange(check_positive_int("steps", steps), dtype=np.float64)


def step_lr(lr: float, steps: int, step_size: int, gamma: float = 0.1) -> Array:
    """η γ^⌊t/step_size⌋ for t = 0 … T−1 (``torch.optim.lr_scheduler.StepLR``)."""
    lr = check_positive("lr", lr)
    size = check_positive_int("step_size", step_size)
    gamma = check_positive("gamma", gamma)
    return lr * gamma ** np.floor(_steps(steps) / size)


def cosine_annealing_lr(lr: float, steps: int, T_max: int | None = None, eta_min: float = 0.0) -> Array:
    """η_min + (η − η_min)(1 + cos(π t/T_max))/2 (``CosineAnnealingLR``; T_max defaults to T). A rate of
    exactly 0 (η_min = 0 at t = T_max) is refused by the optimizers: pick T_max > T − 1 or η_min > 0."""
    lr = check_positive("lr", lr)
    t = _steps(steps)
    period = len(t) if T_max is None else check_positive_int("T_max", T_max)
    eta_min = check_nonnegative("eta_min", eta_min)
    if eta_min >= lr:
        raise InvalidInputError(f"`eta_min` must be below `lr` ({lr}), got {eta_min}")
    return eta_min + (lr - eta_min) * (1.0 + np.cos(np.pi * t / period)) / 2.0


def linear_lr(lr: float, steps: int, start_factor: float = 1.0 / 3.0, end_factor: float = 1.0,
              total_iters: int = 5) -> Array:
    """η (s + (e − s) min(t, N)/N) (``LinearLR(start_factor=s, end_factor=e, total_iters=N)``)."""
    lr = check_positive("lr", lr)
    start, end = check_positive("start_factor", start_factor), check_positive("end_factor", end_factor)
    for name, factor in (("start_factor", start), ("end_factor", end)):
        if factor > 1.0:  # torch's LinearLR refuses it too
            raise InvalidInputError(f"`{name}` must lie in (0, 1] (as in torch's LinearLR), got {factor}")
    n = check_positive_int("total_iters", total_iters)
    return lr * (start + (end - start) * np.minimum(_steps(steps), n) / n)


def linear_warmup_cosine_lr(lr: float, steps: int, warmup_steps: int, start_factor: float = 0.01,
                            eta_min: float = 0.0) -> Array:
    """Linear warm-up from η·s to η over W = ``warmup_steps`` steps, then cosine annealing to η_min over the
    remaining T − W steps (torch's ``SequentialLR([LinearLR(s, 1, W), CosineAnnealingLR(T − W, η_min)],
    milestones=[W])``)."""
    total = check_positive_int("steps", steps)
    warmup = check_positive_int("warmup_steps", warmup_steps)
    if warmup >= total:
        raise InvalidInputError(f"`warmup_steps` must be below `steps` ({total}), got {warmup}")
    head = linear_lr(lr, warmup, start_factor, 1.0, warmup)
    tail = cosine_annealing_lr(lr, total - warmup, total - warmup, eta_min)
    return np.concatenate([head, tail])
