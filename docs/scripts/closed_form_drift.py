"""Measure how far the "frozen" and "erm" ablations drift from the exact closed form as ρ grows.

Prints the markdown table of docs/closed_form.md. Run from the repository root:

    python docs/scripts/closed_form_drift.py            # about 10 s

Setting (the reference example of docs/closed_form.md, λ the base optimizer's weight decay, and a
stronger-λ variant that has roots for larger ρ): logistic regression on seeded Gaussian data, n = 200,
p = 5 (d = 6), 20 test points, ``refsam.SGD(0.5, weight_decay=λ)`` (η = 0.5 for the stability column).
For every (λ, rule, ρ) the script solves the root from the same start, then reports

* ‖G(θ̂)‖, and the spectral radius of I − η ∂G/∂θ (stable iff < 1),
* drift = rel_err(variant, full) = ‖I_variant − I_full‖_∞ / ‖I_full‖_∞ over the (200, 20) influence matrix,
* the Pearson correlation of each variant's removal prediction −I with actual leave-one-out re-solves.

"no root" means the solver (with the proof of refsam.influence.fixed_point.no_root_reason where it applies,
else the damped Newton / trust-region search) found no root: full-batch SAM then 2-cycles instead of
converging.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr

import refsam
from refsam.ground_truth import leave_one_out
from refsam.influence import FixedPointError, hessian_influence, solve_fixed_point

RHOS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
WEIGHT_DECAYS = (1e-2, 1e-1)
RULES = ("sam", "asam", "usam")
LR = 0.5


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def main() -> None:
    X, y, _ = refsam.make_gaussian_classification(n=200, n_features=5, seed=0)
    X_test, y_test, _ = refsam.make_gaussian_classification(n=20, n_features=5, seed=1)
    print("| λ | rule | ρ | ‖G(θ̂)‖ | spectral radius (η=0.5) | drift frozen | drift erm "
          "| LOO Pearson full | frozen | erm |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for lam in WEIGHT_DECAYS:
        problem = refsam.Problem(refsam.LogisticRegression(), X, y)
        optimizer = refsam.SGD(LR, weight_decay=lam)  # λ: the optimizer's weight decay, part of G
        for rule in RULES:
            for rho in RHOS:
                if rho == 0.0 and rule != "sam":
                    continue  # ρ = 0 is the same gradient descent for every rule
                sam = refsam.SAM(rho, rule)
                try:
                    root = solve_fixed_point(problem, sam, problem.init_params(0), optimizer=optimizer,
                                             progress=False)
                except FixedPointError as err:
                    print(f"| {lam:g} | {rule} | {rho:g} | no root (best {err.residual:.0e}) "
                          "| – | – | – | – | – | – |")
                    continue
                full, frozen, erm = (hessian_influence(problem, sam, root, X_test, y_test, v)
                                     for v in ("full", "frozen", "erm"))
                actual = leave_one_out(problem, sam, root, X_test, y_test).ravel()
                pearson = [pearsonr(-I.ravel(), actual)[0] for I in (full, frozen, erm)]
                residual = "≤ 1e-15" if root.residual <= 1e-15 else f"{root.residual:.0e}"  # rounding noise
                print(f"| {lam:g} | {rule} | {rho:g} | {residual} | {root.spectral_radius:.4f} "
                      f"| {rel_err(frozen, full):.2e} | {rel_err(erm, full):.2e} "
                      f"| {pearson[0]:.5f} | {pearson[1]:.5f} | {pearson[2]:.5f} |")


if __name__ == "__main__":
    main()
