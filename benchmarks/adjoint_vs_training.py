"""Cost of the exact trajectory adjoint relative to the training run it differentiates (issue 4, item 4).

    python benchmarks/adjoint_vs_training.py [--quick]

For each configuration: train with SAM (recording the trajectory), then compute the adjoint influence
of all n training points on one test loss; print wall(adjoint) / wall(training). Target: ≤ 3.
The two are timed alternately (train, adjoint, train, adjoint, …) and each keeps its minimum, the
least noisy estimate on a shared machine (5 repeats by default). Configurations:
    logistic   n = 1000, d = 50, T = 1000, minibatch 100 and full batch
    mlp        tanh MLP (20, 64, 50, 5), d = 4,849, n = 1000: minibatch 100 (T = 1000), full batch (T = 100)
Per adjoint step: one batch gradient (to rebuild g_t, which P_t = ∂ε/∂g needs), two Hessian-vector
products and two batch Jacobian-vector products; training costs two batch gradients per step.

BLAS runs single-threaded (set before NumPy is imported; override with OPENBLAS_NUM_THREADS): on a
shared machine multi-threaded BLAS timings swing by several times with the other jobs' load, which
makes ratios meaningless. Counting matrix products (L = 3 layers), an MLP adjoint step costs 41
(n × width × width) products against 16 for a training step, so ≈ 2.6 is the expected ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from refsam import (  # noqa: E402
    MLP,
    SAM,
    SGD,
    LogisticRegression,
    Problem,
    make_gaussian_classification,
    train,
    trajectory_influence,
)

TARGET = 3.0

CONFIGS = {
    "full": [
        dict(name="logistic, minibatch 100", model="logistic", n=1000, p=49, steps=1000, batch_size=100),
        dict(name="logistic, full batch", model="logistic", n=1000, p=49, steps=1000, batch_size=None),
        dict(name="mlp d=4849, minibatch 100", model="mlp", n=1000, sizes=(20, 64, 50, 5), steps=1000,
             batch_size=100),
        dict(name="mlp d=4849, full batch", model="mlp", n=1000, sizes=(20, 64, 50, 5), steps=100,
             batch_size=None),
    ],
    "quick": [
        dict(name="logistic, minibatch 100", model="logistic", n=1000, p=49, steps=200, batch_size=100),
        dict(name="mlp d=4849, minibatch 100", model="mlp", n=1000, sizes=(20, 64, 50, 5), steps=100,
             batch_size=100),
    ],
}


def make_problem(config):
    """(problem, base optimizer, X_test, y_test): the weight decay is the optimizer's (refsam.SGD)."""
    if config["model"] == "logistic":
        X, y, _ = make_gaussian_classification(n=config["n"] + 1, n_features=config["p"], seed=0)
        return Problem(LogisticRegression(), X[:-1], y[:-1]), SGD(0.5, weight_decay=1e-2), X[-1:], y[-1:]
    sizes = config["sizes"]
    X, y, _ = make_gaussian_classification(n=config["n"] + 1, n_features=sizes[0], n_classes=sizes[-1],
                                           seed=0)
    return Problem(MLP(sizes), X[:-1], y[:-1]), SGD(0.1, weight_decay=1e-3), X[-1:], y[-1:]


def measure(config, repeats: int) -> dict:
    problem, optimizer, X_test, y_test = make_problem(config)
    sam = SAM(0.05)
    best_train = best_adjoint = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        trajectory = train(problem, sam, optimizer, config["steps"], batch_size=config["batch_size"], seed=0)
        best_train = min(best_train, time.perf_counter() - start)
        start = time.perf_counter()
        influence = trajectory_influence(problem, trajectory, X_test, y_test, method="adjoint")
        best_adjoint = min(best_adjoint, time.perf_counter() - start)
    assert influence.shape == (problem.n, 1) and np.all(np.isfinite(influence))
    return dict(name=config["name"], d=problem.d, steps=config["steps"], training=best_train,
                adjoint=best_adjoint, ratio=best_adjoint / best_train)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (seconds, noisier)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{'configuration':<28} {'d':>6} {'T':>6} {'train s':>9} {'adjoint s':>10} {'ratio':>7}")
    worst = 0.0
    for config in CONFIGS["quick" if args.quick else "full"]:
        row = measure(config, args.repeats)
        worst = max(worst, row["ratio"])
        print(f"{row['name']:<28} {row['d']:>6} {row['steps']:>6} {row['training']:>9.3f} "
              f"{row['adjoint']:>10.3f} {row['ratio']:>7.2f}", flush=True)
    print(f"worst ratio {worst:.2f} (target <= {TARGET:g}): {'met' if worst <= TARGET else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
