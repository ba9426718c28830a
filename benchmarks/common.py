"""What every benchmark module shares: one BLAS thread, the timers, the problems and the settings.

Import this module before NumPy (the topic modules do): it pins BLAS to one thread unless the caller
set the thread variables, and puts this checkout on ``sys.path`` so the benchmarks run without installing.

* Timing: :func:`best_time` (minimum wall time over repeats), :func:`paired_best_times` and
  :func:`round_robin_best_times` (the sides of a ratio timed alternately, A, B, A, B, …, so a burst of
  load hits both), :func:`peak_memory` (``tracemalloc``'s peak, never while timing),
  :func:`loglog_exponent`.
* Problems: :func:`logistic_problem` and :func:`mlp_problem` return (problem, optimizer, X_test, y_test):
  the weight decay λ is the base optimizer's (``refsam.SGD(lr, weight_decay=λ)``), the loss has no L2
  term. :func:`sam_root` gives a verified SAM root (a :class:`refsam.FixedPoint`, which carries its
  optimizer).
* Model variants for the before/after measurements: :class:`AutogradMLP` (every derivative from
  autograd) and :class:`DenseJvpMLP` (per-sample directional derivatives from the dense per-sample
  gradient matrix), and :func:`with_model`.
"""

from __future__ import annotations

import os
import sys
import time
import tracemalloc
from pathlib import Path

# One BLAS thread unless the caller says otherwise (e.g. OPENBLAS_NUM_THREADS=2 python benchmarks/run.py).
# On a shared 2-core machine, multi-threaded OpenBLAS spins against other processes: the same Hessian
# assembly measured 0.08 s with one thread and 2.6 s with two under load. One thread keeps the ratios
# reproducible and fair between BLAS-heavy and Python-heavy methods. Must be set before NumPy loads.
BLAS_THREADS = os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", BLAS_THREADS)
os.environ.setdefault("MKL_NUM_THREADS", BLAS_THREADS)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from refsam import (  # noqa: E402
    MLP,
    SAM,
    SGD,
    FixedPoint,
    LogisticRegression,
    Problem,
    make_gaussian_classification,
    solve_fixed_point,
    train,
)
from refsam.models import AutogradDerivatives, MLPDerivatives  # noqa: E402
from refsam.models.base import as_columns  # noqa: E402
from refsam.tolerances import RESOLVE_TOL  # noqa: E402

WEIGHT_DECAY = 1e-2  # λ, the optimizer's weight decay: makes the SAM root isolated for logistic regression
WEIGHT_DECAY_MLP = 1e-3
RHO = 0.05  # ρ, SAM rule
LR_LOGISTIC = 0.5
LR_MLP = 0.1


# -- measuring -------------------------------------------------------------------------------------------

def best_time(fn, repeats: int, clock=time.perf_counter) -> float:
    """Minimum time of ``fn()`` over ``repeats`` calls, seconds: wall time, or ``clock=time.process_time``
    (process time, less sensitive to the machine's load)."""
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        fn()
        best = min(best, clock() - start)
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
    """Logistic regression on Gaussian clusters with 5% flipped labels; d = p + 1; one held-out set.

    Returns (problem, optimizer, X_test, y_test); the optimizer is ``SGD(LR_LOGISTIC, weight_decay=λ)``."""
    X, y, _ = make_gaussian_classification(n + 20, p, 2, separation=1.0, flip_fraction=0.05, seed=seed)
    problem = Problem(LogisticRegression(), X[:n], y[:n])
    return problem, SGD(LR_LOGISTIC, weight_decay=WEIGHT_DECAY), X[n:], y[n:]


def mlp_problem(n: int, sizes, seed: int = 0):
    """A tanh MLP on Gaussian clusters (sizes[-1] classes), 5% flipped labels; one held-out set.

    Returns (problem, optimizer, X_test, y_test); the optimizer is ``SGD(LR_MLP, weight_decay=1e-3)``."""
    X, y, _ = make_gaussian_classification(n + 20, sizes[0], sizes[-1], separation=1.0,
                                           flip_fraction=0.05, seed=seed)
    problem = Problem(MLP(sizes, "tanh"), X[:n], y[:n])
    return problem, SGD(LR_MLP, weight_decay=WEIGHT_DECAY_MLP), X[n:], y[n:]


def sam_root(problem: Problem, sam: SAM, optimizer: SGD) -> FixedPoint:
    """A verified SAM root: a full-batch SAM run as the warm start, then the root solver. The FixedPoint
    carries ``optimizer``, whose weight decay is part of G."""
    warm = train(problem, sam, optimizer, 200).theta_final
    return solve_fixed_point(problem, sam, warm, optimizer=optimizer, progress=False)


def one_at_a_time_leave_one_out(problem: Problem, sam: SAM, root: FixedPoint, X_test, y_test, indices):
    """Δ test losses when each point of ``indices`` is removed, one re-solve (solve_fixed_point, warm
    at θ̂, to RESOLVE_TOL) per point: the brute force a user without influence functions runs."""
    base = problem.model.losses(root.theta, X_test, y_test)
    rows = []
    for j in indices:
        weights = np.ones(problem.n)
        weights[j] = 0.0
        theta_j = solve_fixed_point(problem, sam, root.theta, optimizer=root.optimizer, tol=RESOLVE_TOL,
                                    weights=weights, progress=False).theta
        rows.append(problem.model.losses(theta_j, X_test, y_test) - base)
    return np.array(rows)


# -- model variants for the before/after measurements ----------------------------------------------------

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
    """The same data, weights and loss (its l2) with another implementation of the same MLP (same spec)."""
    return Problem(model, problem.X, problem.y, problem.weights, l2=problem.l2)


def merge_results(path, results: dict) -> None:
    """Merge ``results``' keys into the results JSON at ``path`` (a topic module run alone, ``--update``)."""
    import json
    from pathlib import Path

    target = Path(path)
    merged = json.loads(target.read_text())
    merged.update(results)
    target.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


def topic_main(argv, description: str, run, summary, tiny_help: str | None = None) -> int:
    """The command line of a topic module run alone (banks.py, peers.py, roots.py): ``--quick`` (smaller
    sizes), ``--tiny`` (the smoke test's), ``--json OUT`` and ``--update RESULTS`` (merge the keys into a
    results JSON); ``run(mode, log)`` measures, ``summary(results)`` is what it prints."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--tiny", action="store_true", help=tiny_help or argparse.SUPPRESS)
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    parser.add_argument("--update", metavar="RESULTS", help="merge the keys into an existing results JSON")
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    results = run(mode, lambda msg: print(msg, file=sys.stderr, flush=True))
    print(summary(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    if args.update:
        merge_results(args.update, results)
    return 0
