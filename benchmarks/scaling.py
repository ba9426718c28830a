"""Scaling: each method's time and peak memory as one size grows (n, d, T or m), with log-log exponents.

Every function returns {method: [row, …]}, a row being one axis: {"axis", "sizes", "seconds",
"peak_bytes", "exponent"} (the ``scaling`` key of the results).

    scaling_closed_form_and_loo   closed form and extrapolated brute-force LOO against n and d
    scaling_trajectory            training and trajectory methods against n, d and T
    scaling_test_functions        closed form, adjoint and TracIn against m, the number of test losses
    scaling_mlp_trajectory        training and the adjoint for MLPs of growing width (d)
    scaling_mlp_hessian           the MLP Hessian (layer-wise assembly) against d
"""

from __future__ import annotations

import common  # noqa: F401  (first: one BLAS thread before NumPy loads, and this checkout on sys.path)
import numpy as np
from common import (
    RHO,
    best_time,
    logistic_problem,
    loglog_exponent,
    mlp_problem,
    one_at_a_time_leave_one_out,
    peak_memory,
    sam_root,
)

from refsam import SAM, hessian_influence, make_gaussian_classification, train, trajectory_influence


def _scaling_row(axis, sizes, seconds, memory) -> dict:
    return {"axis": axis, "sizes": list(sizes), "seconds": list(seconds), "peak_bytes": list(memory),
            "exponent": loglog_exponent(sizes, seconds) if len(sizes) > 1 else float("nan")}


def _measure(fn, repeats):
    return best_time(fn, repeats), peak_memory(fn)


def _closed_form_and_loo_runs(problem, optimizer, sam, X_test, y_test, k):
    """(closed form for all n, leave-one-out re-solves of the first k points) as argument-free calls."""
    root = sam_root(problem, sam, optimizer)
    return (lambda: hessian_influence(problem, sam, root, X_test, y_test),
            lambda: one_at_a_time_leave_one_out(problem, sam, root, X_test, y_test, np.arange(k)))


def _trajectory_runs(problem, optimizer, sam, X_test, y_test, steps, methods):
    """{method: argument-free call}: training itself and each influence method on its recorded run."""
    trajectory = train(problem, sam, optimizer, steps)
    runs = {"training": lambda: train(problem, sam, optimizer, steps)}
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
            problem, optimizer, X_test, y_test = logistic_problem(n, p)
            run_closed, run_loo = _closed_form_and_loo_runs(problem, optimizer, sam, X_test, y_test,
                                                            cfg["loo_k"])
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
    problem, optimizer, _, _ = logistic_problem(base["n"], base["p"])
    X, y, _ = make_gaussian_classification(max(ms), base["p"], 2, separation=1.0, seed=7)
    root = sam_root(problem, sam, optimizer)
    run = train(problem, sam, optimizer, base["steps"])
    calls = {"closed_form": lambda m: hessian_influence(problem, sam, root, X[:m], y[:m]),
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
            problem, optimizer, X_test, y_test = logistic_problem(size["n"], size["p"])
            runs = _trajectory_runs(problem, optimizer, sam, X_test, y_test, size["steps"],
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
        problem, optimizer, X_test, y_test = mlp_problem(n, layer_sizes)
        trajectory = train(problem, sam, optimizer, steps, batch_size=batch_size, seed=0)
        runs = {
            "training_mlp": lambda p=problem, o=optimizer: train(p, sam, o, steps, batch_size=batch_size,
                                                                 seed=0),
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
        problem, _, _, _ = mlp_problem(n, widths)
        theta = problem.init_params(1)
        t, mem = _measure(lambda problem=problem, theta=theta: problem.hessian(theta), repeats)
        seconds.append(t)
        memory.append(mem)
        sizes.append(problem.d)
    return {"mlp_hessian_layerwise": [_scaling_row("d", sizes, seconds, memory)]}
