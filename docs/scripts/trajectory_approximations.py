"""Measure the cheap trajectory approximations against the exact trajectory influence and retraining.

Prints the markdown table of docs/trajectory.md. Run from the repository root:

    python docs/scripts/trajectory_approximations.py           # about a minute

Every setting trains a seeded SAM run on Gaussian data (n = 100 training points, 20 test points) and
takes f = the mean test loss. For each method it reports, over the n training points,

* rel. err = ‖I_method − I_exact‖_∞ / ‖I_exact‖_∞ on the (n, 20) matrix of per-test-loss influences,
* Spearman(exact) = rank correlation of I_method(f) with the exact I(f),
* Spearman(LOO) = rank correlation of the removal prediction −I_method(f) with the actual change of f
  when the point is removed and the run replayed (refsam.leave_one_out_replay, w_j = 0),
and, for the exact adjoint, also the Pearson correlation with the leave-one-out changes.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr

import refsam
from refsam.ground_truth import leave_one_out_replay
from refsam.influence.methods import TRAJECTORY_APPROXIMATIONS
from refsam.influence.trajectory import trajectory_influence

N, N_TEST = 100, 20


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def setting(name, model="logistic", rule="sam", rho=0.05, penalty="weight_decay", batch_size=None,
            steps=300, lr=0.5, weight_decay=1e-2):
    """``penalty``: where λ = ``weight_decay`` goes, the optimizer's weight decay ("weight_decay") or an
    L2 term in the loss ("l2", ``Problem(l2=λ)``)."""
    return dict(name=name, model=model, rule=rule, rho=rho, penalty=penalty,
                batch_size=batch_size, steps=steps, lr=lr, weight_decay=weight_decay)


SETTINGS = [
    setting("logistic, full batch, early (T=5)", steps=5),
    setting("logistic, full batch, converged (ρ=0.05)"),
    setting("logistic, minibatch 10 (ρ=0.05)", batch_size=10, lr=0.2),
    setting("logistic, L2 in the loss, 2-cycle (ρ=0.1, λ=0.1)", rho=0.1, penalty="l2", weight_decay=0.1),
    setting("logistic, full batch, large ρ=0.5", rho=0.5),
    setting("logistic, ASAM minibatch 10 (ρ=0.5)", rule="asam", rho=0.5, batch_size=10, lr=0.2),
    setting("MLP (5,8,2) tanh, minibatch 20 (ρ=0.05)", model="mlp", batch_size=20, lr=0.3, weight_decay=1e-3),
    setting("MLP (5,8,2) tanh, minibatch 20, short (T=30)", model="mlp", batch_size=20, lr=0.3,
            weight_decay=1e-3, steps=30),
]


def run_setting(s):
    X, y, _ = refsam.make_gaussian_classification(n=N + N_TEST, n_features=5, seed=0)
    model = refsam.LogisticRegression() if s["model"] == "logistic" else refsam.MLP((5, 8, 2))
    lam = s["weight_decay"]
    l2, weight_decay = (lam, 0.0) if s["penalty"] == "l2" else (0.0, lam)
    problem = refsam.Problem(model, X[:N], y[:N], l2=l2)
    optimizer = refsam.SGD(s["lr"], weight_decay=weight_decay)
    trajectory = refsam.train(problem, refsam.SAM(s["rho"], s["rule"]), optimizer, s["steps"],
                              batch_size=s["batch_size"], seed=0)
    X_test, y_test = X[N:], y[N:]
    loo = leave_one_out_replay(problem, trajectory, X_test, y_test).mean(axis=1)  # Δf_j, f = mean test loss
    exact = trajectory_influence(problem, trajectory, X_test, y_test, method="adjoint")  # (n, m)
    rows = [("exact (adjoint)", 0.0, 1.0, spearmanr(-exact.mean(axis=1), loo)[0])]
    for method in TRAJECTORY_APPROXIMATIONS:
        approx = trajectory_influence(problem, trajectory, X_test, y_test, method=method)
        rows.append((method, rel_err(approx, exact), spearmanr(approx.mean(axis=1), exact.mean(axis=1))[0],
                     spearmanr(-approx.mean(axis=1), loo)[0]))
    pearson_loo = pearsonr(-exact.mean(axis=1), loo)[0]
    return rows, pearson_loo


def main() -> None:
    print("| setting | method | rel. err vs exact | Spearman vs exact | Spearman vs LOO |")
    print("|---|---|---|---|---|")
    for s in SETTINGS:
        rows, pearson_loo = run_setting(s)
        for r, (method, err, sp_exact, sp_loo) in enumerate(rows):
            label = s["name"] if r == 0 else ""
            extra = f" (Pearson {pearson_loo:.4f})" if r == 0 else ""
            print(f"| {label} | {method} | {err:.2g} | {sp_exact:.4f} | {sp_loo:.4f}{extra} |", flush=True)


if __name__ == "__main__":
    main()
