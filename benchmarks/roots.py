"""The root solver from a trained MLP's end point: Jacobian evaluations, and its time against training.

    python benchmarks/roots.py [--quick] [--json OUT] [--update RESULTS.json]

(``benchmarks/run.py`` calls :func:`run_root_benchmarks` too; ``--update`` merges the keys below into an
existing results file, e.g. benchmarks/results.json, leaving its other keys as they are.)

The problem (issue 27): a tanh MLP (8, 40, 2), d = 442, n = 1000 Gaussian points, SAM ρ = 0.05 on
SGD(η = 0.1, momentum 0.9, weight decay λ = 1e-2), full batch, ``steps`` steps from the seed-0 init.
From the run's end point ``solve_fixed_point(method="ptc")`` must reach a verified root (‖G‖ ≤ 1e-10)
that is stable under the run's optimizer (spectral radius < 1) — the root training itself approaches.

Stable JSON keys:
    root_solve_jacobians         Jacobian evaluations of G from the end of the 2000-step run to the verified
                                 stable root (target <= 15)
    root_solve_over_training     the solve's wall time / the 2000-step training run's
    root_solve_runs              per end point (2000 steps; the same run trained to ``basin_steps``, where
                                 ∂G/∂θ has no eigenvalue with negative real part any more): Jacobians,
                                 seconds, ‖G‖, ‖θ̂ − θ_T‖, spectral radius, the eigenvalues of ∂G/∂θ with
                                 negative real part at the start, and the same for method "hybr" and for
                                 the slow reference "ptc_fresh_jacobians" (ptc with a fresh Jacobian at
                                 every step and chord corrections only: PTC_LAG = 1, PTC_KRYLOV = False),
                                 with ptc's distance_to_fresh_jacobians_root (the speed-up's exactness) and
                                 jacobian_products (the products of J its Krylov corrections used, two
                                 Hessian-vector products each, no Jacobian formed)
Timings are the minimum over repeats of alternated runs (common.round_robin_best_times), one BLAS thread.
"""

from __future__ import annotations

import sys

import common  # noqa: F401  (first: one BLAS thread before NumPy loads, and this checkout on sys.path)
import numpy as np
from common import mlp_problem, round_robin_best_times, topic_main

from refsam import SAM, SGD, FixedPointError, solve_fixed_point, train
from refsam.influence import fixed_point, operators, residual_jacobian, residual_map

CONFIGS = {
    "full": dict(repeats=3, n=1000, sizes=(8, 40, 2), steps=2000, basin_steps=16000),
    "quick": dict(repeats=1, n=1000, sizes=(8, 40, 2), steps=2000, basin_steps=16000),
    "tiny": dict(repeats=1, n=60, sizes=(3, 4, 2), steps=300, basin_steps=600),
}
RHO, LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.1, 0.9, 1e-2
MAX_JACOBIANS = 60  # the budget given to each solve (the target is 15)


def _solve(problem, sam, optimizer, start, method):
    try:
        return solve_fixed_point(problem, sam, start, optimizer=optimizer, method=method,
                                 max_iter=MAX_JACOBIANS, progress=False)
    except FixedPointError as err:
        return err


def _counted_products(solve):
    """(solve(), the products of J made by ptc's Krylov corrections during it): each correction builds
    one `SystemOperators`, which counts its Hessian-vector products (two per product of J)."""
    made = []

    class Counting(operators.SystemOperators):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    saved, operators.SystemOperators = operators.SystemOperators, Counting
    try:
        return solve(), sum(system.products for system in made) // 2
    finally:
        operators.SystemOperators = saved


