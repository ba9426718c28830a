"""Validate an independent float64 PyTorch implementation of SAM training and trajectory influence
against refsam's reference cases — and watch the checker reject subtly wrong variants.

    python examples/validate_pytorch.py [CASES_DIR]

CASES_DIR defaults to a temporary directory filled by ``refsam.kit.export_cases``. The PyTorch code below
reads the cases with numpy and json only and does two things for every case:

1. it **replays the run with a real torch optimizer**: a SAM wrapper written here around
   ``torch.optim.SGD(momentum=μ, dampening=τ, nesterov=…, weight_decay=λ)`` or ``torch.optim.Adam`` /
   ``torch.optim.AdamW(betas, eps, weight_decay=λ)``, built from the case's ``optimizer`` entry (refsam's
   optimizers use torch's names), with the case's ``l2`` (λ₂/2)‖θ‖² in the loss (first step: ε from the
   loss gradient, θ ← θ + ε; second step: the gradient at θ + ε, θ restored,
   ``torch.nn.utils.clip_grad_norm_`` when the case has ``clip_grad_norm``, then the optimizer's step), on
   the recorded θ_0, batch schedule and learning rates — and checks θ_t against the recorded run at every
   step (≤ 1e-12);
2. it computes the scores by autograd through a functional re-run of the same training loop (SGD's
   buffer, or Adam's moments with their bias corrections, the clip and the schedule written out), with
   respect to the sample weights w (create_graph=True at every step):

    scores[j, k] = ∂ ℓ(z_k^test, θ_T(w)) / ∂ w_j  at w = 1   (refsam's sign and scale, docs/contract.md §1)

The SAM rule is read from the case's fields alone (docs/variants.md): SAM, USAM, ASAM, Fisher SAM,
Friendly SAM with its running mean, GSAM's and the gradient-norm penalty's directions, perturbation masks,
interval SAM and per-step ρ schedules (``rule_at``, ``perturbation``, ``direction``, ``sam_step_terms``).

Four variants are checked with ``refsam.kit.check_scores``:
* "correct": the perturbation ε_t stays in the graph, momentum follows torch.optim.SGD, Adam and AdamW
  follow torch.optim.Adam / AdamW and the clip follows clip_grad_norm_;
* "frozen perturbation (wrong)": ε_t is detached, which drops the inner-perturbation terms of
  docs/contract.md §4 — a classic porting bug. The checker must reject every case;
* "weight decay outside the buffer (wrong)": the optimizer's λθ added after the momentum buffer
  (SGDW-style) instead of through it (torch's order). The checker must reject every momentum case with
  the optimizer's weight decay;
* "no bias correction (wrong)": Adam's m̂ = m/(1 − β₁^{t+1}) and v̂ = v/(1 − β₂^{t+1}) left out. The
  checker must reject every Adam and AdamW case (the others do not use it).

Exit status 0 iff the correct variant passes every case and each wrong one fails the cases it must.
torch is imported lazily: without it the script prints "skipped: torch not installed" and exits 0
(refsam does not depend on torch; ``pip install torch`` to run it).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np

REPLAY_ATOL = 1e-12  # θ_t of the torch replay vs the recorded θ_t, every step: the same float64 steps


# -- the PyTorch implementation (independent of refsam: numpy + json + torch only) ------------------------
def make_losses(torch, spec, n_features):
    """Per-sample losses ℓ_i(θ) on the flat θ layout of the case's model spec (docs/validating.md)."""
    name = spec["name"]

    def cross_entropy(z, y):  # logsumexp(z) − z_y, (n,)
        return torch.logsumexp(z, dim=1) - z.gather(1, y[:, None])[:, 0]

    if name == "logistic":  # θ = (weights, bias)
        def losses(theta, X, y):
            z = X @ theta[:-1] + theta[-1]
            return torch.logaddexp(torch.zeros_like(z), z) - y.to(z.dtype) * z
    elif name == "softmax":  # θ = Θ.ravel(), Θ of shape (p+1, K), bias last row
        K = spec["n_classes"]

        def losses(theta, X, y):
            Theta = theta.reshape(n_features + 1, K)
            return cross_entropy(X @ Theta[:-1] + Theta[-1], y)
    elif name == "mlp":  # θ = W_1.ravel(), b_1, W_2.ravel(), b_2, …; W_l of shape (in, out)
        sizes = spec["sizes"]
        act = {"tanh": torch.tanh, "softplus": torch.nn.functional.softplus,
               "sigmoid": torch.sigmoid}[spec.get("activation", "tanh")]

        def losses(theta, X, y):
            a, start = X, 0
            for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                W = theta[start:start + fan_in * fan_out].reshape(fan_in, fan_out)
                start += fan_in * fan_out
                b = theta[start:start + fan_out]
                start += fan_out
                a = a @ W + b
                if layer < len(sizes) - 2:
                    a = act(a)
            return cross_entropy(a, y)
    else:
        raise ValueError(f"unknown model {name!r}")
    return losses


