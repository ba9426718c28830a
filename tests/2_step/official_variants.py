"""NumPy transliterations of one step of several SAM variants, following their
official (or, for Fisher SAM, third-party) implementations.

This is a plain helper module for writing correctness oracles; it holds no
tests.  Every function works on a list of float64 numpy arrays (the model's
tensors, in ``named_parameters()`` order) and a callable
``grad_fn(list_of_arrays) -> list_of_arrays`` that returns the gradient of the
data loss *without* weight decay / L2 (unless a docstring says otherwise).

Each function returns a dict with at least

* ``'e_w'``  -- list: the perturbation added to each tensor before the second
  gradient evaluation (zeros where a tensor is not perturbed);
* ``'grad'`` -- list: what the official code leaves in ``p.grad`` (PyTorch) or
  hands to ``tx.update`` / ``optimizer.apply_gradient`` (JAX) for the base
  optimizer.  Weight decay that the base optimizer adds itself is NOT included.

and, for stateful variants, the new state.

Floating-point order follows the source where it matters (products are
evaluated left to right as written there; eps placement is copied exactly).
Norm reductions cannot be bit-identical to torch/XLA (different summation
trees); they are computed as "norm of the per-tensor norms" for the PyTorch
sources (``torch.norm(torch.stack([t.norm() ...]))``) and as
``sqrt(sum(sum(t**2)))`` for the JAX sources.

Sources (commit hashes are the snapshot HEADs that were read):

* GSAM (PyTorch):  github.com/juntang-zhuang/GSAM @ a770275b3324a3ed4bf4a1cddb976b2782ba852b
* GSAM (JAX, the authors' "official" one per that README):
  github.com/google-research/big_vision @ 0127fb6b337ee2a27bf4e54dea79cff176527356
  (big_vision/trainers/proj/gsam/gsam.py last touched in 0a83553c79153ce6c3e4c2483d471eb683c137dc)
* GNP:  github.com/zhaoyang-0204/gnp @ c62128cfddf18fa3afa325487b172781bb09ff1a (2022, ICML code)
  and e8033626e071547a8897764724c30a318cc2f627 (2024 HEAD; same GNP maths)
* F-SAM: github.com/nblt/F-SAM @ 2e2f9899ab473880430640fa5def4ad8f5aa2401
  (utils.py last touched in 39e42171c0a5925cd582193b3f6d10048c6523b2)
* SAM-ON: github.com/mueller-mp/SAM-ON @ 8b8869ad1e03a83cc9e71bf4bca605ecc9f89080
* Composer SAM: github.com/mosaicml/composer @ 6405188805a0054b4551ec49e4919c54c971d0e8
  (composer/algorithms/sam/sam.py last touched in e625a069bbde0c48b8a8be938a8b6bf2e0131e7a)
* Fisher SAM: no authors' code exists (paperswithcode: "No code implementations
  yet").  Followed a third-party PyTorch ``FisherSAM`` class (search-index file
  id 39942003544, repository not named by the index) whose maths matches the
  paper's closed form; see /tmp/variants_notes.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Arrays = list[np.ndarray]
GradFn = Callable[[Arrays], Arrays]

__all__ = [
    "gsam_grad",
    "gsam_grad_bigvision",
    "gsam_rho_value",
    "gsam_rho",
    "gnp_grad",
    "fsam_grad",
    "samon_grad",
    "samon_selected",
    "fisher_sam_grad",
    "composer_is_sam_step",
    "composer_sam_grad",
]


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _f64(xs: Sequence[np.ndarray]) -> Arrays:
    return [np.array(x, dtype=np.float64, copy=True) for x in xs]


def _torch_global_norm(xs: Sequence[np.ndarray]) -> float:
    """2-norm of the vector of per-tensor 2-norms (torch.norm(torch.stack(...)))."""
    per = np.array([np.linalg.norm(np.ravel(x)) for x in xs], dtype=np.float64)
    return float(np.linalg.norm(per))


def _jax_global_norm(xs: Sequence[np.ndarray]) -> float:
    """sqrt(sum over leaves of sum(x**2)) -- the JAX repos' dual_vector/global_norm."""
    total = 0.0
    for x in xs:
        total = total + float(np.sum(np.square(x)))
    return math.sqrt(total)


