"""Replay a real ``torch.optim.AdamW`` + SAM run (gradient clipping, cosine schedule) with refsam, and check
refsam's exact influence against autograd through the unrolled torch run — then watch a wrong port fail.

    python examples/validate_pytorch_adamw.py

The torch side uses torch only (no refsam):

1. **the real run**: a two-step SAM wrapper around ``torch.optim.AdamW`` (ε = ρ g/(‖g‖ + 1e-12) from the
   batch loss's gradient, θ ← θ + ε; the gradient at θ + ε, θ restored; ``clip_grad_norm_``; AdamW's
   step; ``CosineAnnealingLR.step()``), on a logistic regression in float64;
2. **the oracle**: the same loop written functionally in torch (AdamW's equations, clipping, SAM), with the
   sample weights w as a leaf tensor, and ∂ℓ_test(θ_T(w))/∂w_j by autograd through all T steps.

refsam then replays the run from its θ_0, batch order and schedule (``refsam.AdamW`` with the schedule as
``lr``, ``clip_grad_norm=c``) and must match every θ_t to ≤ 1e-12, and its adjoint influence must match the
oracle to ≤ 1e-9 (refsam.kit's exact-method tolerance). Two deliberately wrong ports must fail the same
check: Adam's bias correction left out, and the descent gradient taken as ∇_θ F(θ + ε(θ)) (through ε)
instead of ∇F at the perturbed point (off by a few 1e-3 here: an easy bug to miss by eye).

Exit status 0 iff the replay and the influence agree and the wrong port is caught. Without torch the script
prints "skipped: torch not installed" and exits 0.
"""

from __future__ import annotations

import sys

import numpy as np

import refsam
from refsam.tolerances import RTOL_EXACT_METHODS, rel_err

N, P, BATCH, STEPS = 24, 3, 8, 12
LR, BETAS, EPS, WEIGHT_DECAY, RHO, CLIP = 0.05, (0.9, 0.99), 1e-8, 0.01, 0.05, 0.5
REPLAY_ATOL = 1e-12


def data():
    X, y, _ = refsam.make_gaussian_classification(n=N + 4, n_features=P, seed=7)
    return X[:N], y[:N], X[N:], y[N:]


def batch_order(seed=0):
    rng = np.random.default_rng(seed)
    order = []
    while len(order) < STEPS:
        perm = rng.permutation(N)
        order += [np.sort(perm[i:i + BATCH]) for i in range(0, N, BATCH)]
    return order[:STEPS]