def rule_at(meta, t):
    """(ρ_t, phase) of step t: ρ_t from a per-step ``rho`` list; "plain" on interval SAM's other steps
    (``every``: SAM when (t + 1) % every == 0), "first" on Friendly SAM's first SAM step, else "sam"."""
    rho = meta["rho"][t] if isinstance(meta["rho"], list) else meta["rho"]
    every = meta.get("every")
    if every is not None and (t + 1) % every != 0:
        return 0.0, "plain"
    first = 0 if every is None else every - 1
    return rho, "first" if meta["rule"] == "friendly" and t == first else "sam"


def perturbation(torch, meta, theta, g, rho):
    """ε(θ; g) with radius ρ: SAM (and Friendly SAM, on its d) ρ g/(‖g‖ + e), USAM ρ g, ASAM ρ T²g/(‖Tg‖ + e)
    with T = diag(|θ| + κ) on the masked coordinates (all without ``t_mask``) and 1 elsewhere, Fisher SAM
    ρ f⁻¹g/(√(gᵀf⁻¹g) + e) with f = 1 + η_f g²; e = the case's ``norm_eps``; with ``perturb_mask`` g is
    zeroed off the mask first (so ε is 0 there and every norm is over the mask)."""
    rule, e = meta["rule"], meta.get("norm_eps", 0.0)
    if meta.get("perturb_mask") is not None:
        g = torch.where(torch.as_tensor(meta["perturb_mask"]), g, torch.zeros_like(g))
    if rho == 0.0:
        return torch.zeros_like(g)
    if rule == "usam":
        return rho * g
    if rule in ("sam", "friendly"):
        return rho * g / (torch.linalg.vector_norm(g) + e)
    if rule == "fisher":
        h = g / (1.0 + meta["fisher_eta"] * g * g)
        return rho * h / (torch.sqrt((g * h).sum()) + e)
    t = theta.abs() + meta["kappa"]
    if meta.get("t_mask") is not None:
        t = torch.where(torch.as_tensor(meta["t_mask"]), t, torch.ones_like(t))
    return rho * t**2 * g / (torch.linalg.vector_norm(t * g) + e)


def direction(torch, meta, g, g_p):
    """The descent gradient from g (at θ) and g^p (at θ + ε): g^p; GSAM's g^p − α (g − cos ‖g‖ g^p/(‖g^p‖ +
    e)) with cos = ⟨g, g^p⟩/(‖g^p‖‖g‖ + e), e = 1e-12; the gradient-norm penalty's (1 − α) g + α g^p, or
    (1 − α) g/‖g‖ + α g^p with ``unit_gradient``."""
    kind, alpha = meta.get("direction", "sam"), meta.get("alpha")
    if kind == "sam":
        return g_p
    norm_g = torch.linalg.vector_norm(g)
    if kind == "gnp":
        return (1.0 - alpha) * (g / norm_g if meta.get("unit_gradient") else g) + alpha * g_p
    norm_p = torch.linalg.vector_norm(g_p)
    cos = (g * g_p).sum() / (norm_p * norm_g + 1e-12)
    return g_p - alpha * (g - cos * norm_g * g_p / (norm_p + 1e-12))


def sam_step_terms(torch, meta, t, theta, g, m):
    """(the rule's input u, its next state m', ρ_t, phase): Friendly SAM perturbs along u = g − σ m with m
    the running mean before the step (u = g and m' = g on its first SAM step; m' = m on a plain step), then
    m' = λ_f m + (1 − λ_f) g; u = g for the other rules (m' None)."""
    rho, phase = rule_at(meta, t)
    if meta["rule"] != "friendly":
        return g, None, rho, phase
    if phase == "first":
        return g, g, rho, phase
    if phase == "plain":
        return g, m, rho, phase
    return g - meta["sigma"] * m, meta["ema"] * m + (1.0 - meta["ema"]) * g, rho, phase


