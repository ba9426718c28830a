"""Cost of a counterfactual bank: blocks against one re-solve at a time, and against one training run.

    python benchmarks/banks.py [--quick] [--json OUT] [--update RESULTS.json]

(``benchmarks/run.py`` calls :func:`run_bank_benchmarks` too; ``--update`` merges the keys below into an
existing results file, e.g. benchmarks/results.json, leaving its other keys as they are.)

Stable JSON keys:
    lds_bank_block_speedup     a bank of K = 100 re-solved roots (subset_ratio 0.5, kind "weights") in
                               blocks of 32 (refsam.counterfactual_bank: chord steps with one LU) against
                               one re-solve at a time (solve_fixed_point warm at θ̂, to RESOLVE_TOL, as a
                               user without blocks would run it); logistic regression n = 1000, d = 200
                               (target >= 5). The one-at-a-time side is timed on k subsets and
                               extrapolated to K. The same at d = 50 and at subset_ratio 0.9 is reported
                               beside it (bank_block_speedups).
    bank_over_training_run     a bank of 100 replayed runs (kind "weights", ratio 0.5) / the training run
                               itself; logistic n = 1000, d = 50, T = 1000, batches of 100
    bank_over_training_root    a bank of 100 re-solved roots (ratio 0.5) / the full-batch training run
                               that found the warm start (T = 300), same data
Timings are the minimum over repeats of alternated runs (common.round_robin_best_times), one BLAS thread.
"""

from __future__ import annotations

import sys

import common  # noqa: F401  (first: one BLAS thread before NumPy loads, and this checkout on sys.path)
import numpy as np
from common import round_robin_best_times, topic_main

from refsam import (
    SAM,
    SGD,
    LogisticRegression,
    Problem,
    counterfactual_bank,
    make_gaussian_classification,
    solve_fixed_point,
    train,
)
from refsam.tolerances import RESOLVE_TOL, rel_err

CONFIGS = {
    "full": dict(repeats=3, n=1000, p=(199, 49), ratios=(0.5, 0.9), K=100, k=10, run_steps=1000,
                 root_steps=300, batch_size=100),
    "quick": dict(repeats=2, n=1000, p=(199, 49), ratios=(0.5,), K=100, k=5, run_steps=300, root_steps=300,
                  batch_size=100),
    "tiny": dict(repeats=1, n=80, p=(6, 4), ratios=(0.5,), K=40, k=2, run_steps=20, root_steps=50,
                 batch_size=10),
}
WEIGHT_DECAY, RHO, LR = 1e-2, 0.05, 0.5


def _problem(n: int, p: int):
    """Logistic regression on Gaussian clusters, m = 10 held-out queries; the weight decay λ is the base
    optimizer's (``SGD(LR, weight_decay=λ)``), the loss has no L2 term. Returns (problem, optimizer,
    X_test, y_test)."""
    X, y, _ = make_gaussian_classification(n=n + 10, n_features=p, n_classes=2, seed=0)
    return Problem(LogisticRegression(), X[:n], y[:n]), SGD(LR, weight_decay=WEIGHT_DECAY), X[n:], y[n:]


def block_speedup(n: int, p: int, ratio: float, K: int, k: int, root_steps: int, repeats: int) -> dict:
    """The bank in blocks vs one re-solve per subset (timed on k subsets, extrapolated to K)."""
    problem, optimizer, X_test, y_test = _problem(n, p)
    sam = SAM(RHO)
    fp = solve_fixed_point(problem, sam, train(problem, sam, optimizer, root_steps).theta_final,
                           optimizer=optimizer, progress=False)
    out: dict = {}

    def bank():
        out["bank"] = counterfactual_bank(problem, sam, fp, X_test, y_test, subset_ratio=ratio, n_subsets=K)

    def one_at_a_time():
        rows = []
        for mask in out["bank"].masks[:k]:
            weights = mask.astype(float)
            theta = solve_fixed_point(problem, sam, fp.theta, optimizer=optimizer, tol=RESOLVE_TOL,
                                      weights=weights, progress=False).theta
            rows.append(problem.model.losses(theta, X_test, y_test))
        out["single"] = np.array(rows)

    bank()
    best = round_robin_best_times({"bank": bank, "single": one_at_a_time}, repeats)
    single_all = best["single"] / k * K
    return {"n": n, "d": problem.d, "subset_ratio": ratio, "n_subsets": K, "timed_single": k,
            "bank_seconds": best["bank"], "single_seconds_extrapolated": single_all,
            "speedup": single_all / best["bank"],
            "rel_diff_bank_vs_single": float(rel_err(out["bank"].outputs[:k], out["single"]))}