def torch_run(torch, X, y, theta0, batches):
    """The real run: torch.optim.AdamW under a SAM wrapper, clip_grad_norm_, CosineAnnealingLR."""
    Xt, yt = torch.tensor(X), torch.tensor(y, dtype=torch.float64)
    theta = torch.nn.Parameter(torch.tensor(theta0))
    opt = torch.optim.AdamW([theta], lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
    thetas = [theta.detach().clone().numpy()]
    for idx in batches:
        def loss(idx=idx):
            z = Xt[idx] @ theta[:-1] + theta[-1]
            return (torch.logaddexp(torch.zeros_like(z), z) - yt[idx] * z).mean()
        opt.zero_grad()
        loss().backward()  # first step: the perturbation from the batch gradient
        with torch.no_grad():
            eps = RHO * theta.grad / (theta.grad.norm() + 1e-12)
            theta.add_(eps)
        opt.zero_grad()
        loss().backward()  # second step: the gradient at θ + ε, θ restored
        with torch.no_grad():
            theta.sub_(eps)
        torch.nn.utils.clip_grad_norm_([theta], CLIP)
        opt.step()
        scheduler.step()
        thetas.append(theta.detach().clone().numpy())
    return np.array(thetas)


def torch_influence(torch, X, y, X_test, y_test, theta0, batches, bias_correction=True, through_eps=False):
    """∂ℓ_test(θ_T(w))/∂w_j by autograd through the functional loop (rows j, columns the test points).

    ``bias_correction=False`` and ``through_eps=True`` are the wrong ports: Adam without its bias
    correction, and a descent gradient taken as ∇_θ F(θ + ε(θ)) — differentiating through ε — instead of
    ∇F at the perturbed point ŵ = θ + ε (what the SAM wrapper's second backward pass computes)."""
    Xt, yt = torch.tensor(X), torch.tensor(y, dtype=torch.float64)
    lrs = [LR * (1 + np.cos(np.pi * t / STEPS)) / 2 for t in range(STEPS)]  # CosineAnnealingLR, η_min = 0
    w = torch.ones(N, dtype=torch.float64, requires_grad=True)
    theta = torch.tensor(theta0, requires_grad=True)  # θ_0 does not depend on w, but the grads need a graph
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    b1, b2 = BETAS
    for t, idx in enumerate(batches):
        def loss(th, idx=idx):
            z = Xt[idx] @ th[:-1] + th[-1]
            return (w[idx] * (torch.logaddexp(torch.zeros_like(z), z) - yt[idx] * z)).mean()
        g = torch.autograd.grad(loss(theta), theta, create_graph=True)[0]
        eps = RHO * g / (g.norm() + 1e-12)
        w_hat = theta + eps
        g = torch.autograd.grad(loss(w_hat), theta if through_eps else w_hat, create_graph=True)[0]
        g = g * torch.clamp(CLIP / (g.norm() + 1e-6), max=1.0)  # clip_grad_norm_
        theta = theta * (1 - lrs[t] * WEIGHT_DECAY)  # AdamW: decay first
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        c1, c2 = (1 - b1 ** (t + 1), 1 - b2 ** (t + 1)) if bias_correction else (1.0, 1.0)
        theta = theta - lrs[t] * (m / c1) / (torch.sqrt(v / c2) + EPS)
    z = torch.tensor(X_test) @ theta[:-1] + theta[-1]
    test_losses = torch.logaddexp(torch.zeros_like(z), z) - torch.tensor(y_test, dtype=torch.float64) * z
    rows = [torch.autograd.grad(test_losses[k], w, retain_graph=True)[0].numpy() for k in range(len(y_test))]
    return np.array(rows).T  # (n_train, n_test)


def main() -> int:
    try:
        import torch
    except ImportError:
        print("skipped: torch not installed")
        return 0
    X, y, X_test, y_test = data()
    batches = batch_order()
    problem = refsam.Problem(refsam.LogisticRegression(), X, y)
    theta0 = problem.init_params(0)
    thetas = torch_run(torch, X, y, theta0, batches)
    optimizer = refsam.AdamW(refsam.training.cosine_annealing_lr(LR, STEPS), BETAS, EPS, WEIGHT_DECAY)
    run = refsam.train(problem, refsam.SAM(RHO, norm_eps=1e-12), optimizer, theta0=theta0, batches=batches,
                       clip_grad_norm=CLIP)
    replay_err = float(np.max(np.abs(run.thetas - thetas)))
    clipped = sum(np.linalg.norm(refsam.training.sam_gradient(problem, run.sam(), run.thetas[t], batches[t])
                                 .descent) + 1e-6 > CLIP for t in range(STEPS))
    print(f"replay of the torch AdamW + SAM run: max |θ_t(refsam) − θ_t(torch)| = {replay_err:.2e} over "
          f"{STEPS} steps ({clipped} clipped)")
    influence = refsam.trajectory_influence(problem, run, X_test, y_test, "adjoint")
    ok = replay_err <= REPLAY_ATOL
    variants = (("correct", True, False, True), ("no bias correction (wrong)", False, False, False),
                ("gradient through ε (wrong)", True, True, False))
    for label, bias_correction, through_eps, should_pass in variants:
        oracle = torch_influence(torch, X, y, X_test, y_test, theta0, batches, bias_correction, through_eps)
        err = rel_err(oracle, influence)
        passed = err <= RTOL_EXACT_METHODS
        print(f"{label:>28}: rel. err. against refsam's adjoint {err:.2e} -> {'PASS' if passed else 'FAIL'}"
              f"{'' if passed == should_pass else '  (UNEXPECTED)'}")
        ok = ok and passed == should_pass
    print("all checks as expected" if ok else "SOME CHECKS DID NOT GO AS EXPECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