def clip_descent(torch, clip, descent):
    """The case's clip of the descent gradient: clip_grad_norm_'s s = min(1, c/(‖g̃‖ + 1e-6)) ("torch") or
    optax.clip_by_global_norm's s = c/max(‖g̃‖, c) ("optax"), differentiable through ‖g̃‖."""
    norm = torch.linalg.vector_norm(descent)
    if clip["convention"] == "torch":
        return descent * torch.clamp(clip["max_norm"] / (norm + 1e-6), max=1.0)
    return descent * (clip["max_norm"] / torch.clamp(norm, min=clip["max_norm"]))


class SAMWrapper:
    """SAM around a real ``torch.optim.SGD``, ``Adam`` or ``AdamW`` on one flat parameter tensor (written for
    this example), clipping the descent gradient with ``clip_grad_norm_`` when the case says so."""

    def __init__(self, torch, param, meta, lr):
        self.torch, self.param, self.meta = torch, param, meta
        opt = meta["optimizer"]  # refsam's optimizers, in torch's names; the loss's l2 is not the optimizer's
        if opt["name"] == "SGD":
            self.base = torch.optim.SGD([param], lr=lr, momentum=opt["momentum"], dampening=opt["dampening"],
                                        nesterov=opt["nesterov"], weight_decay=opt["weight_decay"])
        else:  # torch's Adam/AdamW have no eps_root (optax's): a case with one cannot be replayed by them
            assert opt["eps_root"] == 0.0, "torch.optim.Adam has no eps_root"
            base = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[opt["name"]]
            self.base = base([param], lr=lr, betas=tuple(opt["betas"]), eps=opt["eps"],
                             weight_decay=opt["weight_decay"])
        self.clip = meta.get("clip_grad_norm")  # None, or {"max_norm": c, "convention": "torch" | "optax"}
        self.m = torch.zeros_like(param)  # Friendly SAM's running mean of the gradients

    def first_step(self, t):
        with self.torch.no_grad():
            self.g = self.param.grad.clone()
            u, m_next, rho, _ = sam_step_terms(self.torch, self.meta, t, self.param, self.g, self.m)
            self.m = self.m if m_next is None else m_next
            self.eps = perturbation(self.torch, self.meta, self.param, u, rho)
            self.param.add_(self.eps)  # to θ + ε

    def second_step(self, lr):
        with self.torch.no_grad():
            self.param.sub_(self.eps)  # back to θ, then the step with the gradient taken at θ + ε
            self.param.grad = direction(self.torch, self.meta, self.g, self.param.grad)
        if self.clip is not None and self.clip["convention"] == "torch":  # before the optimizer's decay
            self.torch.nn.utils.clip_grad_norm_([self.param], self.clip["max_norm"])
        elif self.clip is not None:
            with self.torch.no_grad():
                self.param.grad = clip_descent(self.torch, self.clip, self.param.grad)
        for group in self.base.param_groups:
            group["lr"] = lr
        self.base.step()


def replay_with_torch_optimizer(torch, meta, arrays):
    """The largest |θ_t(torch) − θ_t(recorded)| over every step of the run."""
    X, y = torch.as_tensor(arrays["X"]), torch.as_tensor(arrays["y"], dtype=torch.int64)
    losses = make_losses(torch, meta["model"], meta["n_features"])
    l2 = l2_coefficient(torch, meta)
    offsets, flat, lrs = arrays["batch_offsets"], arrays["batch_indices"], arrays["lrs"]
    theta = torch.tensor(arrays["theta0"], requires_grad=True)
    optimizer, worst = SAMWrapper(torch, theta, meta, float(lrs[0])), 0.0

    def loss_at_current_point(idx):  # F_B (+ (λ₂/2)‖θ‖², the loss's l2) at the parameter's value
        F = losses(theta, X[idx], y[idx]).sum() / len(idx)
        return F + 0.5 * (l2 * theta * theta).sum() if l2 is not None else F

    for t in range(len(lrs)):
        idx = torch.as_tensor(flat[offsets[t]:offsets[t + 1]], dtype=torch.int64)
        theta.grad = None
        loss_at_current_point(idx).backward()
        optimizer.first_step(t)
        theta.grad = None
        loss_at_current_point(idx).backward()
        optimizer.second_step(float(lrs[t]))
        worst = max(worst, float(np.max(np.abs(theta.detach().numpy() - arrays["thetas"][t + 1]))))
    return worst


