"""The closed form at the SAM root: against brute-force leave-one-out, against its unavoidable parts, and
where its time goes for an MLP.

    bench_closed_form_vs_loo            closed_form_vs_loo_speedup, resolve_block_speedup
    bench_closed_form_over_unavoidable  closed_form_over_unavoidable (hardware)
    bench_closed_form_mlp               closed_form_mlp_parts
"""

from __future__ import annotations

import warnings

import common  # noqa: F401  (first: one BLAS thread before NumPy loads, and this checkout on sys.path)
import numpy as np
import scipy.linalg
from common import (
    RHO,
    AutogradMLP,
    best_time,
    logistic_problem,
    mlp_problem,
    one_at_a_time_leave_one_out,
    round_robin_best_times,
    sam_root,
    with_model,
)

from refsam import SAM, hessian_influence, leave_one_out
from refsam.influence import linearise, weight_jacobian
from refsam.tolerances import rel_err


def bench_closed_form_vs_loo(n: int, p: int, m: int, k: int, repeats: int) -> dict:
    """All-n closed-form influence on m test losses vs re-solving the root n times (w_j = 0), one
    weight vector at a time — what a user without influence functions would run (solve_fixed_point per
    point, warm-started at θ̂, to the ground truth's RESOLVE_TOL).

    The one-at-a-time re-solves are timed on the first k training points and extrapolated linearly to
    all n (each re-solve is independent and costs about the same). refsam's own ground truth,
    ``leave_one_out``, re-solves each chunk of points as one block (the chord method,
    ``resolve.resolve_block``): timed on all n, it gives ``resolve_block_speedup``.
    """
    problem, optimizer, X_test, y_test = logistic_problem(n, p)
    sam = SAM(RHO)
    root = sam_root(problem, sam, optimizer)  # a FixedPoint: carries the optimizer (its λ is part of G)
    indices = np.arange(k)
    closed, loo, block = {}, {}, {}

    def run_closed():
        closed["I"] = hessian_influence(problem, sam, root, X_test, y_test)

    def run_loo():
        loo["delta"] = one_at_a_time_leave_one_out(problem, sam, root, X_test, y_test, indices)

    def run_block():
        block["delta"] = leave_one_out(problem, sam, root, X_test, y_test)

    best = round_robin_best_times({"closed": run_closed, "loo": run_loo, "block": run_block}, repeats)
    per_resolve = best["loo"] / k
    t_brute = per_resolve * n
    predicted = -closed["I"][indices].ravel()  # −I_j predicts the change on removal
    actual = loo["delta"].ravel()
    return {
        "n": n, "d": problem.d, "n_test": m,
        "closed_form_seconds": best["closed"],
        "loo_resolves_timed": k,
        "loo_seconds_per_resolve": per_resolve,
        "loo_seconds_all_n_extrapolated": t_brute,
        "speedup": t_brute / best["closed"],
        "block_resolve_seconds_all_n": best["block"],
        "resolve_block_speedup": t_brute / best["block"],
        "block_vs_one_at_a_time_rel_diff": float(rel_err(block["delta"][indices], loo["delta"])),
        "pearson_prediction_vs_actual": float(np.corrcoef(predicted, actual)[0, 1]),
        "note": f"one-at-a-time re-solves timed on {k} points and extrapolated to n={n}",
    }


def bench_closed_form_over_unavoidable(n: int, p: int, repeats: int) -> dict:
    """hessian_influence (1 test loss) over one Hessian build plus one LU at its size — the issue's
    reference for "the parts no closed form can skip" — and over what the full SAM variant cannot skip:
    its two Hessians (at θ̂ and at ŵ = θ̂ + ε) plus one LU. The frozen variant needs one Hessian (at ŵ).
    All timed in turn in one run."""
    problem, optimizer, X_test, y_test = logistic_problem(n, p)
    sam = SAM(RHO)
    root = sam_root(problem, sam, optimizer)
    theta_hat = root.theta
    w_hat = theta_hat + sam.perturbation(theta_hat, problem.grad(theta_hat))
    eye = optimizer.weight_decay * np.eye(problem.d)  # J's λ I: the optimizer's weight decay

    def one_hessian_one_lu():
        scipy.linalg.lu_factor(problem.hessian(theta_hat) + eye)

    def two_hessians_one_lu():
        problem.hessian(theta_hat)
        scipy.linalg.lu_factor(problem.hessian(w_hat) + eye)

    best = round_robin_best_times({
        "full": lambda: hessian_influence(problem, sam, root, X_test[:1], y_test[:1]),
        "frozen": lambda: hessian_influence(problem, sam, root, X_test[:1], y_test[:1], "frozen"),
        "one_hessian_one_lu": one_hessian_one_lu, "two_hessians_one_lu": two_hessians_one_lu}, repeats)
    unavoidable = best["one_hessian_one_lu"]
    return {"n": n, "d": problem.d, "closed_form_seconds": best["full"], "unavoidable_seconds": unavoidable,
            "two_hessians_one_lu_seconds": best["two_hessians_one_lu"], "frozen_seconds": best["frozen"],
            "ratio": best["full"] / unavoidable,
            "floor_ratio": best["two_hessians_one_lu"] / unavoidable,
            "over_its_hessians": best["full"] / best["two_hessians_one_lu"],
            "frozen_ratio": best["frozen"] / unavoidable}


def bench_closed_form_mlp(n: int, sizes, repeats: int) -> dict:
    """Where the closed form's time goes for an MLP with d ≈ 2,000: its parts, timed one by one.

    The cost does not depend on whether θ is a root, so θ is a perturbed initialisation and the
    root check is relaxed (``on_unverified="warn"``, warning silenced); the numbers are costs only.
    """
    problem, optimizer, X_test, y_test = mlp_problem(n, sizes)
    sam = SAM(RHO)
    theta = problem.init_params(1) + 0.1 * np.random.default_rng(1).standard_normal(problem.d)
    lin = linearise(problem, sam, theta, optimizer=optimizer)
    autograd_problem = with_model(problem, AutogradMLP(problem.model.sizes))
    parts = {
        "hessian_influence_total": lambda: hessian_influence(problem, sam, theta, X_test[:1], y_test[:1],
                                                             on_unverified="warn", optimizer=optimizer),
        "hessian_influence_total_before (autograd Hessians)": lambda: hessian_influence(
            autograd_problem, sam, theta, X_test[:1], y_test[:1], on_unverified="warn", optimizer=optimizer),
        "two_hessians": lambda: (problem.hessian(theta), problem.hessian(lin.w_hat)),
        "linearise (2 Hessians + dense d^3 products)": lambda: linearise(problem, sam, theta,
                                                                         optimizer=optimizer),
        "cond_by_svd": lambda: np.linalg.cond(lin.jacobian),
        "lu_factor": lambda: scipy.linalg.lu_factor(lin.jacobian),
        "weight_jacobian": lambda: weight_jacobian(problem, lin),
        "eigvals_for_spectral_radius (diagnostics only)": lambda: np.linalg.eigvals(lin.jacobian),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seconds = {name: best_time(fn, repeats) for name, fn in parts.items()}
    return {"n": n, "d": problem.d, "sizes": list(sizes), "seconds": seconds}