# --------------------------------------------------------------------------- #
# 1. GSAM
# --------------------------------------------------------------------------- #
def gsam_grad(params: Sequence[np.ndarray], grad_fn: GradFn, rho: float,
              alpha: float, adaptive: bool = False,
              eps: float = 1e-12) -> dict[str, object]:
    """One GSAM step as in the PyTorch re-implementation.

    Source: juntang-zhuang/GSAM @ a770275b3324a3ed4bf4a1cddb976b2782ba852b,
    gsam/gsam.py:
      * __init__ L7 (``perturb_eps=1e-12``, ``adaptive=False`` defaults),
      * perturb_weights L40-53, unperturb L55-60, gradient_decompose L62-85,
      * _grad_norm L101-122, step L152-188.

    Args (official names in brackets):
      rho   [rho_t, from the rho scheduler; see gsam_rho]
      alpha [gsam_alpha]
      adaptive [adaptive]  -- the example/train.py default is True (L19).
      eps   [perturb_eps]  -- used in three places: perturbation scale,
            cosine denominator and the new-gradient-norm denominator.

    Computation (g = grad_fn(w), the loss gradient WITHOUT weight decay --
    torch SGD adds weight decay only inside base_optimizer.step()):
      n      = ||g||            (adaptive: || |w| * g ||, global over tensors)
      scale  = rho / (n + eps)
      e      = (g * scale)      (adaptive: (g * scale) * w**2)
      g_p    = grad_fn(w + e)
      inner  = sum_i sum(g_i * g_p,i)
      n_p    = ||g_p||,  n_0 = ||g||   (both NON-adaptive, even if adaptive=True)
      cos    = inner / (n_p * n_0 + eps)
      vert   = g - ((cos * n_0) * g_p) / (n_p + eps)
      grad   = g_p + (-alpha) * vert
    Weights are restored by subtraction, (w + e) - e, which need not equal w
    bitwise; that value is returned as 'params_restored' (it is what the
    base optimizer then updates).
    """
    w = _f64(params)
    g = _f64(grad_fn(w))
    if adaptive:
        n = _torch_global_norm([np.abs(wi) * gi for wi, gi in zip(w, g)])
    else:
        n = _torch_global_norm(g)
    scale = rho / (n + eps)
    e_w = []
    for wi, gi in zip(w, g):
        ei = gi * scale
        if adaptive:
            ei = ei * np.power(wi, 2)
        e_w.append(ei)
    w_pert = [wi + ei for wi, ei in zip(w, e_w)]
    g_p = _f64(grad_fn(w_pert))

    inner = 0.0
    for gi, gpi in zip(g, g_p):
        inner = inner + float(np.sum(gi * gpi))
    n_p = _torch_global_norm(g_p)
    n_0 = _torch_global_norm(g)
    cosine = inner / (n_p * n_0 + eps)
    grad = []
    vertical = []
    for gi, gpi in zip(g, g_p):
        vi = gi - cosine * n_0 * gpi / (n_p + eps)
        vertical.append(vi)
        grad.append(gpi + (-alpha) * vi)
    restored = [wp - ei for wp, ei in zip(w_pert, e_w)]
    return {
        "e_w": e_w,
        "grad": grad,
        "grad_clean": g,
        "grad_perturbed": g_p,
        "vertical": vertical,
        "cosine": cosine,
        "grad_norm_perturb": n,
        "params_perturbed": w_pert,
        "params_restored": restored,
    }