def torch_trajectory_influence(torch, meta, arrays, bug=None):
    """Scores (n_train, n_test) by autograd through a functional re-run of the training loop, w.r.t. w.

    ``bug``: None (correct), "frozen" (ε detached), "decay_outside_buffer" (SGDW-style weight decay) or
    "no_bias_correction" (Adam's m̂ = m, v̂ = v).
    """
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    X, X_test = as_t(arrays["X"]), as_t(arrays["X_test"])
    y = torch.as_tensor(arrays["y"], dtype=torch.int64)
    y_test = torch.as_tensor(arrays["y_test"], dtype=torch.int64)
    losses = make_losses(torch, meta["model"], meta["n_features"])
    l2, opt = l2_coefficient(torch, meta), meta["optimizer"]
    lam, adam = opt["weight_decay"], opt["name"] in ("Adam", "AdamW")
    mu, tau, nesterov = (0.0, 0.0, False) if adam else (opt["momentum"], opt["dampening"], opt["nesterov"])
    clip = meta.get("clip_grad_norm")
    offsets, flat = arrays["batch_offsets"], arrays["batch_indices"]

    w = torch.ones(meta["n_train"], dtype=torch.float64, requires_grad=True)
    theta = as_t(arrays["theta0"]).clone().requires_grad_(True)

    def batch_grad(point, idx):  # ∇F_{B,w}(point) = ∇ (1/|B|) Σ_{i∈B} w_i ℓ_i, kept in the graph
        F = (w[idx] * losses(point, X[idx], y[idx])).sum() / len(idx)
        return torch.autograd.grad(F, point, create_graph=True)[0]

    buf = None
    m = v = torch.zeros_like(theta)  # Adam's exp_avg and exp_avg_sq
    ema = torch.zeros_like(theta)  # Friendly SAM's running mean of the gradients
    for t, lr in enumerate(arrays["lrs"]):
        idx = torch.as_tensor(flat[offsets[t]:offsets[t + 1]], dtype=torch.int64)
        g = batch_grad(theta, idx) + (l2 * theta if l2 is not None else 0.0)
        u, ema_next, rho, _ = sam_step_terms(torch, meta, t, theta, g, ema)
        ema = ema if ema_next is None else ema_next
        if bug == "frozen":  # no derivative flows through ε_t
            eps = perturbation(torch, meta, theta.detach(), u.detach(), rho)
        else:
            eps = perturbation(torch, meta, theta, u, rho)
        w_hat = theta + eps
        g_p = batch_grad(w_hat, idx) + (l2 * w_hat if l2 is not None else 0.0)  # the loss's l2
        descent = direction(torch, meta, g, g_p)
        if clip is not None:  # the clip, differentiated through ‖g̃‖
            descent = clip_descent(torch, clip, descent)
        if adam:
            theta, m, v = adam_step(torch, opt, t, float(lr), theta, m, v, descent, bug)
            continue
        decay = lam * theta  # the optimizer's weight decay, as torch.optim.SGD adds it
        descent = descent + (0.0 if bug == "decay_outside_buffer" and mu else decay)
        if mu:  # torch.optim.SGD: buf = d at the first step, then μ buf + (1 − τ) d
            buf = descent if buf is None else mu * buf + (1.0 - tau) * descent
            step = descent + mu * buf if nesterov else buf
            if bug == "decay_outside_buffer":
                step = step + decay
        else:
            step = descent
        theta = theta - float(lr) * step

    test_losses = losses(theta, X_test, y_test)  # (m,)
    columns = [torch.autograd.grad(test_losses[k], w, retain_graph=True)[0]
               for k in range(len(test_losses))]
    return torch.stack(columns, dim=1).detach().numpy()


def adam_step(torch, opt, t, lr, theta, m, v, descent, bug=None):
    """One step of torch.optim.Adam (λθ inside the moments) or AdamW (θ ← θ (1 − ηλ) first), with optax's
    eps_root inside the root (0 in torch): (θ_{t+1}, m_t, v_t)."""
    (beta1, beta2), lam = opt["betas"], opt["weight_decay"]
    if opt["name"] == "AdamW":
        a = descent
        theta = theta * (1.0 - lr * lam)
    else:
        a = descent + lam * theta
    m = beta1 * m + (1.0 - beta1) * a
    v = beta2 * v + (1.0 - beta2) * a * a
    c1, c2 = (1.0, 1.0) if bug == "no_bias_correction" else (1.0 - beta1 ** (t + 1), 1.0 - beta2 ** (t + 1))
    return theta - lr * (m / c1) / (torch.sqrt(v / c2 + opt["eps_root"]) + opt["eps"]), m, v