def over_training(n: int, p: int, K: int, steps: int, batch_size: int | None, repeats: int) -> dict:
    """A bank of K counterfactuals (ratio 0.5) of a run or of its root / the training run itself."""
    problem, optimizer, X_test, y_test = _problem(n, p)
    sam = SAM(RHO)
    run = train(problem, sam, optimizer, steps, batch_size=batch_size)
    target = run if batch_size is not None else solve_fixed_point(problem, sam, run.theta_final,
                                                                   optimizer=optimizer, progress=False)
    best = round_robin_best_times({
        "training": lambda: train(problem, sam, optimizer, steps, batch_size=batch_size),
        "bank": lambda: counterfactual_bank(problem, sam, target, X_test, y_test, n_subsets=K)}, repeats)
    return {"n": n, "d": problem.d, "steps": steps, "batch_size": batch_size, "n_subsets": K,
            "target": "run" if batch_size is not None else "root", "training_seconds": best["training"],
            "bank_seconds": best["bank"], "ratio": best["bank"] / best["training"]}


def run_bank_benchmarks(mode: str = "full", log=print) -> dict:
    """Every bank benchmark at the sizes of ``mode``; returns the JSON keys (module docstring)."""
    c = CONFIGS[mode]
    speedups = {}
    for p in c["p"]:
        for ratio in c["ratios"]:
            log(f"  bank block speed-up, d = {p + 1}, subset_ratio {ratio} ...")
            speedups[f"d{p + 1}_ratio{ratio}"] = block_speedup(c["n"], p, ratio, c["K"], c["k"],
                                                               c["root_steps"], c["repeats"])
    headline = speedups[f"d{c['p'][0] + 1}_ratio{c['ratios'][0]}"]
    log("  bank vs training ...")
    run = over_training(c["n"], c["p"][-1], c["K"], c["run_steps"], c["batch_size"], c["repeats"])
    root = over_training(c["n"], c["p"][-1], c["K"], c["root_steps"], None, c["repeats"])
    return {"lds_bank_block_speedup": headline["speedup"], "bank_block_speedups": speedups,
            "bank_over_training_run": run["ratio"], "bank_over_training_root": root["ratio"],
            "bank_over_training": {"run": run, "root": root}}


def format_summary(results: dict) -> str:
    lines = []
    for key, r in results["bank_block_speedups"].items():
        lines.append(f"bank block speed-up {key}: n={r['n']} d={r['d']} K={r['n_subsets']}: bank "
                     f"{r['bank_seconds']:.3f} s, one at a time {r['single_seconds_extrapolated']:.3f} s "
                     f"(extrapolated from {r['timed_single']}), {r['speedup']:.1f}x; rel. diff "
                     f"{r['rel_diff_bank_vs_single']:.1e}")
    lines.append(f"lds_bank_block_speedup = {results['lds_bank_block_speedup']:.1f}  target >= 5")
    for key, r in results["bank_over_training"].items():
        lines.append(f"bank of {r['n_subsets']} / training ({key}: n={r['n']} d={r['d']} T={r['steps']} "
                     f"batch={r['batch_size']}): {r['bank_seconds']:.3f} s / {r['training_seconds']:.3f} s = "
                     f"{r['ratio']:.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    return topic_main(argv, __doc__.splitlines()[0], run_bank_benchmarks, format_summary)


if __name__ == "__main__":
    sys.exit(main())