def gsam_grad_bigvision(params: Sequence[np.ndarray], grad_fn: GradFn,
                        rho: float, alpha: float,
                        adaptive_perturbation: bool = False,
                        eps: float = 1e-12,
                        minimize_fp: bool = True) -> dict[str, object]:
    """One GSAM gradient as in the authors' JAX code (big_vision).

    Source: google-research/big_vision @ 0127fb6b337ee2a27bf4e54dea79cff176527356,
    big_vision/trainers/proj/gsam/gsam.py L19-27 (dual_vector), L29-122
    (gsam_gradient); rho from lr at L72-75.  ``rho`` here is the already
    scheduled ``sam_rho``.  Here grad_fn must return the gradient of whatever
    loss_fn the trainer passes (big_vision: data loss only; weight decay is a
    decoupled optax transform, trainers/proj/gsam/train.py L208-212).

      n   = ||g||  (always the plain gradient norm, no eps in dual_vector)
      e   = rho * g / (n + eps)            (a + rho*b/(n+eps))
            adaptive: |w| * rho * g / (n + eps)   -- note |w|, not w**2, and
            the norm is NOT |w|-weighted (differs from the PyTorch port)
      g_p = grad_fn(w + e)
      minimize_fp=True:  u = g_p/||g_p|| (no eps); r = g - <u, g> u;
                         grad = g_p - r * alpha
      minimize_fp=False: u = g/||g||;  r = g_p - <u, g_p> u;
                         grad = g + r * alpha
    The returned gradient is then pmean'ed over devices and given to the optax
    chain (clip_by_global_norm(grad_clip_norm) first).
    """
    w = _f64(params)
    g = _f64(grad_fn(w))
    n = _jax_global_norm(g)
    if adaptive_perturbation:
        e_w = [np.abs(wi) * rho * gi / (n + eps) for wi, gi in zip(w, g)]
    else:
        e_w = [rho * gi / (n + eps) for gi in g]
    w_pert = [wi + ei for wi, ei in zip(w, e_w)]
    g_p = _f64(grad_fn(w_pert))
    if minimize_fp:
        n_p = _jax_global_norm(g_p)
        u = [x / n_p for x in g_p]
        proj = 0.0
        for ui, gi in zip(u, g):
            proj = proj + float(np.vdot(ui, gi))
        resid = [gi - proj * ui for gi, ui in zip(g, u)]
        grad = [gpi - ri * alpha for gpi, ri in zip(g_p, resid)]
    else:
        u = [x / n for x in g]
        proj = 0.0
        for ui, gpi in zip(u, g_p):
            proj = proj + float(np.vdot(ui, gpi))
        resid = [gpi - proj * ui for gpi, ui in zip(g_p, u)]
        grad = [gi + ri * alpha for gi, ri in zip(g, resid)]
    return {"e_w": e_w, "grad": grad, "grad_clean": g, "grad_perturbed": g_p,
            "residual": resid, "params_perturbed": w_pert}


def gsam_rho_value(lr: float, rho_max: float, rho_min: float, lr_max: float,
                   lr_min: float) -> float:
    """ProportionScheduler.step() value for a given lr.

    Source: juntang-zhuang/GSAM gsam/scheduler.py L29-42 (and the identical
    formula in big_vision gsam.py L72-75):
      lr_max > lr_min: rho_min + (rho_max - rho_min) * (lr - lr_min) / (lr_max - lr_min)
      otherwise      : rho_max
    (evaluated left to right: ((rho_max-rho_min)*(lr-lr_min))/(lr_max-lr_min)).
    """
    if lr_max > lr_min:
        return rho_min + (rho_max - rho_min) * (lr - lr_min) / (lr_max - lr_min)
    return rho_max