def bench_root_from_end_point(problem, sam, optimizer, steps: int, repeats: int,
                              time_training: bool = True) -> dict:
    """Train ``steps`` full-batch steps, then solve from the end point; times both (alternated)."""
    run = {}

    def training():
        run["theta"] = train(problem, sam, optimizer, steps, seed=0, progress=False).theta_final

    def solve():
        run["root"] = _solve(problem, sam, optimizer, run["theta"], "ptc")

    training()
    fns = {"training": training, "solve": solve} if time_training else {"solve": solve}
    best = round_robin_best_times(fns, repeats)
    start = run["theta"]
    eigenvalues = np.linalg.eigvals(residual_jacobian(problem, sam, start, optimizer=optimizer))
    out = {"steps": steps, "n": problem.n, "d": problem.d, "start_residual": float(np.linalg.norm(
        residual_map(problem, sam, start, optimizer=optimizer))),
        "start_negative_eigenvalues": int(np.sum(eigenvalues.real < 0)),
        "start_min_real_eigenvalue": float(np.min(eigenvalues.real)), "solve_seconds": best["solve"]}
    if time_training:
        out["training_seconds"] = best["training"]
        out["ratio"] = best["solve"] / best["training"]
    reference = _slow_reference(problem, sam, optimizer, start)
    _, products = _counted_products(lambda: _solve(problem, sam, optimizer, start, "ptc"))
    for method, root in (("ptc", run["root"]), ("hybr", _solve(problem, sam, optimizer, start, "hybr")),
                         ("ptc_fresh_jacobians", reference)):
        if isinstance(root, FixedPointError):
            out[method] = {"converged": False, "residual": root.residual, "reason": root.reason}
        else:
            out[method] = {"converged": root.converged, "jacobians": root.iterations,
                           "residual": root.residual, "distance_from_end_point": root.start_distance,
                           "spectral_radius": root.spectral_radius, "stable": bool(root.stable),
                           "min_real_eigenvalue": float(np.min(np.linalg.eigvals(root.jacobian).real))}
    if not isinstance(run["root"], FixedPointError) and not isinstance(reference, FixedPointError):
        # exactness: the root of the lagged, Krylov-corrected solver against the one a fresh J per step
        # and chord corrections reach
        out["ptc"]["distance_to_fresh_jacobians_root"] = float(np.linalg.norm(run["root"].theta
                                                                             - reference.theta))
        out["ptc"]["jacobian_products"] = products
    return out


def _slow_reference(problem, sam, optimizer, start):
    """ptc as it was before its Jacobians were lagged: a fresh J at every step, chord corrections only."""
    saved = fixed_point.PTC_LAG, fixed_point.PTC_KRYLOV
    fixed_point.PTC_LAG, fixed_point.PTC_KRYLOV = 1, False
    try:
        return _solve(problem, sam, optimizer, start, "ptc")
    finally:
        fixed_point.PTC_LAG, fixed_point.PTC_KRYLOV = saved


def run_root_benchmarks(mode: str = "full", log=print) -> dict:
    """The root-solver benchmarks at the sizes of ``mode``; returns the JSON keys (module docstring)."""
    c = CONFIGS[mode]
    problem, _, _, _ = mlp_problem(c["n"], c["sizes"])
    sam, optimizer = SAM(RHO), SGD(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    log(f"  root solve from the end of a {c['steps']}-step run ...")
    end = bench_root_from_end_point(problem, sam, optimizer, c["steps"], c["repeats"])
    log(f"  root solve from the end of a {c['basin_steps']}-step run ...")
    basin = bench_root_from_end_point(problem, sam, optimizer, c["basin_steps"], 1, time_training=False)
    ptc = end["ptc"]
    return {"root_solve_jacobians": ptc["jacobians"] if ptc["converged"] else None,  # None: no root
            "root_solve_over_training": end["ratio"],
            "root_solve_runs": {f"steps{c['steps']}": end, f"steps{c['basin_steps']}": basin}}


def format_summary(results: dict) -> str:
    lines = []
    for r in results["root_solve_runs"].values():
        head = (f"root solve from the end of {r['steps']} steps (n={r['n']}, d={r['d']}; ‖G‖ = "
                f"{r['start_residual']:.1e}, {r['start_negative_eigenvalues']} eigenvalues of J with Re < 0, "
                f"min {r['start_min_real_eigenvalue']:.1e})")
        lines.append(head + (f": {r['solve_seconds']:.2f} s / training {r['training_seconds']:.2f} s = "
                             f"{r['ratio']:.2f}" if "ratio" in r else f": {r['solve_seconds']:.2f} s"))
        for method in ("ptc", "hybr", "ptc_fresh_jacobians"):
            m = r[method]
            if m["converged"]:
                products = f" and {m['jacobian_products']} products of J" if "jacobian_products" in m else ""
                lines.append(f"    {method}: {m['jacobians']} Jacobians{products}, "
                             f"‖G‖ = {m['residual']:.1e}, "
                             f"‖θ̂ − θ_T‖ = {m['distance_from_end_point']:.3f}, spectral radius "
                             f"{m['spectral_radius']:.6f} ({'stable' if m['stable'] else 'UNSTABLE'})")
            else:
                lines.append(f"    {method}: no root: {m['reason'][:160]}")
    lines.append(f"root_solve_jacobians = {results['root_solve_jacobians']}  target <= 15; "
                 f"root_solve_over_training = {results['root_solve_over_training']:.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    return topic_main(argv, __doc__.splitlines()[0], run_root_benchmarks, format_summary,
                      tiny_help="seconds; numbers meaningless")


if __name__ == "__main__":
    sys.exit(main())
