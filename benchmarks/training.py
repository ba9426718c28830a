"""The recorded run: training itself, and the trajectory methods against the training that recorded it.

    bench_adjoint_over_training      adjoint_over_training_* (the adjoint for all n / the training run)
    bench_adjoint_mlp_before_after   adjoint_mlp_before_after (the MLP adjoint along the optimisations)
    bench_autodiff_over_adjoint      autodiff_over_adjoint (autograd through the loop / the adjoint)
    bench_self_influence_diagonal    self_influence_diagonal_speedup (an approximation's self-influence:
                                     the diagonal of the n × n matrix / trajectory_self_influence)
    bench_training_step_over_gemv    training_step_over_gemv (hardware: a SAM step / its four GEMVs)

``benchmarks/adjoint_vs_training.py`` measures the adjoint ratio on its own; these functions re-implement
it so that every number of ``run.py`` comes from one run.
"""

from __future__ import annotations

import common  # noqa: F401  (first: one BLAS thread before NumPy loads, and this checkout on sys.path)
import numpy as np
from common import (
    RHO,
    AutogradMLP,
    DenseJvpMLP,
    best_time,
    logistic_problem,
    mlp_problem,
    paired_best_times,
    round_robin_best_times,
    with_model,
)

from refsam import SAM, train, trajectory_influence
from refsam.influence import trajectory_self_influence


def bench_adjoint_over_training(problem, optimizer, X_test, y_test, steps, batch_size, repeats) -> dict:
    """(trajectory adjoint for all n, one test loss) / (the SAM training run that recorded it)."""
    sam = SAM(RHO)
    run = {}

    def run_training():
        run["trajectory"] = train(problem, sam, optimizer, steps, batch_size=batch_size, seed=0)

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
    problem, optimizer, X_test, y_test = mlp_problem(n, sizes)
    sam = SAM(RHO)
    trajectory = train(problem, sam, optimizer, steps, batch_size=batch_size, seed=0)

    def adjoint(on=problem):
        return lambda: trajectory_influence(on, trajectory, X_test[:1], y_test[:1], "adjoint")

    sizes_ = problem.model.sizes
    variants = {"training": lambda: train(problem, sam, optimizer, steps, batch_size=batch_size, seed=0),
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
    problem, optimizer, X_test, y_test = logistic_problem(n, p)
    trajectory = train(problem, SAM(RHO), optimizer, steps, batch_size=batch_size, seed=0)
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


def bench_self_influence_diagonal(n, sizes, steps, batch_size, repeats) -> dict:
    """I_j(ℓ_j) of the first-order and TracIn approximations on an MLP run, as `refsam detect` needs it:
    the diagonal of trajectory_influence on the training set (n test losses: O(|B| n d) per step) against
    trajectory_self_influence (row-wise products of per-sample gradients: O(|B| d)); the key is the
    smaller speed-up of the two, each with the max relative difference."""
    problem, optimizer, _, _ = mlp_problem(n, sizes)
    trajectory = train(problem, SAM(RHO), optimizer, steps, batch_size=batch_size, seed=0, progress=False)
    runs = {}
    for method in ("first_order", "tracin"):
        out = {}

        def matrix(method=method, out=out):
            out["matrix"] = np.diag(trajectory_influence(problem, trajectory, problem.X, problem.y, method,
                                                         progress=False))

        def diagonal(method=method, out=out):
            out["diagonal"] = trajectory_self_influence(problem, trajectory, method, progress=False)

        t_matrix, t_diagonal = paired_best_times(matrix, diagonal, repeats)
        runs[method] = {"matrix_seconds": t_matrix, "diagonal_seconds": t_diagonal,
                        "speedup": t_matrix / t_diagonal,
                        "max_rel_diff": float(np.max(np.abs(out["diagonal"] - out["matrix"]))
                                              / np.max(np.abs(out["matrix"])))}
    return {"model": "mlp", "n": n, "d": problem.d, "steps": steps, "batch_size": batch_size,
            "speedup": min(r["speedup"] for r in runs.values()), "methods": runs}


def bench_training_step_over_gemv(n: int, p: int, steps: int, repeats: int) -> dict:
    """Full-batch logistic SAM training per step over the four GEMVs over X̃ its two gradients need
    (x̃θ and x̃ᵀr, at θ and at θ + ε)."""
    problem, optimizer, _, _ = logistic_problem(n, p)
    sam = SAM(RHO)
    design = problem.design
    theta, r = np.full(problem.d, 0.01), np.full(n, 0.5)

    def four_gemvs():
        for _ in range(2):
            design @ theta
            design.T @ r

    t_train = best_time(lambda: train(problem, sam, optimizer, steps), repeats) / steps
    t_gemv = best_time(four_gemvs, repeats)
    return {"n": n, "d": problem.d, "seconds_per_step": t_train, "four_gemv_seconds": t_gemv,
            "ratio": t_train / t_gemv}