def gsam_rho(lrs: Sequence[float], rho_max: float, rho_min: float,
             lr_max: float, lr_min: float,
             convention: str = "torch_lr_scheduler",
             lr_scheduler_init_value: float = 0.0) -> np.ndarray:
    """rho_t actually used by GSAM at step t (0-based), given lrs[t] = the lr
    the base optimizer actually uses at step t.

    Loop order in example/train.py L80-87 (and README "Step 6/7"):
        optimizer.step()            # uses self.rho_t
        scheduler.step()
        optimizer.update_rho_t()    # rho_t <- ProportionScheduler.step()
    and GSAM.__init__ (gsam.py L18-19) calls update_rho_t() once, after
    ProportionScheduler.__init__ already stepped once (scheduler.py L24).
    ProportionScheduler reads ``pytorch_lr_scheduler._last_lr[0]``.

    convention:
      "torch_lr_scheduler": lr scheduler from torch.optim.lr_scheduler (README
          Method 1.2 / b).  Its constructor already sets _last_lr = lr_0, and
          after each scheduler.step() _last_lr is the lr of the next step, so
          rho_t = f(lrs[t]) for every t (no offset).
      "gsam_scheduler_base": the repo's own Linear/Cosine/PolyScheduler with
          optimizer=base_optimizer, wrapped by ProportionScheduler (this is
          example/train.py L53-57).  SchedulerBase.__init__ sets
          _last_lr = [init_value] (default 0.0) and does NOT touch the
          optimizer's lr, so at step 0 the optimizer uses its constructor lr
          while rho_0 = f(lr_scheduler_init_value).  For t >= 1,
          rho_t = f(lrs[t]).  (The lr sequence itself is
          [constructor lr, v(0), v(1), ...] with v(k) the scheduler value at
          its internal t=k.)
      "rho_scheduler_base": README Method 1.1 / a: rho_scheduler is itself a
          Linear/CosineScheduler (not ProportionScheduler); GSAM.__init__
          steps it once, so rho runs one step AHEAD of lr:
          rho_t = f(lrs[t+1]) (for the last step, extrapolate with the
          schedule; here we reuse f(lrs[-1]) -- supply one extra lr to avoid
          this).  NOTE: this is only "f" if both schedulers have the same
          shape; it is exact for the value mapping v_rho(k) = f(v_lr(k)).
      "bigvision": JAX trainer (train.py L208, L284-293): rho at 0-based step
          t is computed from sched(t+1)*lr while optax's scale_by_schedule
          uses sched(t): rho_t = f(lrs[t+1]), like "rho_scheduler_base".
    """
    lrs = [float(x) for x in lrs]
    T = len(lrs)
    out = np.empty(T, dtype=np.float64)
    for t in range(T):
        if convention == "torch_lr_scheduler":
            lr_seen = lrs[t]
        elif convention == "gsam_scheduler_base":
            lr_seen = lr_scheduler_init_value if t == 0 else lrs[t]
        elif convention in ("rho_scheduler_base", "bigvision"):
            lr_seen = lrs[t + 1] if t + 1 < T else lrs[-1]
        else:
            raise ValueError(f"unknown convention {convention!r}")
        out[t] = gsam_rho_value(lr_seen, rho_max, rho_min, lr_max, lr_min)
    return out


# --------------------------------------------------------------------------- #
# 2. Gradient norm penalty (Zhao, Zhang, Hu 2022)
# --------------------------------------------------------------------------- #
def gnp_grad(params: Sequence[np.ndarray], grad_fn: GradFn, rho: float,
             alpha: float, normalise: bool = True, l2_reg: float = 0.0,
             l2_mask: Sequence[bool] | None = None,
             gradient_clipping: float = 5.0) -> dict[str, object]:
    """One GNP gradient as in the official JAX/Flax code.

    Source: zhaoyang-0204/gnp @ c62128cfddf18fa3afa325487b172781bb09ff1a
      training/training_core.py L65-125 (forward_and_loss: CE + 0.5*l2_reg*sum w^2),
      L127-183 (get_gnp_gradient), L185-203 (train_step: pmean, clip, apply);
      training/utli.py L210-223 (global_norm), L226-243 (clip_by_global_norm),
      L246-262 (dual_vector: g/||g||, NO eps);
      config/base_config.py L52 (gradient_clipping=5.0), L58
      (l2_regularization=1e-3), L80-83 (gnp.r=0.0, gnp.alpha=0.0,
      gnp.norm_perturbations=True, gnp.sync_perturbations=False).
    Same maths at HEAD e8033626e071547a8897764724c30a318cc2f627
    (training_core.py L119-129, L131-187, L211-217).

    Args (official names in brackets):
      rho       [config.gnp.r]  (recipes: 0.1 CIFAR, 0.05 ImageNet)
      alpha     [config.gnp.alpha] (recipes: 0.8); alpha = lambda / r
      normalise [config.gnp.norm_perturbations], code default True
      l2_reg    [config.l2_regularization] -- L2 is INSIDE the loss, so it
                enters g, the perturbation direction, and g_p
      l2_mask   per-tensor bool; None = all tensors (default
                no_weight_decay_on_bn=False).  With no_weight_decay_on_bn=True
                the code keeps only tensors with ndim > 1.
      gradient_clipping [config.gradient_clipping]; <= 0 disables (the code
                would actually crash with an unbound variable then).

    Computation:
      G(w)  = grad_fn(w) + l2_reg * w   (masked)
      g     = G(w);  u = g / ||g||      (no eps)
      w_p   = w + rho * u
      g_p   = G(w_p)
      mix   = (1 - alpha) * (u if normalise else g) + alpha * g_p
      grad  = mix                 if ||mix|| < clip
              (mix / ||mix||) * clip  otherwise
    'grad' is what reaches the optimizer (flax Momentum beta=0.9,
    nesterov=True, weight_decay forced to 0 in the recipes).  r == 0 means
    plain training (L191): grad = clip(G(w)).
    """
    w = _f64(params)
    if l2_mask is None:
        l2_mask = [True] * len(w)

    def G(x: Arrays) -> Arrays:
        gx = _f64(grad_fn(x))
        if l2_reg != 0.0:
            gx = [gi + l2_reg * xi if m else gi for gi, xi, m in zip(gx, x, l2_mask)]
        return gx

    g = G(w)
    if rho != 0:
        n = _jax_global_norm(g)
        u = [gi / n for gi in g]
        e_w = [rho * ui for ui in u]
        w_pert = [wi + ei for wi, ei in zip(w, e_w)]
        g_p = G(w_pert)
        first = u if normalise else g
        mix = [(1 - alpha) * a + alpha * b for a, b in zip(first, g_p)]
    else:
        n = _jax_global_norm(g)
        e_w = [np.zeros_like(wi) for wi in w]
        w_pert = w
        g_p = None
        mix = g
    if gradient_clipping > 0:
        mn = _jax_global_norm(mix)
        if mn < gradient_clipping:
            grad = [np.array(t, copy=True) for t in mix]
        else:
            grad = [(t / mn) * gradient_clipping for t in mix]
    else:
        grad = [np.array(t, copy=True) for t in mix]
    return {"e_w": e_w, "grad": grad, "grad_unclipped": mix, "grad_clean": g,
            "grad_perturbed": g_p, "grad_norm": n, "params_perturbed": w_pert}


