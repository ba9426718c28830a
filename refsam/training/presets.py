"""Named presets: the SAM rule and base optimizer of the public SAM implementations, step for step.

Each preset is refsam's parameters for what that code computes (its conventions, not its code):

``pytorch-sam`` — the widely used PyTorch SAM wrapper (``SAM(params, base_optimizer, rho, adaptive=False)``)
    first step: ε = ρ g / (‖g‖ + 1e-12), ‖g‖ the norm over every parameter tensor together;
    second step: the gradient at θ + ε, θ restored, then the base optimizer's step — ``torch.optim.SGD``
    with momentum (0.9 in its example) and ``weight_decay=λ``, so λθ enters at the unperturbed point
    and goes through the momentum buffer: ``refsam.SGD(lr, momentum, weight_decay=λ)``.
``pytorch-sam-adaptive`` — the same wrapper with ``adaptive=True``
    ε = ρ θ² g / (‖θ g‖ + 1e-12) on every coordinate, biases included: ASAM with T = |θ| (κ = 0).
``asam-official`` — the official ASAM code
    T = |θ| + η (η = 0.01) on weight matrices only (parameters named ``weight``), T = 1 on biases;
    ε = ρ T² g / (‖T g‖ + 1e-16); then SGD with momentum 0.9 and weight decay in the optimizer.
    The weights-only T needs the model's bias coordinates (``model.bias_mask``).

``pytorch-sam-adam``, ``pytorch-sam-adamw`` — the same wrapper around ``torch.optim.Adam`` / ``AdamW``
    (``base_optimizer=torch.optim.AdamW``): ε as ``pytorch-sam``, then Adam's step with its L2 λθ inside
    the moments (``refsam.Adam(lr, weight_decay=λ)``), or AdamW's decoupled decay (``refsam.AdamW``);
    torch's defaults betas = (0.9, 0.999), eps = 1e-8.
``optax-adamw-sam`` — ``optax.contrib.sam(optax.adamw(lr, weight_decay=λ), chain(normalize(), sgd(ρ)))``
    ε = ρ g/‖g‖ (``normalize`` divides by the global norm, no epsilon); the outer AdamW update is taken
    at the cached unperturbed parameters, so its decay acts on θ (optax adds −η λ θ to the update:
    torch's AdamW order); eps_root = 0 (optax's default). (``sync_period=2``: one adversarial step per
    outer step, so refsam's step t is optax's pair of calls 2t, 2t + 1.)

``jax-sam`` — the JAX/Flax SAM code of the original paper (google-research/sam, ``flax_training.py``)
    the loss carries ½λ Σ θ_i² over *every* parameter, biases and batch-norm scales included
    (``Problem(l2=λ)``; only with its flag ``--no_weight_decay_on_bn`` over the weight matrices alone:
    ``weights_only=True`` here); ε = ρ g/‖g‖ (``dual_vector``, no epsilon), g the gradient of that loss;
    m-sharpness: each device perturbs with the gradient of its own share of the batch and the devices'
    gradients at their own perturbed points are averaged (``m_sharpness`` = the per-device batch size);
    the averaged gradient is clipped to global norm 5.0 (``--gradient_clipping``, its default: g·c/‖g‖
    where ‖g‖ ≥ c, optax's convention); Flax's Momentum with ``nesterov=True``: buf = β buf + d (from
    buf = 0), step d + β buf — ``torch.optim.SGD``'s Nesterov.

The SAM variants (docs/variants.md says what each official code computes, with its lines):

``gsam`` — GSAM's official PyTorch code (juntang-zhuang/GSAM, ``example/train.py``)
    the adaptive perturbation ε = ρ_t θ² g/(‖θ g‖ + 1e-12) (ASAM, κ = 0), the direction g^p − α g_⊥
    (α = 0.4), torch.optim.SGD with momentum 0.9 and weight decay; ρ_t follows the learning rate,
    ρ_t = ρ_min + (ρ − ρ_min)(η_t − 0)/(max η − 0), except ρ_0, which the example's loop order computes
    from its lr scheduler's initial value 0 — ρ_0 = ρ_min at the step where η = max η.
``gnp`` — the gradient-norm penalty's official JAX code (zhaoyang-0204/gnp)
    L2 in the loss over every parameter, ε = r g/‖g‖ (no epsilon), the direction (1 − α) g/‖g‖ + α g^p
    (``norm_perturbations=True``, its default; α = 0.8 in its recipes), clipped to global norm 5.0
    (optax's convention), Flax's Momentum 0.9 with Nesterov.
``friendly-sam`` — Friendly SAM's official code (nblt/F-SAM)
    d = g − σ m_old, m = λ_f m_old + (1 − λ_f) g (σ = 1, λ_f = 0.9, its class defaults; step 0 plain SAM
    with m = g), ε = ρ d/(‖d‖ + 1e-12), torch.optim.SGD with momentum 0.9 and weight decay.
``sam-on`` — SAM-ON's official code (mueller-mp/SAM-ON, its README's ASAM_ON command)
    ε = ρ T² g/(‖T g‖ + 1e-16) over the selected tensors only (``perturb_mask``: the normalisation
    layers), T = |θ| there (η = 0, ``--normalize_bias``), 0 elsewhere; SGD momentum 0.9, weight decay.
``fisher-sam`` — Fisher SAM (no authors' code; the third-party implementations' defaults)
    ε = ρ f⁻¹g/(√(gᵀf⁻¹g) + 1e-12), f = 1 + η_f g² (η_f = 1), SGD momentum 0.9, weight decay.
``composer-sam`` — Composer's SAM (mosaicml/composer, ``SAMOptimizer``)
    ε = ρ g/(‖g‖ + 1e-12) on steps with (t + 1) % interval == 0 (``every``), the base optimizer's plain
    step otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import InvalidInputError
from ..objective import Problem, check_problem
from ..sam import SAM
from ..validation import check_choice, check_nonnegative
from .clipping import GradientClipping
from .optimizers import SGD, Adam, AdamW, Optimizer

__all__ = ["PRESETS", "Preset", "preset"]

PRESETS = {
    "pytorch-sam": "PyTorch SAM wrapper: ε = ρ g/(‖g‖ + 1e-12), SGD momentum, weight decay in SGD",
    "pytorch-sam-adaptive": "PyTorch SAM wrapper, adaptive=True: ASAM with T = |θ| (κ = 0), ‖Tg‖ + 1e-12",
    "asam-official": "official ASAM code: T = |θ| + 0.01 on weights only, ‖Tg‖ + 1e-16, SGD momentum",
    "pytorch-sam-adam": "PyTorch SAM wrapper around torch.optim.Adam (L2 λθ inside the moments)",
    "pytorch-sam-adamw": "PyTorch SAM wrapper around torch.optim.AdamW (decoupled decay)",
    "optax-adamw-sam": "optax.contrib.sam around optax.adamw: ε = ρ g/‖g‖, AdamW at the unperturbed θ",
    "jax-sam": "JAX/Flax SAM: L2 on every parameter in the loss, ε = ρ g/‖g‖, m-sharpness, clip 5, Nesterov",
    "gsam": "official GSAM: adaptive ε (κ = 0), g^p − α g_⊥, ρ_t proportional to η_t (ρ_0 = ρ_min), SGD",
    "gnp": "official gradient-norm penalty: L2 in the loss, (1 − α) g/‖g‖ + α g^p, clip 5, Nesterov",
    "friendly-sam": "official Friendly SAM: ε along g − σ m_old, m an EMA of g (σ = 1, λ_f = 0.9), SGD",
    "sam-on": "official SAM-ON (ASAM_ON): T = |θ| on the selected tensors only, ‖Tg‖ + 1e-16, SGD",
    "fisher-sam": "Fisher SAM: ε = ρ f⁻¹g/(√(gᵀf⁻¹g) + 1e-12), f = 1 + g², SGD",
    "composer-sam": "Composer's SAM: ε = ρ g/(‖g‖ + 1e-12) every `every` steps, plain steps between, SGD",
}
GNP_CLIP = 5.0  # zhaoyang-0204/gnp's gradient_clipping default
GSAM_ALPHA = 0.4  # GSAM's example
GNP_ALPHA = 0.8  # the gradient-norm penalty's recipes
VARIANT_KEYWORDS = {"alpha": ("gsam", "gnp"), "rho_min": ("gsam",), "sigma": ("friendly-sam",),
                    "ema": ("friendly-sam",), "perturb_mask": ("sam-on",), "fisher_eta": ("fisher-sam",),
                    "every": ("composer-sam",)}
JAX_SAM_CLIP = 5.0  # google-research/sam's --gradient_clipping default


@dataclass(frozen=True)
class Preset:
    """A public implementation's problem (where its L2 term sits), SAM rule, base optimizer and gradient
    clipping: ``train(p.problem, p.sam, p.optimizer, steps, clip_grad_norm=p.clip_grad_norm)``."""

    name: str
    problem: Problem
    sam: SAM
    optimizer: Optimizer
    clip_grad_norm: GradientClipping | None = None


def preset(name: str, problem: Problem, rho: float, lr: float | ArrayLike, weight_decay: float = 0.0,
           momentum: float = 0.9, nesterov: bool | None = None, m_sharpness: int | None = None, *,
           weights_only: bool = False, gradient_clipping: float | None = None, alpha: float | None = None,
           rho_min: float | None = None, sigma: float | None = None, ema: float | None = None,
           perturb_mask: ArrayLike | None = None, fisher_eta: float | None = None,
           every: int | None = None) -> Preset:
    """The preset ``name`` (one of `PRESETS`) for ``problem``, radius ``rho``, learning rate ``lr``,
    weight decay λ = ``weight_decay`` and (SGD presets) base-optimizer momentum.

    Use it as ``p = preset("pytorch-sam", problem, 0.05, lr=0.1, weight_decay=5e-4); train(p.problem,
    p.sam, p.optimizer, steps, clip_grad_norm=p.clip_grad_norm)``. λ goes where the implementation puts
    it: into the optimizer for the PyTorch and optax presets, into the loss for ``jax-sam`` (every
    parameter; ``weights_only=True``: the weight matrices only, its ``--no_weight_decay_on_bn``).
    ``nesterov`` defaults to what the implementation uses (True for ``jax-sam``, False otherwise);
    ``m_sharpness`` (``jax-sam`` only) is the per-device batch size; ``gradient_clipping``: the global norm
    c the descent gradient is clipped to (None: the implementation's default, 5.0 for ``jax-sam`` and
    ``gnp``, no clipping elsewhere; 0: none), in the implementation's convention. ``problem`` must not
    carry an ``l2`` term of its own.

    The variants' own keywords (None: the official default): ``alpha`` (``gsam`` 0.4, ``gnp`` 0.8),
    ``rho_min`` (``gsam``: the ρ at η = 0; default ``rho``, a constant ρ as in its example), ``sigma`` and
    ``ema`` (``friendly-sam``: 1.0, 0.9), ``perturb_mask`` (``sam-on``, required: the coordinates of the
    selected tensors), ``fisher_eta`` (``fisher-sam``: 1.0), ``every`` (``composer-sam``: 1).
    """
    name = check_choice("name", name, PRESETS)
    problem = check_problem(problem)
    lam = check_nonnegative("weight_decay", weight_decay)
    if np.any(problem.l2):
        raise InvalidInputError(f"preset {name!r} places the weight decay itself: build `problem` without "
                                f"`l2` and pass `weight_decay` to the preset")
    if m_sharpness is not None and name != "jax-sam":
        raise InvalidInputError(f"`m_sharpness` applies to the 'jax-sam' preset only, got preset {name!r}")
    if weights_only and name != "jax-sam":
        raise InvalidInputError(f"`weights_only` applies to the 'jax-sam' preset only, got preset {name!r}")
    given: dict[str, object] = {"alpha": alpha, "rho_min": rho_min, "sigma": sigma, "ema": ema,
                                "perturb_mask": perturb_mask, "fisher_eta": fisher_eta, "every": every}
    for key, value in given.items():
        if value is not None and name not in VARIANT_KEYWORDS[key]:
            raise InvalidInputError(f"`{key}` applies to the preset(s) {list(VARIANT_KEYWORDS[key])} only, "
                                    f"got preset {name!r}")
    clip = _clipping(name, gradient_clipping)
    if name in VARIANT_PRESETS:
        return _variant(name, problem, rho, lr, lam, momentum, nesterov, clip, given)
    if name == "jax-sam":
        l2 = np.where(problem.model.bias_mask(problem.p), 0.0, lam) if weights_only else lam
        with_l2 = Problem(problem.model, problem.X, problem.y, problem.weights, l2=l2)
        sam = SAM(rho, "sam", m_sharpness=m_sharpness)
        nesterov = True if nesterov is None else nesterov
        return Preset(name, with_l2, sam, SGD(lr, momentum, 0.0, nesterov), clip)
    optimizer: Optimizer
    if name == "pytorch-sam-adam":
        optimizer = Adam(lr, weight_decay=lam)
    elif name in ("pytorch-sam-adamw", "optax-adamw-sam"):
        optimizer = AdamW(lr, weight_decay=lam)
    else:
        optimizer = SGD(lr, momentum, 0.0, False if nesterov is None else nesterov, weight_decay=lam)
    if name in ("pytorch-sam", "pytorch-sam-adam", "pytorch-sam-adamw"):
        sam = SAM(rho, "sam", norm_eps=1e-12)
    elif name == "optax-adamw-sam":
        sam = SAM(rho, "sam")
    elif name == "pytorch-sam-adaptive":
        sam = SAM(rho, "asam", kappa=0.0, norm_eps=1e-12)
    else:  # asam-official: weights only
        sam = SAM(rho, "asam", kappa=0.01, norm_eps=1e-16, t_mask=~problem.model.bias_mask(problem.p))
    return Preset(name, problem, sam, optimizer, clip)


VARIANT_PRESETS = ("gsam", "gnp", "friendly-sam", "sam-on", "fisher-sam", "composer-sam")


def _variant(name: str, problem: Problem, rho: float, lr: float | ArrayLike, lam: float, momentum: float,
             nesterov: bool | None, clip: GradientClipping | None, given: dict[str, object]) -> Preset:
    """The SAM-variant presets (module docstring)."""
    if name == "gnp":
        with_l2 = Problem(problem.model, problem.X, problem.y, problem.weights, l2=lam)
        sam = SAM(rho, "sam", direction="gnp", alpha=_or(given["alpha"], GNP_ALPHA), unit_gradient=True)
        return Preset(name, with_l2, sam, SGD(lr, momentum, 0.0, True if nesterov is None else nesterov),
                      clip)
    optimizer = SGD(lr, momentum, 0.0, False if nesterov is None else nesterov, weight_decay=lam)
    if name == "gsam":
        lrs = optimizer.learning_rates(1 if isinstance(optimizer.lr, float) else len(optimizer.lr))
        rho_max = check_nonnegative("rho", rho)
        low = check_nonnegative("rho_min", _or(given["rho_min"], rho_max))
        # ProportionScheduler: ρ = ρ_min + (ρ_max − ρ_min)(η − η_min)/(η_max − η_min), η_min = 0 (the
        # example's min_lr), ρ_max where η_max = η_min; step 0 reads the lr scheduler's initial value 0
        if isinstance(optimizer.lr, float) and low != rho_max:
            raise InvalidInputError("preset 'gsam' with `rho_min` != `rho` ties ρ_t to the learning rate: "
                                    "pass `lr` as the per-step schedule")
        top = float(np.max(lrs))
        rhos = low + (rho_max - low) * lrs / top if top > 0.0 else np.full(len(lrs), rho_max)
        rhos[0] = low if top > 0.0 else rho_max
        schedule: float | ArrayLike = rhos if not isinstance(optimizer.lr, float) else float(rhos[0])
        sam = SAM(schedule, "asam", kappa=0.0, norm_eps=1e-12, direction="gsam",
                  alpha=_or(given["alpha"], GSAM_ALPHA))
    elif name == "friendly-sam":
        sam = SAM(rho, "friendly", norm_eps=1e-12, sigma=_or(given["sigma"], 1.0), ema=_or(given["ema"], 0.9))
    elif name == "sam-on":
        if given["perturb_mask"] is None:
            raise InvalidInputError("preset 'sam-on' needs `perturb_mask`: the coordinates of the tensors "
                                    "it perturbs (its normalisation layers)")
        mask = np.asarray(given["perturb_mask"])
        sam = SAM(rho, "asam", kappa=0.0, norm_eps=1e-16, perturb_mask=mask)
    elif name == "fisher-sam":
        sam = SAM(rho, "fisher", norm_eps=1e-12, fisher_eta=_or(given["fisher_eta"], 1.0))
    else:  # composer-sam
        sam = SAM(rho, "sam", norm_eps=1e-12, every=_or(given["every"], 1))
    return Preset(name, problem, sam, optimizer, clip)


def _or(value: object, default: float) -> Any:
    """``value`` as given (`SAM` validates it: no bool, no 2.5 steps), or ``default`` where it is None."""
    return default if value is None else value


def _clipping(name: str, gradient_clipping: float | None) -> GradientClipping | None:
    """The preset's clipping in its implementation's convention (torch's clip_grad_norm_ for the PyTorch
    presets, optax's for the JAX ones)."""
    default = {"jax-sam": JAX_SAM_CLIP, "gnp": GNP_CLIP}.get(name, 0.0)
    c = default if gradient_clipping is None else gradient_clipping
    c = check_nonnegative("gradient_clipping", c)
    if c == 0.0:
        return None
    return GradientClipping(c, "optax" if name in ("jax-sam", "optax-adamw-sam", "gnp") else "torch")
