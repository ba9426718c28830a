"""Validate an independent float64 PyTorch implementation of SAM training and trajectory influence
against refsam's reference cases — and watch the checker reject a subtly wrong variant.

    python examples/validate_pytorch.py [CASES_DIR]

CASES_DIR defaults to a temporary directory filled by ``refsam.cases.export_cases``. The PyTorch code
below reads the cases with numpy and json only, re-runs every SAM run in torch from θ_0 on the recorded
batch schedule, and differentiates the final test losses with respect to the sample weights w by
autograd through the whole training loop (create_graph=True at every step):

    scores[j, k] = ∂ ℓ(z_k^test, θ_T(w)) / ∂ w_j  at w = 1   (refsam's sign and scale, docs/contract.md §1)

Two variants are checked with ``refsam.cases.check_scores``:
* "correct": the perturbation ε_t = ε(θ_t; g_t) stays in the graph;
* "frozen perturbation (wrong)": ε_t is detached, which drops the inner-perturbation terms E_t and
  e_{t,j} of docs/contract.md §4 — a classic porting bug. The checker must reject it.

Exit status 0 iff the correct variant passes every case and the wrong one fails at least one (in practice
all of them). torch is imported lazily: without it the script prints "skipped: torch not installed" and
exits 0 (refsam does not depend on torch; ``pip install torch`` to run it).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np

REPLAY_ATOL = 1e-10  # θ_T of the torch replay vs the recorded θ_T: same float64 steps, reordered sums


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


def perturbation(torch, rule, rho, kappa, theta, g):
    """ε(θ; g): SAM ρ g/‖g‖, USAM ρ g, ASAM ρ T²g/‖Tg‖ with T = diag(|θ| + κ)."""
    if rule == "sam":
        return rho * g / torch.linalg.vector_norm(g)
    if rule == "usam":
        return rho * g
    t = theta.abs() + kappa
    return rho * t**2 * g / torch.linalg.vector_norm(t * g)


def torch_trajectory_influence(torch, meta, arrays, frozen_perturbation=False):
    """(scores (n_train, n_test), θ_T) by autograd through the re-run training loop, w.r.t. w."""
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    X, X_test = as_t(arrays["X"]), as_t(arrays["X_test"])
    y = torch.as_tensor(arrays["y"], dtype=torch.int64)
    y_test = torch.as_tensor(arrays["y_test"], dtype=torch.int64)
    losses = make_losses(torch, meta["model"], meta["n_features"])
    lam, coupled = meta["weight_decay"], meta["regularization"] == "coupled"
    rule, rho, kappa = meta["rule"], meta["rho"], meta["kappa"]
    offsets, flat = arrays["batch_offsets"], arrays["batch_indices"]

    w = torch.ones(meta["n_train"], dtype=torch.float64, requires_grad=True)
    theta = as_t(arrays["theta0"]).clone().requires_grad_(True)

    def batch_grad(point, idx):  # ∇F_{B,w}(point) = ∇ (1/|B|) Σ_{i∈B} w_i ℓ_i, kept in the graph
        F = (w[idx] * losses(point, X[idx], y[idx])).sum() / len(idx)
        return torch.autograd.grad(F, point, create_graph=True)[0]

    for t, lr in enumerate(arrays["lrs"]):
        idx = torch.as_tensor(flat[offsets[t]:offsets[t + 1]], dtype=torch.int64)
        g = batch_grad(theta, idx) + (lam * theta if coupled else 0.0)
        if frozen_perturbation:  # the bug: no derivative flows through ε_t
            eps = perturbation(torch, rule, rho, kappa, theta.detach(), g.detach())
        else:
            eps = perturbation(torch, rule, rho, kappa, theta, g)
        w_hat = theta + eps
        descent = batch_grad(w_hat, idx) + lam * (w_hat if coupled else theta)
        theta = theta - float(lr) * descent

    test_losses = losses(theta, X_test, y_test)  # (m,)
    columns = [torch.autograd.grad(test_losses[k], w, retain_graph=True)[0]
               for k in range(len(test_losses))]
    return torch.stack(columns, dim=1).detach().numpy(), theta.detach().numpy()


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
        variants = {"correct": False, "frozen perturbation (wrong)": True}
        reports = {}
        for label, frozen in variants.items():
            scores, worst_replay = {}, 0.0
            for meta, arrays in cases:
                scores[meta["id"]], theta_T = torch_trajectory_influence(torch, meta, arrays, frozen)
                worst_replay = max(worst_replay, float(np.max(np.abs(theta_T - arrays["thetas"][-1]))))
            path = os.path.join(tmp, f"scores_{'wrong' if frozen else 'correct'}.npz")
            np.savez(path, **scores)
            reports[label] = check_scores(directory, path)
            print(f"\n== PyTorch, {label}: max |θ_T(torch) − θ_T(recorded)| = {worst_replay:.2e}")
            print(reports[label].table())
            if not frozen and worst_replay > REPLAY_ATOL:
                print(f"the torch replay does not reproduce the recorded runs (> {REPLAY_ATOL:.0e})")
                return 1
    correct, wrong = reports["correct"], reports["frozen perturbation (wrong)"]
    print(f"\ncorrect variant: {len(correct.results) - correct.n_failed}/{len(correct.results)} passed; "
          f"wrong variant: {wrong.n_failed}/{len(wrong.results)} rejected")
    ok = correct.passed and wrong.n_failed > 0
    print("validation " + ("succeeded: the checker accepts the correct port and rejects the wrong one"
                           if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