# --------------------------------------------------------------------------- #
# 3. Friendly SAM
# --------------------------------------------------------------------------- #
def fsam_grad(params: Sequence[np.ndarray], grad_fn: GradFn,
              state: Sequence[np.ndarray] | None, rho: float,
              sigma: float = 1.0, lmbda: float = 0.9, adaptive: bool = False,
              eps: float = 1e-12) -> dict[str, object]:
    """One F-SAM step as in the official code.

    Source: nblt/F-SAM @ 2e2f9899ab473880430640fa5def4ad8f5aa2401, utils.py
      FriendlySAM.__init__ L428 (rho=0.05, sigma=1, lmbda=0.9, adaptive=False),
      first_step L441-464, second_step L466-475, _grad_norm L486-496;
      train.py L76-83 (CLI defaults rho=0.1, sigma=1, lmbda=0.95),
      L276-279 (adaptive=0, SGD nesterov=False), L361-377 (loop);
      run.sh (rho=0.2, sigma=1, lmbda=0.6, wd=1e-3, lr=0.05).

    Args (official names): rho, sigma, lmbda, adaptive; eps is the hard-coded
    1e-12.  ``state`` is the list of per-tensor ``self.state[p]["momentum"]``
    tensors, or None before the first call.

    Computation (g = grad_fn(w), WITHOUT weight decay; torch SGD adds it in
    base_optimizer.step()):
      first call (state None):  m_new = g (a copy);  d = g   (no subtraction)
      later calls:              d = g - m_old * sigma       (OLD m)
                                m_new = m_old * lmbda + g * (1 - lmbda)
      n     = ||d||   (adaptive: || |w| * d ||)
      scale = rho / (n + eps)
      e     = (1.0 * d) * scale   (adaptive: (w**2 * d) * scale)
      grad  = grad_fn(w + e)     (restored by copying the saved w: exact)
    """
    w = _f64(params)
    g = _f64(grad_fn(w))
    if state is None:
        m_new = [np.array(gi, copy=True) for gi in g]
        d = [np.array(gi, copy=True) for gi in g]
    else:
        m_old = _f64(state)
        d = [gi - mi * sigma for gi, mi in zip(g, m_old)]
        m_new = [mi * lmbda + gi * (1 - lmbda) for mi, gi in zip(m_old, g)]
    if adaptive:
        n = _torch_global_norm([np.abs(wi) * di for wi, di in zip(w, d)])
    else:
        n = _torch_global_norm(d)
    scale = rho / (n + eps)
    if adaptive:
        e_w = [np.power(wi, 2) * di * scale for wi, di in zip(w, d)]
    else:
        e_w = [1.0 * di * scale for di in d]
    w_pert = [wi + ei for wi, ei in zip(w, e_w)]
    grad = _f64(grad_fn(w_pert))
    return {"e_w": e_w, "grad": grad, "state": m_new, "direction": d,
            "grad_clean": g, "params_perturbed": w_pert}