def l2_coefficient(torch, meta):
    """The case's loss-level L2 coefficient λ₂ (a float, or a per-coordinate list) as a tensor; None if 0."""
    l2 = np.asarray(meta["l2"], dtype=np.float64)
    return None if not np.any(l2) else torch.as_tensor(l2)


def read_cases(directory):
    """[(manifest entry, arrays)] with numpy + json only."""
    with open(os.path.join(directory, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    cases = []
    for meta in manifest["cases"]:
        with np.load(os.path.join(directory, meta["file"]), allow_pickle=False) as data:
            cases.append((meta, {k: data[k] for k in data.files}))
    return cases


# -- the validation -----------------------------------------------------------------------------------
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        import torch
    except ImportError:
        print("skipped: torch not installed (pip install torch to run this example)")
        return 0
    from refsam.kit import check_scores, export_cases

    torch.set_default_dtype(torch.float64)
    with tempfile.TemporaryDirectory() as tmp:
        directory = argv[0] if argv else os.path.join(tmp, "cases")
        if not os.path.isfile(os.path.join(directory, "manifest.json")):
            print(f"exporting the reference cases to {directory}")
            export_cases(directory)
        cases = read_cases(directory)
        worst_replay = max(replay_with_torch_optimizer(torch, meta, arrays) for meta, arrays in cases)
        print(f"torch.optim.SGD/Adam/AdamW-based SAM replay: max |θ_t(torch) − θ_t(recorded)| over every "
              f"step of "
              f"every case = {worst_replay:.2e}")
        if worst_replay > REPLAY_ATOL:
            print(f"the torch optimizer does not reproduce the recorded runs (> {REPLAY_ATOL:.0e})")
            return 1
        variants = {"correct": None, "frozen perturbation (wrong)": "frozen",
                    "weight decay outside the buffer (wrong)": "decay_outside_buffer",
                    "no bias correction (wrong)": "no_bias_correction"}
        reports = {}
        for label, bug in variants.items():
            scores = {meta["id"]: torch_trajectory_influence(torch, meta, arrays, bug)
                      for meta, arrays in cases}
            path = os.path.join(tmp, f"scores_{bug or 'correct'}.npz")
            np.savez(path, **scores)
            reports[label] = check_scores(directory, path)
            print(f"\n== PyTorch, {label}")
            print(reports[label].table())
    correct = reports["correct"]
    frozen = reports["frozen perturbation (wrong)"]
    decay = reports["weight decay outside the buffer (wrong)"]
    no_bias = reports["no bias correction (wrong)"]
    momentum_ids = {meta["id"] for meta, _ in cases  # (the GNP cases keep their L2 in the loss: no decay)
                    if meta["optimizer"].get("momentum") and np.any(meta["optimizer"]["weight_decay"])}
    adam_ids = {meta["id"] for meta, _ in cases if meta["optimizer"]["name"] in ("Adam", "AdamW")}
    decay_failed = {r.case_id for r in decay.results if not r.passed}
    bias_failed = {r.case_id for r in no_bias.results if not r.passed}
    worst = max(r.rel_err for r in correct.results)
    worst_adam = max((r.rel_err for r in correct.results if r.case_id in adam_ids), default=float("nan"))
    print(f"\ncorrect variant: {len(correct.results) - correct.n_failed}/{len(correct.results)} passed; "
          f"wrong variant: {frozen.n_failed}/{len(frozen.results)} rejected; "
          f"weight decay outside the buffer: {len(decay_failed)}/{len(momentum_ids)} momentum cases with "
          f"weight decay "
          f"rejected; "
          f"no bias correction: {len(bias_failed)}/{len(adam_ids)} Adam cases rejected")
    print(f"correct variant vs the reference: max rel err {worst:.2e} over all cases, {worst_adam:.2e} over "
          f"the Adam and AdamW cases")
    ok = (correct.passed and frozen.n_failed == len(frozen.results) and decay_failed == momentum_ids
          and bias_failed == adam_ids)
    print("validation " + ("succeeded: the checker accepts the correct port and rejects the wrong ones"
                           if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
