"""Benchmarks: the cost of every influence method against brute force and against training itself.

    python benchmarks/run.py [--quick] [--json OUT]     measure (--quick: under two minutes)
    python benchmarks/run.py --markdown RESULTS.json      print the README's tables from a results file

Every ratio is taken within one run on this machine: the two sides are timed alternately (A, B, A, B,
…) and each keeps its best (minimum) wall time, which is the least noisy estimate on a shared machine.
Peak memory is measured separately with ``tracemalloc`` (which traces NumPy's allocations), never
while timing.

Stable JSON keys (external checks read them):
    closed_form_vs_loo_speedup        all-n closed form vs brute-force leave-one-out re-solves one point
                                      at a time, logistic regression, n = 1000 (target >= 1000). The
                                      re-solves are timed on k training points and extrapolated to all n.
    resolve_block_speedup             refsam's leave_one_out (chord re-solves in blocks, all n) against
                                      those one-at-a-time re-solves
    adjoint_over_training             max of the two below (target <= 3)
    adjoint_over_training_logistic    adjoint for all n (one test loss) / the training run itself;
                                      logistic n = 1000, d = 50, T = 1000, batches of 100
    adjoint_over_training_mlp         the same for a tanh MLP (20, 64, 50, 5), d = 4849, n = 1000,
                                      T = 1000 (200 with --quick), batches of 100. Full-batch runs of
                                      both are reported too (adjoint_over_training_runs).
    autodiff_over_adjoint             autograd through the training loop / the adjoint, same run
    softmax_hessian_dgemm_fraction    the softmax Hessian's rate (flops it needs: symmetric rank-n
                                      updates) over a same-size dgemm's, same run (target >= 0.25)
    closed_form_over_unavoidable      hessian_influence / (one Hessian + one LU at its size) (target <= 2)
    training_step_over_gemv           full-batch logistic SAM step / the four GEMVs over X its two
                                      gradients need, n = 1e4, d = 500 (target <= 2)
    loo_block_speedup                 leave-one-out replays of 64 points one at a time / in blocks, one
                                      process (target >= 10)
    loo_parallel_speedup              leave-one-out of all n points in blocks, 1 process / 2 (target >= 1.6)
    lds_bank_block_speedup            a bank of 100 re-solved roots in blocks vs one re-solve at a time
                                      (benchmarks/banks.py, with the bank's cost against training)
    loo_two_process_ceiling           the same serial job run by two independent processes at once:
                                      2 × (time alone) / (time together), what the 2 cores give it
    mlp_hessian_d2000                 explicit MLP Hessian (d ≈ 2,000): autograd.hessian vs the
                                      R-operator on identity blocks vs the layer-wise assembly
                                      (refsam's MLP.hessian), with max |difference| to autograd
    scaling                           per method and axis (n, d, T): sizes, seconds, fitted log-log
                                      exponent, peak memory
The README next to this file records the numbers and the before/after of each optimisation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

# One BLAS thread unless the caller says otherwise (e.g. OPENBLAS_NUM_THREADS=2 python benchmarks/run.py).
# On a shared 2-core machine, multi-threaded OpenBLAS spins against other processes: the same Hessian
# assembly measured 0.08 s with one thread and 2.6 s with two under load. One thread keeps the ratios
# reproducible and fair between BLAS-heavy and Python-heavy methods. Must be set before NumPy loads.
BLAS_THREADS = os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", BLAS_THREADS)
os.environ.setdefault("MKL_NUM_THREADS", BLAS_THREADS)

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/banks.py beside this file

from banks import bank_markdown_rows, run_bank_benchmarks  # noqa: E402

from refsam import (  # noqa: E402  # noqa: E402
    MLP,
    SAM,
    LogisticRegression,
    Problem,
    SoftmaxRegression,
    hessian_influence,
    leave_one_out,
    leave_one_out_replay,
    make_gaussian_classification,
    replay,
    solve_fixed_point,
    train,
    trajectory_influence,
)
from refsam.influence import linearise, weight_jacobian  # noqa: E402
from refsam.models import AutogradDerivatives, MLPDerivatives  # noqa: E402
from refsam.models.base import as_columns  # noqa: E402
from refsam.tolerances import RESOLVE_TOL, rel_err  # noqa: E402


class AutogradMLP(MLP):
    """The MLP with every derivative from autograd: what any user model gets (the state before the
    MLP's hand-written derivatives). Public API only: a Model whose ``derivatives`` is the generic one."""

    def derivatives(self, theta, X, y, c=None):
        return AutogradDerivatives(self, theta, X, y, c)


class DenseJvpDerivatives(MLPDerivatives):
    """The R-operator HVP, but per-sample directional derivatives from the dense (|B|, d) per-sample
    gradient matrix instead of the forward tangent the R-operator computes anyway."""

    def hvp_and_jvp(self, V):
        V, _ = as_columns(V)
        return super().hvp_and_jvp(V)[0], self.per_sample_grads() @ V

    def jvp(self, V):
        V, _ = as_columns(V)
        return self.per_sample_grads() @ V


class DenseJvpMLP(MLP):
    def derivatives(self, theta, X, y, c=None):
        return DenseJvpDerivatives(self, theta, X, y, c)


def with_model(problem: Problem, model: MLP) -> Problem:
    """The same data, weights and λ with another implementation of the same MLP (same spec)."""
    return Problem(model, problem.X, problem.y, problem.weight_decay, problem.weights, problem.regularization)

# Sizes per mode. "full" is what the README reports; "quick" finishes in under two minutes; "tiny" is
# the smoke test's (seconds, numbers meaningless).
CONFIGS = {
    "full": dict(
        repeats=3,
        loo=dict(n=1000, p=49, m=10, k=40),
        adjoint_logistic=dict(n=1000, p=49, steps=1000, batch_size=100),
        adjoint_logistic_full_batch=dict(n=1000, p=49, steps=300, batch_size=None),
        adjoint_mlp=dict(n=1000, sizes=(20, 64, 50, 5), steps=1000, batch_size=100),
        adjoint_mlp_full_batch=dict(n=1000, sizes=(20, 64, 50, 5), steps=100, batch_size=None),
        adjoint_mlp_before_after=dict(n=1000, sizes=(20, 64, 50, 5), steps=200, batch_size=100),
        autodiff=dict(n=1000, p=49, steps=100, batch_size=100),
        hessian=dict(n=500, sizes=(16, 40, 30, 5)),
        closed_form_mlp=dict(n=500, sizes=(16, 40, 30, 5)),
        products=dict(sizes=(20, 64, 50, 5), batch_sizes=(100, 1000)),
        hardware=dict(softmax=dict(n=5000, p=100, K=10), closed_form=dict(n=5000, p=300),
                      step=dict(n=10_000, p=499, steps=20),
                      loo=dict(n=1000, p=49, steps=200, batch_size=100, k=64)),
        scaling=dict(
            base=dict(n=500, p=49, steps=200),
            n=[250, 500, 1000, 2000], p=[9, 24, 49, 99, 199], steps=[100, 200, 400, 800],
            m=[1, 10, 100, 1000],
            base_exact_checks=dict(n=100, p=9, steps=50),  # forward (n tangents) and autodiff are slow
            exact_checks=dict(n=[50, 100, 200, 400], p=[4, 9, 19, 39], steps=[25, 50, 100, 200]),
            hessian_widths=[(16, 10, 10, 5), (16, 20, 15, 5), (16, 40, 30, 5), (16, 60, 45, 5)],
            mlp_trajectory=dict(widths=[(20, 16, 12, 5), (20, 32, 25, 5), (20, 64, 50, 5), (20, 128, 100, 5)],
                                n=1000, steps=200, batch_size=100),
            loo_k=5,
        ),
    ),
    "quick": dict(
        repeats=3,
        loo=dict(n=1000, p=49, m=10, k=10),
        adjoint_logistic=dict(n=1000, p=49, steps=1000, batch_size=100),
        adjoint_logistic_full_batch=dict(n=1000, p=49, steps=100, batch_size=None),
        adjoint_mlp=dict(n=1000, sizes=(20, 64, 50, 5), steps=200, batch_size=100),
        adjoint_mlp_full_batch=dict(n=1000, sizes=(20, 64, 50, 5), steps=20, batch_size=None),
        adjoint_mlp_before_after=dict(n=1000, sizes=(20, 64, 50, 5), steps=50, batch_size=100),
        autodiff=dict(n=1000, p=49, steps=30, batch_size=100),
        hessian=dict(n=200, sizes=(16, 40, 30, 5)),
        closed_form_mlp=dict(n=200, sizes=(16, 20, 15, 5)),
        products=dict(sizes=(20, 64, 50, 5), batch_sizes=(100, 1000)),
        hardware=dict(softmax=dict(n=5000, p=100, K=10), closed_form=dict(n=5000, p=300),
                      step=dict(n=10_000, p=499, steps=10),
                      loo=dict(n=1000, p=49, steps=100, batch_size=100, k=64)),
        scaling=dict(
            base=dict(n=300, p=24, steps=100),
            n=[150, 300, 600], p=[12, 24, 49], steps=[50, 100, 200],
            m=[1, 10, 100],
            base_exact_checks=dict(n=60, p=5, steps=30),
            exact_checks=dict(n=[30, 60, 120], p=[3, 5, 10], steps=[15, 30, 60]),
            hessian_widths=[(16, 10, 10, 5), (16, 20, 15, 5), (16, 40, 30, 5)],
            mlp_trajectory=dict(widths=[(20, 16, 12, 5), (20, 32, 25, 5), (20, 64, 50, 5)],
                                n=1000, steps=50, batch_size=100),
            loo_k=3,
        ),
    ),
    "tiny": dict(
        repeats=1,
        loo=dict(n=60, p=4, m=2, k=2),
        adjoint_logistic=dict(n=60, p=4, steps=20, batch_size=10),
        adjoint_logistic_full_batch=dict(n=60, p=4, steps=10, batch_size=None),
        adjoint_mlp=dict(n=60, sizes=(4, 6, 3), steps=10, batch_size=10),
        adjoint_mlp_full_batch=dict(n=60, sizes=(4, 6, 3), steps=5, batch_size=None),
        adjoint_mlp_before_after=dict(n=60, sizes=(4, 6, 3), steps=5, batch_size=10),
        autodiff=dict(n=60, p=4, steps=5, batch_size=10),
        hessian=dict(n=20, sizes=(3, 5, 4, 3)),
        closed_form_mlp=dict(n=20, sizes=(3, 5, 4, 3)),
        products=dict(sizes=(4, 6, 3), batch_sizes=(10,)),
        hardware=dict(softmax=dict(n=200, p=5, K=3), closed_form=dict(n=100, p=5),
                      step=dict(n=200, p=5, steps=3), loo=dict(n=40, p=4, steps=5, batch_size=10, k=8)),
        scaling=dict(
            base=dict(n=60, p=4, steps=10),
            n=[40, 60], p=[4, 6], steps=[5, 10],
            m=[1, 4],
            base_exact_checks=dict(n=60, p=4, steps=5),
            exact_checks=dict(n=[40, 60], p=[4, 6], steps=[3, 5]),
            hessian_widths=[(3, 3, 2), (3, 5, 2)],
            mlp_trajectory=dict(widths=[(4, 3, 3), (4, 6, 3)], n=60, steps=5, batch_size=10),
            loo_k=1,
        ),
    ),
}

WEIGHT_DECAY = 1e-2  # λ (decoupled): makes the SAM root isolated for logistic regression (contract §3)
RHO = 0.05  # ρ, SAM rule
LR_LOGISTIC = 0.5
LR_MLP = 0.1


# -- measuring -------------------------------------------------------------------------------------------

def best_time(fn, repeats: int) -> float:
    """Minimum wall time of ``fn()`` over ``repeats`` calls, seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def paired_best_times(fn_a, fn_b, repeats: int) -> tuple[float, float]:
    """Best wall times of two functions timed alternately (A, B, A, B, …), so load drifts hit both."""
    best_a = best_b = float("inf")
    for _ in range(repeats):
        best_a = min(best_a, best_time(fn_a, 1))
        best_b = min(best_b, best_time(fn_b, 1))
    return best_a, best_b


def round_robin_best_times(fns: dict, repeats: int) -> dict:
    """Best wall time of each function in ``fns``, timed in turn (A, B, C, A, B, C, …)."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            best[name] = min(best[name], best_time(fn, 1))
    return best


def peak_memory(fn) -> int:
    """Peak bytes allocated (Python and NumPy) while ``fn()`` runs, by tracemalloc."""
    tracemalloc.start()
    try:
        fn()
        return int(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def loglog_exponent(sizes, seconds) -> float:
    """Slope of log(seconds) against log(size), least squares: cost ≈ C · size^slope."""
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


# -- problems --------------------------------------------------------------------------------------------

def logistic_problem(n: int, p: int, seed: int = 0):
    """Logistic regression on Gaussian clusters with 5% flipped labels; d = p + 1; one held-out set."""
    X, y, _ = make_gaussian_classification(n + 20, p, 2, separation=1.0, flip_fraction=0.05, seed=seed)
    problem = Problem(LogisticRegression(), X[:n], y[:n], weight_decay=WEIGHT_DECAY)
    return problem, X[n:], y[n:]


def mlp_problem(n: int, sizes, seed: int = 0):
    """A tanh MLP on Gaussian clusters (sizes[-1] classes), 5% flipped labels; one held-out set."""
    X, y, _ = make_gaussian_classification(n + 20, sizes[0], sizes[-1], separation=1.0,
                                           flip_fraction=0.05, seed=seed)
    problem = Problem(MLP(sizes, "tanh"), X[:n], y[:n], weight_decay=1e-3)
    return problem, X[n:], y[n:]


def sam_root(problem: Problem, sam: SAM):
    """A verified SAM root: a full-batch SAM run as the warm start, then the root solver."""
    warm = train(problem, sam, LR_LOGISTIC, 200).theta_final
    return solve_fixed_point(problem, sam, warm).theta


def one_at_a_time_leave_one_out(problem: Problem, sam: SAM, theta_hat, X_test, y_test, indices):
    """Δ test losses when each point of ``indices`` is removed, one re-solve (solve_fixed_point, warm
    at θ̂, to RESOLVE_TOL) per point: the brute force a user without influence functions runs."""
    base = problem.model.losses(theta_hat, X_test, y_test)
    rows = []
    for j in indices:
        weights = np.ones(problem.n)
        weights[j] = 0.0
        root = solve_fixed_point(problem, sam, theta_hat, tol=RESOLVE_TOL, weights=weights).theta
        rows.append(problem.model.losses(root, X_test, y_test) - base)
    return np.array(rows)


# -- 1. closed form vs brute-force leave-one-out ----------------------------------------------------------

def bench_closed_form_vs_loo(n: int, p: int, m: int, k: int, repeats: int) -> dict:
    """All-n closed-form influence on m test losses vs re-solving the root n times (w_j = 0), one
    weight vector at a time — what a user without influence functions would run (solve_fixed_point per
    point, warm-started at θ̂, to the ground truth's RESOLVE_TOL).

    The one-at-a-time re-solves are timed on the first k training points and extrapolated linearly to
    all n (each re-solve is independent and costs about the same). refsam's own ground truth,
    ``leave_one_out``, re-solves each chunk of points as one block (the chord method,
    ``resolve.resolve_block``): timed on all n, it gives ``resolve_block_speedup``.
    """
    problem, X_test, y_test = logistic_problem(n, p)
    sam = SAM(RHO)
    theta_hat = sam_root(problem, sam)
    indices = np.arange(k)
    closed, loo, block = {}, {}, {}

    def run_closed():
        closed["I"] = hessian_influence(problem, sam, theta_hat, X_test, y_test)

    def run_loo():
        loo["delta"] = one_at_a_time_leave_one_out(problem, sam, theta_hat, X_test, y_test, indices)

    def run_block():
        block["delta"] = leave_one_out(problem, sam, theta_hat, X_test, y_test)

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


# -- 2. adjoint vs training ---------------------------------------------------------------------------------

def bench_adjoint_over_training(problem, X_test, y_test, lr, steps, batch_size, repeats) -> dict:
    """(trajectory adjoint for all n, one test loss) / (the SAM training run that recorded it)."""
    sam = SAM(RHO)
    run = {}

    def run_training():
        run["trajectory"] = train(problem, sam, lr, steps, batch_size=batch_size, seed=0)

    run_training()

    def run_adjoint():
        trajectory_influence(problem, run["trajectory"], X_test[:1], y_test[:1], "adjoint")

    t_train, t_adjoint = paired_best_times(run_training, run_adjoint, repeats)
    return {
        "model": problem.model.name, "n": problem.n, "d": problem.d, "steps": steps,
        "batch_size": batch_size, "n_test": 1,
        "training_seconds": t_train, "adjoint_seconds": t_adjoint, "ratio": t_adjoint / t_train,
    }


def bench_adjoint_mlp_before_after(n, sizes, steps, batch_size, repeats) -> dict:
    """The MLP adjoint / training ratio along the optimisations (same run, timed round-robin):

    generic_autograd_hvp   the generic per-batch path with autograd HVPs and per-sample directional
                           derivatives from the dense (|B|, d) per-sample gradient matrix (the start)
    generic_r_operator     the same path with the R-operator ``MLP.hvp``
    current                refsam as it is (its MLP fast path: one shared forward/backward pass per
                           point, HVP and per-sample directional derivatives fused in one R-operator)
    """
    problem, X_test, y_test = mlp_problem(n, sizes)
    sam = SAM(RHO)
    trajectory = train(problem, sam, LR_MLP, steps, batch_size=batch_size, seed=0)

    def adjoint(on=problem):
        return lambda: trajectory_influence(on, trajectory, X_test[:1], y_test[:1], "adjoint")

    sizes_ = problem.model.sizes
    variants = {"training": lambda: train(problem, sam, LR_MLP, steps, batch_size=batch_size, seed=0),
                "current": adjoint(),
                "generic_r_operator": adjoint(with_model(problem, DenseJvpMLP(sizes_))),
                "generic_autograd_hvp": adjoint(with_model(problem, AutogradMLP(sizes_)))}
    outputs = {name: fn() for name, fn in variants.items() if name != "training"}
    seconds = round_robin_best_times(variants, repeats)
    reference = outputs["current"]
    return {
        "model": "mlp", "n": n, "d": problem.d, "steps": steps, "batch_size": batch_size,
        "seconds": seconds,
        "over_training": {k: t / seconds["training"] for k, t in seconds.items()},
        "max_rel_diff_to_current": {k: float(np.max(np.abs(v - reference)) / np.max(np.abs(reference)))
                                    for k, v in outputs.items()},
    }


def bench_autodiff_over_adjoint(n, p, steps, batch_size, repeats) -> dict:
    """Autograd through the whole training loop (the independent oracle) / the adjoint, one test loss."""
    problem, X_test, y_test = logistic_problem(n, p)
    trajectory = train(problem, SAM(RHO), LR_LOGISTIC, steps, batch_size=batch_size, seed=0)
    out = {}

    def run(method):
        out[method] = trajectory_influence(problem, trajectory, X_test[:1], y_test[:1], method)

    t_adjoint, t_autodiff = paired_best_times(lambda: run("adjoint"), lambda: run("autodiff"), repeats)
    error = np.max(np.abs(out["autodiff"] - out["adjoint"])) / np.max(np.abs(out["autodiff"]))
    return {
        "model": "logistic", "n": n, "d": problem.d, "steps": steps, "batch_size": batch_size,
        "adjoint_seconds": t_adjoint, "autodiff_seconds": t_autodiff, "ratio": t_autodiff / t_adjoint,
        "rel_err_adjoint_vs_autodiff": float(error),
    }


# -- 3. the MLP Hessian -------------------------------------------------------------------------------------

def hessian_by_hvp_blocks(model: MLP, theta, X, y, c, block: int = 256) -> np.ndarray:
    """The intermediate approach: the batched R-operator HVP applied to blocks of the identity."""
    d = theta.shape[0]
    H = np.empty((d, d))
    at = model.at(theta, X, y, c)
    for lo in range(0, d, block):
        hi = min(d, lo + block)
        E = np.zeros((d, hi - lo))
        E[np.arange(lo, hi), np.arange(hi - lo)] = 1.0
        H[:, lo:hi] = at.hvp(E)
    return 0.5 * (H + H.T)


def bench_mlp_hessian(n: int, sizes, repeats: int, with_autograd: bool = True) -> dict:
    """Explicit Hessian of F = (1/n) Σ ℓ_i for a tanh MLP: three exact approaches, timed and compared."""
    problem, _, _ = mlp_problem(n, sizes)
    model = problem.model
    theta = problem.init_params(1) + 0.1 * np.random.default_rng(1).standard_normal(problem.d)
    X, y, c = problem.X, problem.y, np.full(n, 1.0 / n)
    results, seconds = {}, {}
    approaches = {
        "layerwise": lambda: model.hessian(theta, X, y, c),  # refsam's MLP.hessian
        "hvp_blocks": lambda: hessian_by_hvp_blocks(model, theta, X, y, c),
    }
    if with_autograd:
        approaches["autograd"] = lambda: AutogradDerivatives(model, theta, X, y, c).hessian()  # autograd
    seconds = round_robin_best_times(
        {name: (lambda fn=fn, name=name: results.__setitem__(name, fn())) for name, fn in approaches.items()},
        repeats)
    reference = results.get("autograd", results["hvp_blocks"])
    out = {
        "n": n, "d": problem.d, "sizes": list(sizes), "seconds": seconds,
        "reference": "autograd" if with_autograd else "hvp_blocks",
        "max_abs_diff": {name: float(np.max(np.abs(H - reference))) for name, H in results.items()},
        "max_abs_entry": float(np.max(np.abs(reference))),
    }
    base = seconds.get("autograd", seconds["hvp_blocks"])
    out["speedup"] = {name: base / s for name, s in seconds.items()}
    return out


def bench_closed_form_mlp(n: int, sizes, repeats: int) -> dict:
    """Where the closed form's time goes for an MLP with d ≈ 2,000: its parts, timed one by one.

    The cost does not depend on whether θ is a root, so θ is a perturbed initialisation and the
    root check is relaxed (``on_unverified="warn"``, warning silenced); the numbers are costs only.
    """
    problem, X_test, y_test = mlp_problem(n, sizes)
    sam = SAM(RHO)
    theta = problem.init_params(1) + 0.1 * np.random.default_rng(1).standard_normal(problem.d)
    lin = linearise(problem, sam, theta)
    autograd_problem = with_model(problem, AutogradMLP(problem.model.sizes))
    parts = {
        "hessian_influence_total": lambda: hessian_influence(problem, sam, theta, X_test[:1], y_test[:1],
                                                             on_unverified="warn"),
        "hessian_influence_total_before (autograd Hessians)": lambda: hessian_influence(
            autograd_problem, sam, theta, X_test[:1], y_test[:1], on_unverified="warn"),
        "two_hessians": lambda: (problem.hessian(theta), problem.hessian(lin.w_hat)),
        "linearise (2 Hessians + dense d^3 products)": lambda: linearise(problem, sam, theta),
        "cond_by_svd": lambda: np.linalg.cond(lin.jacobian),
        "lu_factor": lambda: scipy.linalg.lu_factor(lin.jacobian),
        "weight_jacobian": lambda: weight_jacobian(problem, lin),
        "eigvals_for_spectral_radius (diagnostics only)": lambda: np.linalg.eigvals(lin.jacobian),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seconds = {name: best_time(fn, repeats) for name, fn in parts.items()}
    return {"n": n, "d": problem.d, "sizes": list(sizes), "seconds": seconds}


# -- 3b. the derivative products the methods are built from -------------------------------------------------

def _product_calls(sizes, batch: int):
    """{name: argument-free call} for one batch of a tanh MLP; the fused fast paths if present."""
    problem, _, _ = mlp_problem(batch, sizes)
    model, X, y = problem.model, problem.X, problem.y
    theta = problem.init_params(0)
    c = np.full(batch, 1.0 / batch)
    v = np.random.default_rng(0).standard_normal(problem.d)
    calls = {
        "grad": lambda: model.grad(theta, X, y, c),
        "hvp_autograd": lambda: AutogradDerivatives(model, theta, X, y, c).hvp(v),
        "hvp_r_operator": lambda: model.hvp(theta, X, y, c, v),
        "jvp_per_sample_grads_matrix": lambda: model.per_sample_grads(theta, X, y) @ v,
        "jvp_forward_tangent": lambda: model.at(theta, X, y, c).jvp(v[:, None]),
        "hvp_and_jvp_fused": lambda: model.at(theta, X, y, c).hvp_and_jvp(v[:, None]),
    }
    return problem.d, calls


def bench_derivative_products(sizes, batch_sizes, repeats) -> dict:
    """Per-call cost of the MLP's derivative products, before (autograd, dense per-sample gradients)
    and after (R-operator, forward tangents), each also in units of one batch gradient."""
    out = {}
    for batch in batch_sizes:
        d, calls = _product_calls(sizes, batch)
        seconds = {name: best_time(fn, max(repeats, 5)) for name, fn in calls.items()}
        out[f"batch_{batch}"] = {"d": d, "batch": batch, "seconds": seconds,
                                 "in_gradients": {k: t / seconds["grad"] for k, t in seconds.items()}}
    return out


# -- 4. scaling -----------------------------------------------------------------------------------------

def _scaling_row(axis, sizes, seconds, memory) -> dict:
    return {"axis": axis, "sizes": list(sizes), "seconds": list(seconds), "peak_bytes": list(memory),
            "exponent": loglog_exponent(sizes, seconds) if len(sizes) > 1 else float("nan")}


def _measure(fn, repeats):
    return best_time(fn, repeats), peak_memory(fn)


def _closed_form_and_loo_runs(problem, sam, X_test, y_test, k):
    """(closed form for all n, leave-one-out re-solves of the first k points) as argument-free calls."""
    theta_hat = sam_root(problem, sam)
    return (lambda: hessian_influence(problem, sam, theta_hat, X_test, y_test),
            lambda: one_at_a_time_leave_one_out(problem, sam, theta_hat, X_test, y_test, np.arange(k)))


def _trajectory_runs(problem, sam, X_test, y_test, steps, methods):
    """{method: argument-free call}: training itself and each influence method on its recorded run."""
    trajectory = train(problem, sam, LR_LOGISTIC, steps)
    runs = {"training": lambda: train(problem, sam, LR_LOGISTIC, steps)}
    for method in methods:
        runs[method] = (lambda m=method:
                        trajectory_influence(problem, trajectory, X_test[:1], y_test[:1], m))
    return runs


def scaling_closed_form_and_loo(cfg, repeats) -> dict:
    """Closed form (all n) and extrapolated brute-force LOO against n and d (logistic, full batch)."""
    base = cfg["base"]
    sam = SAM(RHO)
    table = {"closed_form": [], "loo_all_n": []}
    for axis, values in (("n", cfg["n"]), ("d", cfg["p"])):
        closed, loo, closed_mem, loo_mem, sizes = [], [], [], [], []
        for v in values:
            n, p = (v, base["p"]) if axis == "n" else (base["n"], v)
            problem, X_test, y_test = logistic_problem(n, p)
            run_closed, run_loo = _closed_form_and_loo_runs(problem, sam, X_test, y_test, cfg["loo_k"])
            t, mem = _measure(run_closed, repeats)
            closed.append(t)
            closed_mem.append(mem)
            t, mem = _measure(run_loo, 1)
            loo.append(t / cfg["loo_k"] * n)
            loo_mem.append(mem)
            sizes.append(v if axis == "n" else problem.d)
        table["closed_form"].append(_scaling_row(axis, sizes, closed, closed_mem))
        table["loo_all_n"].append(_scaling_row(axis, sizes, loo, loo_mem))
    return table


def scaling_test_functions(base, ms, repeats) -> dict:
    """The closed form, the adjoint and TracIn against m, the number of test losses (the base problem
    and run; test points drawn from the same clusters): {method: one scaling row on axis "m"}. The
    closed form's m test functions are m right-hand sides of one LU and columns of one product with
    ∂G/∂w; the adjoint carries them as the m columns of its adjoint block; TracIn takes m test
    gradients at every step."""
    sam = SAM(RHO)
    problem, _, _ = logistic_problem(base["n"], base["p"])
    X, y, _ = make_gaussian_classification(max(ms), base["p"], 2, separation=1.0, seed=7)
    theta_hat = sam_root(problem, sam)
    run = train(problem, sam, LR_LOGISTIC, base["steps"])
    calls = {"closed_form": lambda m: hessian_influence(problem, sam, theta_hat, X[:m], y[:m]),
             "adjoint": lambda m: trajectory_influence(problem, run, X[:m], y[:m]),
             "tracin": lambda m: trajectory_influence(problem, run, X[:m], y[:m], "tracin")}
    rows = {}
    for method, call in calls.items():
        seconds, memory = zip(*[_measure(lambda m=m, call=call: call(m), repeats) for m in ms])
        rows[method] = _scaling_row("m", ms, seconds, memory)
    return rows


def scaling_trajectory(base, axes, methods, repeats) -> dict:
    """``methods`` (training and trajectory-influence methods) against n, d and T (logistic, full batch).

    ``base`` = dict(n, p, steps); ``axes`` = dict(n=[…], p=[…], steps=[…]) varied one at a time.
    """
    sam = SAM(RHO)
    table = {name: [] for name in methods}
    for axis, key in (("n", "n"), ("d", "p"), ("T", "steps")):
        rows = {name: ([], []) for name in methods}
        sizes = []
        for v in axes[key]:
            size = dict(base, **{key: v})
            problem, X_test, y_test = logistic_problem(size["n"], size["p"])
            runs = _trajectory_runs(problem, sam, X_test, y_test, size["steps"],
                                    [m for m in methods if m != "training"])
            for name in methods:
                t, mem = _measure(runs[name], repeats)
                rows[name][0].append(t)
                rows[name][1].append(mem)
            sizes.append({"n": problem.n, "d": problem.d, "T": size["steps"]}[axis])
        for name in methods:
            table[name].append(_scaling_row(axis, sizes, *rows[name]))
    return table


def scaling_mlp_trajectory(widths, n, steps, batch_size, repeats) -> dict:
    """Training and the adjoint (one test loss) for tanh MLPs of growing width, i.e. against d."""
    sam = SAM(RHO)
    rows = {"training_mlp": ([], []), "adjoint_mlp": ([], [])}
    sizes = []
    for layer_sizes in widths:
        problem, X_test, y_test = mlp_problem(n, layer_sizes)
        trajectory = train(problem, sam, LR_MLP, steps, batch_size=batch_size, seed=0)
        runs = {
            "training_mlp": lambda p=problem: train(p, sam, LR_MLP, steps, batch_size=batch_size, seed=0),
            "adjoint_mlp": lambda p=problem, tr=trajectory, X=X_test, y=y_test:
                trajectory_influence(p, tr, X[:1], y[:1], "adjoint"),
        }
        for name, fn in runs.items():
            t, mem = _measure(fn, repeats)
            rows[name][0].append(t)
            rows[name][1].append(mem)
        sizes.append(problem.d)
    return {name: [_scaling_row("d", sizes, *row)] for name, row in rows.items()}


def scaling_mlp_hessian(cfg, n, repeats) -> dict:
    """MLP Hessian (layer-wise assembly) against d, at fixed n."""
    seconds, memory, sizes = [], [], []
    for widths in cfg["hessian_widths"]:
        problem, _, _ = mlp_problem(n, widths)
        theta = problem.init_params(1)
        t, mem = _measure(lambda problem=problem, theta=theta: problem.hessian(theta), repeats)
        seconds.append(t)
        memory.append(mem)
        sizes.append(problem.d)
    return {"mlp_hessian_layerwise": [_scaling_row("d", sizes, seconds, memory)]}


# -- driver ---------------------------------------------------------------------------------------------

# -- 8. against the hardware: each path over what its arithmetic needs, in the same run -------------------

def _gemm_rate(n: int, d: int, repeats: int) -> float:
    """FLOP/s of a dgemm AᵀB, A and B (n, d), on this machine now (2·n·d² flops)."""
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    return 2.0 * n * d * d / best_time(lambda: A.T @ B, repeats)


def bench_softmax_hessian_rate(n: int, p: int, K: int, repeats: int) -> dict:
    """SoftmaxRegression's Hessian: its rate over the flops it needs (symmetric rank-n updates: n·d(d+1)
    for MᵀCM plus K·n·q(q+1) for the diagonal blocks, q = p + 1, d = qK) against a same-size dgemm's."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((n, p)), rng.integers(0, K, n)
    problem = Problem(SoftmaxRegression(K), X, y, weight_decay=WEIGHT_DECAY)
    theta = 0.1 * rng.standard_normal(problem.d)
    at = problem.at(theta)
    q, d = p + 1, problem.d
    seconds = best_time(at.hessian, repeats)
    flops = n * d * (d + 1) + K * n * q * (q + 1)
    rate, dgemm = flops / seconds, _gemm_rate(n, d, repeats)
    return {"n": n, "d": d, "seconds": seconds, "gflops": rate / 1e9, "dgemm_gflops": dgemm / 1e9,
            "fraction_of_dgemm": rate / dgemm}


def bench_closed_form_over_unavoidable(n: int, p: int, repeats: int) -> dict:
    """hessian_influence (1 test loss) over one Hessian build plus one LU at its size — the issue's
    reference for "the parts no closed form can skip" — and over what the full SAM variant cannot skip:
    its two Hessians (at θ̂ and at ŵ = θ̂ + ε) plus one LU. The frozen variant needs one Hessian (at ŵ).
    All timed in turn in one run."""
    problem, X_test, y_test = logistic_problem(n, p)
    sam = SAM(RHO)
    theta_hat = sam_root(problem, sam)
    w_hat = theta_hat + sam.perturbation(theta_hat, problem.grad(theta_hat))
    eye = WEIGHT_DECAY * np.eye(problem.d)

    def one_hessian_one_lu():
        scipy.linalg.lu_factor(problem.hessian(theta_hat) + eye)

    def two_hessians_one_lu():
        problem.hessian(theta_hat)
        scipy.linalg.lu_factor(problem.hessian(w_hat) + eye)

    best = round_robin_best_times({
        "full": lambda: hessian_influence(problem, sam, theta_hat, X_test[:1], y_test[:1]),
        "frozen": lambda: hessian_influence(problem, sam, theta_hat, X_test[:1], y_test[:1], "frozen"),
        "one_hessian_one_lu": one_hessian_one_lu, "two_hessians_one_lu": two_hessians_one_lu}, repeats)
    unavoidable = best["one_hessian_one_lu"]
    return {"n": n, "d": problem.d, "closed_form_seconds": best["full"], "unavoidable_seconds": unavoidable,
            "two_hessians_one_lu_seconds": best["two_hessians_one_lu"], "frozen_seconds": best["frozen"],
            "ratio": best["full"] / unavoidable,
            "floor_ratio": best["two_hessians_one_lu"] / unavoidable,
            "over_its_hessians": best["full"] / best["two_hessians_one_lu"],
            "frozen_ratio": best["frozen"] / unavoidable}


def bench_training_step_over_gemv(n: int, p: int, steps: int, repeats: int) -> dict:
    """Full-batch logistic SAM training per step over the four GEMVs over X̃ its two gradients need
    (x̃θ and x̃ᵀr, at θ and at θ + ε)."""
    problem, _, _ = logistic_problem(n, p)
    sam = SAM(RHO)
    design = problem.design
    theta, r = np.full(problem.d, 0.01), np.full(n, 0.5)

    def four_gemvs():
        for _ in range(2):
            design @ theta
            design.T @ r

    t_train = best_time(lambda: train(problem, sam, LR_LOGISTIC, steps), repeats) / steps
    t_gemv = best_time(four_gemvs, repeats)
    return {"n": n, "d": problem.d, "seconds_per_step": t_train, "four_gemv_seconds": t_gemv,
            "ratio": t_train / t_gemv}


def bench_loo_block_and_parallel(n: int, p: int, steps: int, batch_size: int, k: int, repeats: int) -> dict:
    """Leave-one-out replays of k points: one at a time (k replays) vs in blocks (the default), both on
    one process; then all n points in blocks on 2 processes vs 1 (a pool's start-up is amortised over
    real work). Results checked equal (blocks to RTOL_REORDERED, processes bit for bit)."""
    problem, X_test, y_test = logistic_problem(n, p)
    run = train(problem, SAM(RHO), LR_LOGISTIC, steps, batch_size=batch_size, seed=0)
    indices = np.arange(k)
    out = {}

    def one_at_a_time():
        rows = []
        base = problem.model.losses(run.theta_final, X_test, y_test)
        for j in indices:
            w = problem.weights.copy()
            w[j] = 0.0
            theta_T = replay(problem, run, weights=w).theta_final
            rows.append(problem.model.losses(theta_T, X_test, y_test) - base)
        out["single"] = np.array(rows)

    def blocks():
        out["block"] = leave_one_out_replay(problem, run, X_test, y_test, indices)

    def all_points_one_process():
        out["all"] = leave_one_out_replay(problem, run, X_test, y_test)

    def all_points_two_processes():
        out["parallel"] = leave_one_out_replay(problem, run, X_test, y_test, n_jobs=2)

    t_single, t_block = paired_best_times(one_at_a_time, blocks, repeats)
    # the 2-process ratio is the noisiest here (a burst of load on either core): at least 5 pairs
    t_all, t_parallel = paired_best_times(all_points_one_process, all_points_two_processes, max(repeats, 5))
    together = min(_two_independent_runs(all_points_one_process) for _ in range(max(repeats, 5)))
    err = float(np.max(np.abs(out["block"] - out["single"])) / np.max(np.abs(out["single"])))
    return {"n": n, "d": problem.d, "steps": steps, "k": k, "one_at_a_time_seconds": t_single,
            "block_seconds": t_block, "all_points_one_process_seconds": t_all,
            "two_process_seconds": t_parallel,
            "loo_block_speedup": t_single / t_block, "loo_parallel_speedup": t_all / t_parallel,
            "two_independent_processes_seconds": together,
            "two_process_ceiling": 2.0 * t_all / together,
            "rel_err_block_vs_single": err,
            "parallel_identical": bool(np.array_equal(out["parallel"], out["all"]))}


def _timed_after(barrier, job, results) -> None:
    barrier.wait()
    start = time.perf_counter()
    job()
    results.put(time.perf_counter() - start)


def _two_independent_runs(job) -> float:
    """Wall time of ``job`` when two forked processes run it at the same moment (the slower of the two):
    what two cores of this machine give a workload, with no pool, no pickling and no shared work. Two
    such runs in the time of one would be a ceiling of 2; a shared or throttled machine gives less."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_timed_after, args=(barrier, job, results)) for _ in range(2)]
    for w in workers:
        w.start()
    times = [results.get() for _ in workers]
    for w in workers:
        w.join()
    return max(times)


def run_benchmarks(mode: str = "full", log=print) -> dict:
    """Run every benchmark at the sizes of ``mode`` ("full", "quick" or "tiny"); returns the JSON dict."""
    cfg = CONFIGS[mode]
    repeats = cfg["repeats"]
    start = time.perf_counter()
    results = {"mode": mode, "machine": {"python": platform.python_version(), "numpy": np.__version__,
                                         "processor": platform.processor() or platform.machine(),
                                         "cpu_count": os.cpu_count(), "blas_threads": BLAS_THREADS,
                                         "load_average_at_start": list(os.getloadavg())}}

    log(f"[{time.perf_counter() - start:6.1f} s] closed form vs leave-one-out re-solves ...")
    loo = bench_closed_form_vs_loo(**cfg["loo"], repeats=repeats)
    results["closed_form_vs_loo"] = loo
    results["closed_form_vs_loo_speedup"] = loo["speedup"]
    results["resolve_block_speedup"] = loo["resolve_block_speedup"]

    log(f"[{time.perf_counter() - start:6.1f} s] adjoint vs training ...")
    adjoint = {}
    for key, lr in (("adjoint_logistic", LR_LOGISTIC), ("adjoint_logistic_full_batch", LR_LOGISTIC)):
        c = cfg[key]
        problem, X_test, y_test = logistic_problem(c["n"], c["p"])
        adjoint[key] = bench_adjoint_over_training(problem, X_test, y_test, lr, c["steps"],
                                                   c["batch_size"], repeats)
    for key in ("adjoint_mlp", "adjoint_mlp_full_batch"):
        c = cfg[key]
        problem, X_test, y_test = mlp_problem(c["n"], c["sizes"])
        adjoint[key] = bench_adjoint_over_training(problem, X_test, y_test, LR_MLP, c["steps"],
                                                   c["batch_size"], repeats)
    results["adjoint_over_training_runs"] = adjoint
    results["adjoint_over_training_logistic"] = adjoint["adjoint_logistic"]["ratio"]
    results["adjoint_over_training_mlp"] = adjoint["adjoint_mlp"]["ratio"]
    results["adjoint_over_training"] = max(results["adjoint_over_training_logistic"],
                                           results["adjoint_over_training_mlp"])

    log(f"[{time.perf_counter() - start:6.1f} s] MLP adjoint before/after ...")
    results["adjoint_mlp_before_after"] = bench_adjoint_mlp_before_after(**cfg["adjoint_mlp_before_after"],
                                                                         repeats=repeats)

    log(f"[{time.perf_counter() - start:6.1f} s] autodiff vs adjoint ...")
    autodiff = bench_autodiff_over_adjoint(**cfg["autodiff"], repeats=repeats)
    results["autodiff_vs_adjoint"] = autodiff
    results["autodiff_over_adjoint"] = autodiff["ratio"]

    log(f"[{time.perf_counter() - start:6.1f} s] MLP Hessian ...")
    results["mlp_hessian_d2000"] = bench_mlp_hessian(**cfg["hessian"], repeats=repeats)

    log(f"[{time.perf_counter() - start:6.1f} s] closed form parts, MLP ...")
    results["closed_form_mlp_parts"] = bench_closed_form_mlp(**cfg["closed_form_mlp"], repeats=1)

    log(f"[{time.perf_counter() - start:6.1f} s] derivative products ...")
    results["derivative_products"] = bench_derivative_products(**cfg["products"], repeats=repeats)

    log(f"[{time.perf_counter() - start:6.1f} s] against the hardware ...")
    hw = cfg["hardware"]
    hardware = {
        "softmax_hessian": bench_softmax_hessian_rate(**hw["softmax"], repeats=repeats),
        "closed_form_over_unavoidable": bench_closed_form_over_unavoidable(**hw["closed_form"],
                                                                           repeats=repeats),
        "training_step_over_gemv": bench_training_step_over_gemv(**hw["step"], repeats=repeats),
        "loo": bench_loo_block_and_parallel(**hw["loo"], repeats=repeats),
    }
    results["hardware"] = hardware
    results["softmax_hessian_dgemm_fraction"] = hardware["softmax_hessian"]["fraction_of_dgemm"]
    results["closed_form_over_unavoidable"] = hardware["closed_form_over_unavoidable"]["ratio"]
    results["training_step_over_gemv"] = hardware["training_step_over_gemv"]["ratio"]
    results["loo_block_speedup"] = hardware["loo"]["loo_block_speedup"]
    results["loo_parallel_speedup"] = hardware["loo"]["loo_parallel_speedup"]
    results["loo_two_process_ceiling"] = hardware["loo"]["two_process_ceiling"]

    log(f"[{time.perf_counter() - start:6.1f} s] counterfactual banks (benchmarks/banks.py) ...")
    results.update(run_bank_benchmarks(mode, log))

    log(f"[{time.perf_counter() - start:6.1f} s] scaling ...")
    scaling = {}
    scaling.update(scaling_closed_form_and_loo(cfg["scaling"], repeats))
    sc = cfg["scaling"]
    cheap = ("training", "adjoint", "first_order", "tracin")  # the approximations cost ≈ 2 gradients/step
    scaling.update(scaling_trajectory(sc["base"], sc, cheap, repeats))
    scaling.update(scaling_trajectory(sc["base_exact_checks"], sc["exact_checks"], ("forward", "autodiff"),
                                      repeats))
    for method, row in scaling_test_functions(sc["base"], sc["m"], repeats).items():
        scaling[method].append(row)
    scaling.update(scaling_mlp_trajectory(**sc["mlp_trajectory"], repeats=repeats))
    scaling.update(scaling_mlp_hessian(cfg["scaling"], cfg["hessian"]["n"], repeats))
    results["scaling"] = scaling
    results["total_seconds"] = time.perf_counter() - start
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    return results


def format_summary(results: dict) -> str:
    """A human-readable digest of the JSON."""
    machine = results["machine"]
    lines = [f"mode={results['mode']}  total {results['total_seconds']:.1f} s  (BLAS threads: "
             f"{machine['blas_threads']}; load average {machine['load_average_at_start'][0]:.1f} at start, "
             f"{machine['load_average_at_end'][0]:.1f} at end, {machine['cpu_count']} CPUs)"]
    loo = results["closed_form_vs_loo"]
    lines.append(f"closed_form_vs_loo_speedup = {results['closed_form_vs_loo_speedup']:.0f}x  "
                 f"(closed form {loo['closed_form_seconds'] * 1e3:.1f} ms vs LOO "
                 f"{loo['loo_seconds_all_n_extrapolated']:.1f} s; {loo['note']}; "
                 f"Pearson(−I, actual) = {loo['pearson_prediction_vs_actual']:.4f})  target >= 1000; "
                 f"refsam's block re-solves: {loo['resolve_block_speedup']:.0f}x the one-at-a-time")
    for key, run in results["adjoint_over_training_runs"].items():
        lines.append(f"{key}: n={run['n']} d={run['d']} T={run['steps']} batch={run['batch_size']}: "
                     f"training {run['training_seconds']:.3f} s, adjoint {run['adjoint_seconds']:.3f} s, "
                     f"ratio {run['ratio']:.2f}")
    lines.append(f"adjoint_over_training = {results['adjoint_over_training']:.2f}  (logistic "
                 f"{results['adjoint_over_training_logistic']:.2f}, MLP "
                 f"{results['adjoint_over_training_mlp']:.2f})  target <= 3")
    ba = results["adjoint_mlp_before_after"]
    lines.append(f"MLP adjoint / training before → after (d={ba['d']}, T={ba['steps']}, "
                 f"batch {ba['batch_size']}): "
                 + ", ".join(f"{k} {v:.2f}" for k, v in ba["over_training"].items()))
    lines.append(f"autodiff_over_adjoint = {results['autodiff_over_adjoint']:.1f}  (rel. err "
                 f"{results['autodiff_vs_adjoint']['rel_err_adjoint_vs_autodiff']:.1e})")
    h = results["mlp_hessian_d2000"]
    times = ", ".join(f"{k} {v:.3f} s" for k, v in h["seconds"].items())
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in h["max_abs_diff"].items())
    lines.append(f"mlp_hessian_d2000 (d={h['d']}, n={h['n']}): {times}; max |diff| vs {h['reference']}: "
                 f"{diffs}")
    for key, row in results["derivative_products"].items():
        costs = ", ".join(f"{k} {v:.2f}" for k, v in row["in_gradients"].items())
        lines.append(f"MLP d={row['d']} {key}, cost in gradients: {costs}")
    parts = results["closed_form_mlp_parts"]
    lines.append(f"closed form parts, MLP d={parts['d']} n={parts['n']}: "
                 + ", ".join(f"{k} {v:.2f} s" for k, v in parts["seconds"].items()))
    hw = results["hardware"]
    sh, cf = hw["softmax_hessian"], hw["closed_form_over_unavoidable"]
    st, lo = hw["training_step_over_gemv"], hw["loo"]
    lines.append(f"softmax_hessian_dgemm_fraction = {results['softmax_hessian_dgemm_fraction']:.2f}  "
                 f"(d={sh['d']}, n={sh['n']}: {sh['gflops']:.1f} GFLOP/s vs dgemm "
                 f"{sh['dgemm_gflops']:.1f})  target >= 0.25")
    lines.append(f"closed_form_over_unavoidable = {results['closed_form_over_unavoidable']:.2f}  (logistic "
                 f"d={cf['d']}, n={cf['n']}: {cf['closed_form_seconds'] * 1e3:.1f} ms vs Hessian + LU "
                 f"{cf['unavoidable_seconds'] * 1e3:.1f} ms)  target <= 2; the two Hessians + LU the full "
                 f"variant needs: {cf['floor_ratio']:.2f}, closed form over them "
                 f"{cf['over_its_hessians']:.2f}, "
                 f"frozen variant {cf['frozen_ratio']:.2f}")
    lines.append(f"training_step_over_gemv = {results['training_step_over_gemv']:.2f}  (full-batch logistic "
                 f"n={st['n']}, d={st['d']}: {st['seconds_per_step'] * 1e3:.2f} ms/step vs four GEMVs "
                 f"{st['four_gemv_seconds'] * 1e3:.2f} ms)  target <= 2")
    lines.append(f"loo_block_speedup = {results['loo_block_speedup']:.1f}  target >= 10; "
                 f"loo_parallel_speedup = {results['loo_parallel_speedup']:.2f}  target >= 1.6  "
                 f"(k={lo['k']} points, n={lo['n']}, d={lo['d']}, T={lo['steps']}; block vs single rel. err "
                 f"{lo['rel_err_block_vs_single']:.1e}, 2 processes identical: {lo['parallel_identical']}; "
                 f"two independent processes of the serial job: {lo['two_process_ceiling']:.2f})")
    if "lds_bank_block_speedup" in results:
        lines.append(f"lds_bank_block_speedup = {results['lds_bank_block_speedup']:.1f}  target >= 5; "
                     f"bank of 100 / training: run {results['bank_over_training_run']:.2f}, root "
                     f"{results['bank_over_training_root']:.2f}")
    lines.append("scaling exponents (log-log fit):")
    for method, rows in results["scaling"].items():
        parts = [f"{row['axis']}: {row['exponent']:.2f}" for row in rows]
        lines.append(f"  {method:24s} " + ", ".join(parts))
    return "\n".join(lines)


def _fmt_seconds(t: float) -> str:
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def format_markdown(results: dict) -> str:
    """The README's tables, generated from a results JSON (``--markdown RESULTS.json``)."""
    out = []
    loo = results["closed_form_vs_loo"]
    adj = results["adjoint_over_training_runs"]
    ad = results["autodiff_vs_adjoint"]
    out += ["| key | value | target | setting |", "|---|---|---|---|",
            f"| `closed_form_vs_loo_speedup` | **{results['closed_form_vs_loo_speedup']:.0f}×** | ≥ 1000× | "
            f"logistic n={loo['n']}, d={loo['d']}, {loo['n_test']} test losses; closed form "
            f"{_fmt_seconds(loo['closed_form_seconds'])}, LOO {_fmt_seconds(loo['loo_seconds_per_resolve'])}"
            f" per re-solve × n = {_fmt_seconds(loo['loo_seconds_all_n_extrapolated'])} ({loo['note']}) |",
            f"| `resolve_block_speedup` | {loo['resolve_block_speedup']:.0f}× | — | refsam's leave-one-out "
            f"ground truth (chord re-solves in blocks) on all n: "
            f"{_fmt_seconds(loo['block_resolve_seconds_all_n'])} against the one-at-a-time "
            f"{_fmt_seconds(loo['loo_seconds_all_n_extrapolated'])} (rel. diff "
            f"{loo['block_vs_one_at_a_time_rel_diff']:.1e}) |",
            f"| `adjoint_over_training` | **{results['adjoint_over_training']:.2f}×** | ≤ 3× | "
            f"max of the two below |"]
    for key, name in (("adjoint_logistic", "logistic"), ("adjoint_mlp", "mlp")):
        r = adj[key]
        out.append(f"| `adjoint_over_training_{name}` | **{r['ratio']:.2f}×** | ≤ 3× | {r['model']} "
                   f"n={r['n']}, d={r['d']}, T={r['steps']}, batch {r['batch_size']}, 1 test loss: training "
                   f"{_fmt_seconds(r['training_seconds'])}, adjoint {_fmt_seconds(r['adjoint_seconds'])} |")
    out.append(f"| `autodiff_over_adjoint` | {results['autodiff_over_adjoint']:.1f}× | — | "
               f"logistic n={ad['n']}, T={ad['steps']}, batch {ad['batch_size']}; rel. err. adjoint vs "
               f"autodiff {ad['rel_err_adjoint_vs_autodiff']:.1e} |")
    hw = results.get("hardware")
    if hw is not None:
        sh, cf = hw["softmax_hessian"], hw["closed_form_over_unavoidable"]
        st, lo = hw["training_step_over_gemv"], hw["loo"]
        out += [f"| `softmax_hessian_dgemm_fraction` | **{sh['fraction_of_dgemm']:.2f}** | ≥ 0.25 | softmax "
                f"n={sh['n']}, d={sh['d']}: {sh['gflops']:.1f} GFLOP/s against a same-size dgemm's "
                f"{sh['dgemm_gflops']:.1f} |",
                f"| `closed_form_over_unavoidable` | **{cf['ratio']:.2f}×** | ≤ 2× | logistic n={cf['n']}, "
                f"d={cf['d']}: closed form {_fmt_seconds(cf['closed_form_seconds'])}, one Hessian + one LU "
                f"{_fmt_seconds(cf['unavoidable_seconds'])}; the two Hessians + one LU the full SAM variant "
                f"cannot skip: {cf['floor_ratio']:.2f}× (closed form over them "
                f"{cf['over_its_hessians']:.2f}×); frozen variant (one Hessian) {cf['frozen_ratio']:.2f}× |",
                f"| `training_step_over_gemv` | **{st['ratio']:.2f}×** | ≤ 2× | full-batch logistic "
                f"n={st['n']}, d={st['d']}: {_fmt_seconds(st['seconds_per_step'])} per SAM step, four GEMVs "
                f"{_fmt_seconds(st['four_gemv_seconds'])} |",
                f"| `loo_block_speedup` | **{lo['loo_block_speedup']:.1f}×** | ≥ 10× | {lo['k']} "
                f"leave-one-out replays, logistic n={lo['n']}, d={lo['d']}, T={lo['steps']}: one at a time "
                f"{_fmt_seconds(lo['one_at_a_time_seconds'])}, in blocks {_fmt_seconds(lo['block_seconds'])} "
                f"(rel. diff {lo['rel_err_block_vs_single']:.1e}) |",
                f"| `loo_parallel_speedup` | **{lo['loo_parallel_speedup']:.2f}×** | ≥ 1.6× | all {lo['n']} "
                f"points in blocks: 1 process {_fmt_seconds(lo['all_points_one_process_seconds'])}, "
                f"2 processes {_fmt_seconds(lo['two_process_seconds'])} "
                f"(identical: {lo['parallel_identical']}); the machine's own ceiling for this job, two "
                f"independent processes running it at once: {lo['two_process_ceiling']:.2f}× |"]
    if "lds_bank_block_speedup" in results:
        out += bank_markdown_rows(results)
    out += ["", "Adjoint (all n, one test loss) against the training run that recorded it:", "",
            "| run | model | n | d | T | batch | training | adjoint | ratio |", "|---" * 9 + "|"]
    for key, r in adj.items():
        out.append(f"| {key} | {r['model']} | {r['n']} | {r['d']} | {r['steps']} | "
                   f"{r['batch_size'] or 'full'} | {_fmt_seconds(r['training_seconds'])} | "
                   f"{_fmt_seconds(r['adjoint_seconds'])} | {r['ratio']:.2f}× |")
    ba = results["adjoint_mlp_before_after"]
    out += ["", f"MLP adjoint along the optimisations (n={ba['n']}, d={ba['d']}, T={ba['steps']}, batch "
            f"{ba['batch_size']}, one test loss; all variants give the same influence):", "",
            "| variant | time | / training | max rel. diff to current |", "|---|---|---|---|"]
    for k, t in ba["seconds"].items():
        diff = ba["max_rel_diff_to_current"].get(k)
        out.append(f"| {k} | {_fmt_seconds(t)} | {ba['over_training'][k]:.2f}× | "
                   f"{'—' if diff is None else f'{diff:.1e}'} |")
    h = results["mlp_hessian_d2000"]
    out += ["", f"MLP Hessian, tanh, sizes {tuple(h['sizes'])}, d = {h['d']}, n = {h['n']} "
            f"(largest entry {h['max_abs_entry']:.2e}):", "",
            "| approach | time | speed-up vs autograd | max abs diff vs autograd |", "|---|---|---|---|"]
    labels = {"autograd": "`autograd.hessian` (`refsam.models.AutogradDerivatives`)",
              "hvp_blocks": "R-operator HVP on blocks of 256 identity rows",
              "layerwise": "layer-wise assembly from pre-activation tangents (`MLP.hessian`)"}
    for name in ("autograd", "hvp_blocks", "layerwise"):
        if name in h["seconds"]:
            out.append(f"| {labels[name]} | {_fmt_seconds(h['seconds'][name])} | {h['speedup'][name]:.1f}× | "
                       f"{h['max_abs_diff'][name]:.1e} |")
    products = results["derivative_products"]
    names = list(next(iter(products.values()))["seconds"])
    out += ["", "MLP derivative products, tanh, d = "
            f"{next(iter(products.values()))['d']}: time per call (in units of one batch gradient):", "",
            "| batch | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row in products.values():
        out.append(f"| {row['batch']} | " + " | ".join(
            f"{_fmt_seconds(row['seconds'][k])} ({row['in_gradients'][k]:.2f})" for k in names) + " |")
    parts = results["closed_form_mlp_parts"]
    out += ["", f"Closed form for an MLP, d = {parts['d']}, n = {parts['n']}: where the time goes", "",
            "| part | time |", "|---|---|"]
    out += [f"| {k} | {_fmt_seconds(v)} |" for k, v in parts["seconds"].items()]
    out += ["", "Scaling (one axis varied, the others at the base sizes; exponent = log-log least-squares "
            "slope; peak = tracemalloc peak):", "",
            "| method | axis | sizes | times | peak memory | exponent |", "|---|---|---|---|---|---|"]
    for method, rows in results["scaling"].items():
        for row in rows:
            out.append(f"| {method} | {row['axis']} | {', '.join(map(str, row['sizes']))} | "
                       f"{', '.join(_fmt_seconds(t) for t in row['seconds'])} | "
                       f"{', '.join(f'{b / 2**20:.1f}' for b in row['peak_bytes'])} MiB | "
                       f"{row['exponent']:.2f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes; finishes in under 2 minutes")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # smoke test only
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    parser.add_argument("--markdown", metavar="RESULTS",
                        help="print the README tables from a results JSON and exit")
    args = parser.parse_args(argv)
    if args.markdown:
        print(format_markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    results = run_benchmarks(mode, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(format_summary(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