# --------------------------------------------------------------------------- #
# 4. SAM-ON
# --------------------------------------------------------------------------- #
def samon_selected(name: str, mode: str = "only_norm") -> bool:
    """Whether SAM-ON perturbs a parameter, by substring of its full dotted
    name (sam_on.py L26 / L86):
      only_norm: 'norm' in name or 'bn' in name
      no_norm  : neither substring
      all      : every parameter (plain (A)SAM)
    """
    is_norm = ("norm" in name) or ("bn" in name)
    if mode == "only_norm":
        return is_norm
    if mode == "no_norm":
        return not is_norm
    if mode == "all":
        return True
    raise ValueError(f"unknown mode {mode!r}")


def samon_grad(params: Sequence[np.ndarray], names: Sequence[str],
               grad_fn: GradFn, rho: float, adaptive: bool = True,
               eps: float = 1e-16, mode: str = "only_norm", eta: float = 0.0,
               elementwise: bool = True, layerwise: bool = False,
               normalize_bias: bool = False, p: str = "2") -> dict[str, object]:
    """One SAM-ON / ASAM-ON step as in the official code.

    Source: mueller-mp/SAM-ON @ 8b8869ad1e03a83cc9e71bf4bca605ecc9f89080,
      sam_on.py: ASAM_ON.__init__ L5 (rho=0.5, eta=0.01, elementwise=True,
      p='2', normalize_bias=False), ASAM_ON.ascent_step L20-67,
      descent_step L69-78, SAM_ON.ascent_step L80-103;
      train.py L83-85 (constructor call), L111-133 (loop), L215-235 (CLI:
      minimizer='ASAM_ON', rho=0.5, eta=0.0 (!), --elementwise/--layerwise/
      --normalize_bias/--only_norm/--no_norm are store_true flags, i.e.
      default False), SGD(momentum=0.9, weight_decay=5e-4).
      README command: --minimizer=ASAM_ON --p=2 --elementwise --normalize_bias
      --rho=10. --only_norm.

    Args (official names): rho, eta, elementwise, layerwise, normalize_bias,
    p; ``adaptive`` selects the class (True -> ASAM_ON, False -> SAM_ON; the
    ASAM_ON ``adaptive`` kwarg itself is stored but never read); ``mode`` is
    only_norm / no_norm / all; eps is the hard-coded 1e-16 added to the norm.

    Computation over the selected set S (norm over S only; g = grad_fn(w),
    WITHOUT weight decay):
      SAM_ON :  n = ||g_S||_2 + eps;   e_i = g_i * (rho / n)   for i in S
      ASAM_ON, p='2': for i in S with 'weight' in name (or normalize_bias):
                   T_i = |w_i| + eta        (elementwise)
                   T_i = ||w_i||*1 + eta    (layerwise, elementwise=False)
                   T_i = w_i                (neither flag; signed, no eta --
                                             equivalent to |w| since T enters
                                             squared)
                 otherwise T_i = 1.
               n = ||T_S * g_S||_2 + eps;  e_i = ((g_i*T_i)*T_i) * (rho / n)
      ASAM_ON, p='infinity': e_i = sign(g_i)*T_i*rho (T as above or 1)
      grad = grad_fn(w + e) for ALL tensors (unselected ones too);
      selected tensors are restored by copying the saved w (exact).
    """
    w = _f64(params)
    g = _f64(grad_fn(w))
    sel = [samon_selected(nm, mode) for nm in names]
    e_w = [np.zeros_like(wi) for wi in w]
    if not adaptive:
        norms = [np.linalg.norm(np.ravel(gi)) for gi, s in zip(g, sel) if s]
        n = float(np.linalg.norm(np.array(norms, dtype=np.float64))) + eps
        for i, s in enumerate(sel):
            if s:
                e_w[i] = g[i] * (rho / n)
    else:
        T: list[np.ndarray | None] = [None] * len(w)
        mod_g: list[np.ndarray | None] = [None] * len(w)
        norms = []
        for i, (nm, s) in enumerate(zip(names, sel)):
            if not s:
                continue
            gi = g[i]
            scaled = ("weight" in nm) or normalize_bias
            if scaled:
                if elementwise:
                    Ti = np.abs(w[i]) + eta
                elif layerwise:
                    Ti = np.linalg.norm(np.ravel(w[i])) * np.ones_like(w[i]) + eta
                else:
                    Ti = np.array(w[i], copy=True)
                T[i] = Ti
                if p == "2":
                    gi = gi * Ti
            if p == "infinity":
                gi = np.sign(gi) * T[i] if scaled else np.sign(gi)
            elif p != "2":
                raise NotImplementedError(p)
            mod_g[i] = gi
            norms.append(np.linalg.norm(np.ravel(gi)))
        n = float(np.linalg.norm(np.array(norms, dtype=np.float64))) + eps
        for i, (_nm, s) in enumerate(zip(names, sel)):
            if not s:
                continue
            gi = mod_g[i]
            if p == "2":
                if T[i] is not None:
                    gi = gi * T[i]
                e_w[i] = gi * (rho / n)
            else:
                e_w[i] = gi * rho
    w_pert = [wi + ei for wi, ei in zip(w, e_w)]
    grad = _f64(grad_fn(w_pert))
    return {"e_w": e_w, "grad": grad, "selected": sel, "norm": n,
            "grad_clean": g, "params_perturbed": w_pert}


# --------------------------------------------------------------------------- #
# 5. Fisher SAM
# --------------------------------------------------------------------------- #
def fisher_sam_grad(params: Sequence[np.ndarray], grad_fn: GradFn,
                    rho: float = 0.1, eta: float = 1.0,
                    eps: float = 1e-12) -> dict[str, object]:
    """One Fisher-SAM step (Kim et al., ICML 2022), no authors' code.

    Follows the third-party PyTorch ``FisherSAM`` (search-index file id
    39942003544; defaults gamma=0.1, eta=1.0), whose maths is the paper's
    closed form  eps* = gamma f^{-1} g / sqrt(g^T f^{-1} g),  f = 1 + eta g^2
    (diagonal empirical Fisher from the SAME mini-batch gradient):
      inv   = 1 / (1 + eta * g**2)                (elementwise)
      D     = sqrt( sum_i sum((g_i * inv_i) * g_i) )   (global, no eps inside)
      scale = gamma / (D + eps)                   eps = 1e-12
      e     = (inv * g) * scale
      grad  = grad_fn(w + e)                      (restored by copying w)
    ``rho`` is the paper's gamma.  g is the data-loss gradient WITHOUT weight
    decay (base torch optimizer adds it).
    """
    w = _f64(params)
    g = _f64(grad_fn(w))
    inv = [1.0 / (1.0 + eta * np.power(gi, 2)) for gi in g]
    total = 0.0
    for gi, ii in zip(g, inv):
        total = total + float(np.sum(gi * ii * gi))
    denom = math.sqrt(total)
    scale = rho / (denom + eps)
    e_w = [ii * gi * scale for ii, gi in zip(inv, g)]
    w_pert = [wi + ei for wi, ei in zip(w, e_w)]
    grad = _f64(grad_fn(w_pert))
    return {"e_w": e_w, "grad": grad, "fisher_norm": denom, "inv_fisher": inv,
            "grad_clean": g, "params_perturbed": w_pert}


# --------------------------------------------------------------------------- #
# 6. Composer SAM interval
# --------------------------------------------------------------------------- #
def composer_is_sam_step(t: int, interval: int) -> bool:
    """Whether Composer's SAMOptimizer runs SAM at (0-based) optimizer step t.

    Source: mosaicml/composer @ 6405188805a0054b4551ec49e4919c54c971d0e8,
    composer/algorithms/sam/sam.py L50 (global_step = 0 at wrap time),
    L92 ``(global_step + 1) % interval == 0``, L107 (global_step += 1 after
    every step() call, SAM or not).  Unchanged since the initial commit.
    SAM steps: t = interval-1, 2*interval-1, ...; interval=1 -> every step.
    """
    return (t + 1) % interval == 0


def composer_sam_grad(params: Sequence[np.ndarray], grad_fn: GradFn, t: int,
                      rho: float = 0.05, epsilon: float = 1e-12,
                      interval: int = 1) -> dict[str, object]:
    """One Composer SAMOptimizer.step() (sam.py L56-117).

    SAM step:  n = ||g|| (norm of per-tensor norms), e = g * (rho/(n+epsilon)),
               grad = grad_fn(w + e); weights restored by p.sub_(e), i.e.
               (w + e) - e  ('params_restored').
    Other steps: plain closure() + base_optimizer.step(): e = 0, grad = g.
    (Edge: a loss that is exactly 0.0 is falsy, ``if loss:`` then skips the
    whole update, L95/L98/L104 -- not modelled here.)
    """
    w = _f64(params)
    g = _f64(grad_fn(w))
    if not composer_is_sam_step(t, interval):
        return {"e_w": [np.zeros_like(wi) for wi in w], "grad": g,
                "sam_step": False, "params_restored": w}
    n = _torch_global_norm(g)
    scale = rho / (n + epsilon)
    e_w = [gi * scale for gi in g]
    w_pert = [wi + ei for wi, ei in zip(w, e_w)]
    grad = _f64(grad_fn(w_pert))
    restored = [wp - ei for wp, ei in zip(w_pert, e_w)]
    return {"e_w": e_w, "grad": grad, "sam_step": True,
            "params_restored": restored, "params_perturbed": w_pert}


# --------------------------------------------------------------------------- #
# self-check
# --------------------------------------------------------------------------- #
if __name__ == "__main__":  # pragma: no cover
    rng = np.random.default_rng(0)
    A = rng.standard_normal((4, 3))
    b = rng.standard_normal(4)
    params0 = [rng.standard_normal(3), rng.standard_normal(2)]

    def _grad(ps):
        # quadratic-ish loss: 0.5||A x - b||^2 + 0.25 sum(y^4)
        x, y = ps
        return [A.T @ (A @ x - b), y ** 3]

    out = gsam_grad(params0, _grad, rho=0.05, alpha=0.0)
    sam_like = composer_sam_grad(params0, _grad, t=0, rho=0.05)
    assert all(np.allclose(a, c) for a, c in zip(out["grad"], sam_like["grad"]))
    jb = gsam_grad_bigvision(params0, _grad, rho=0.05, alpha=0.4)
    pt = gsam_grad(params0, _grad, rho=0.05, alpha=0.4)
    assert all(np.allclose(a, c, rtol=1e-10, atol=1e-12) for a, c in zip(jb["grad"], pt["grad"]))
    # GSAM with alpha: the final grad minus g_p is orthogonal to g_p
    d = [a - c for a, c in zip(pt["grad"], pt["grad_perturbed"])]
    assert abs(sum(float(np.sum(x * y)) for x, y in zip(d, pt["grad_perturbed"]))) < 1e-10
    # F-SAM first step == SAM
    f0 = fsam_grad(params0, _grad, None, rho=0.05)
    assert all(np.allclose(a, c) for a, c in zip(f0["grad"], sam_like["grad"]))
    f1 = fsam_grad(params0, _grad, f0["state"], rho=0.05, sigma=1.0, lmbda=0.9)
    # same gradient twice: d = g - g = 0 -> no perturbation
    assert all(np.allclose(e, 0) for e in f1["e_w"])
    # Fisher SAM with eta=0 == SAM
    fs = fisher_sam_grad(params0, _grad, rho=0.05, eta=0.0)
    assert all(np.allclose(a, c) for a, c in zip(fs["e_w"], sam_like["e_w"]))
    # SAM-ON over 'all' with adaptive=False == SAM (up to eps)
    so = samon_grad(params0, ["fc.weight", "bn.weight"], _grad, rho=0.05,
                    adaptive=False, mode="all")
    assert all(np.allclose(a, c) for a, c in zip(so["e_w"], sam_like["e_w"]))
    so2 = samon_grad(params0, ["fc.weight", "bn.weight"], _grad, rho=0.05,
                     adaptive=True, mode="only_norm")
    assert np.all(so2["e_w"][0] == 0) and not np.all(so2["e_w"][1] == 0)
    gn = gnp_grad(params0, _grad, rho=0.05, alpha=1.0, normalise=True,
                  gradient_clipping=0.0)
    assert all(np.allclose(a, c) for a, c in zip(gn["grad"], sam_like["grad"]))
    assert [composer_is_sam_step(t, 3) for t in range(7)] == [
        False, False, True, False, False, True, False]
    r = gsam_rho([0.1, 0.1, 0.05, 0.0], 2.0, 0.5, 0.1, 0.0,
                 convention="gsam_scheduler_base")
    assert np.allclose(r, [0.5, 2.0, 1.25, 0.5])
    print("official_variants self-check OK")
