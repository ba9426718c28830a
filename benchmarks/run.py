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
    user_model_adjoint_over_builtin   the trajectory adjoint of a user logistic model (losses in
                                      autograd.numpy only) over refsam.LogisticRegression's, same problem
                                      (target <= 3; user_mlp_adjoint_over_builtin the same for the MLP;
                                      user_model_runs has both, and both again at n = 5000, batch 1000)
    adam_adjoint_over_training        max over the logistic and MLP runs of the adjoint / training through an
                                      AdamW + SAM run (clip 1.0, warm-up + cosine), sizes as above (target
                                      <= 2.5; adam_adjoint_over_training_runs has both)
    autodiff_over_adjoint             autograd through the training loop / the adjoint, same run
    self_influence_diagonal_speedup   the approximations' self-influence I_j(ℓ_j) as the diagonal of the
                                      n × n matrix / trajectory_self_influence (the smaller of first_order
                                      and tracin; MLP n = 1000, d = 4849, T = 50; self_influence_diagonal)
    softmax_hessian_dgemm_fraction    the softmax Hessian's rate (flops it needs: symmetric rank-n
                                      updates) over a same-size dgemm's, same run (target >= 0.25)
    closed_form_over_unavoidable      hessian_influence / (one Hessian + one LU at its size) (target <= 2)
    training_step_over_gemv           full-batch logistic SAM step / the four GEMVs over X its two
                                      gradients need, n = 1e4, d = 500 (target <= 2)
    loo_block_speedup                 leave-one-out replays of 64 points one at a time / in blocks, one
                                      process (target >= 10)
    loo_parallel_speedup              leave-one-out of all n points in blocks, 1 process / 2 (target >= 1.6)
    loo_two_process_ceiling           the same serial job run by two independent processes at once:
                                      2 × (time alone) / (time together), what the 2 cores give it
    lds_bank_block_speedup            a bank of 100 re-solved roots in blocks vs one re-solve at a time
                                      (target >= 5), with bank_over_training_run / _root: the bank's
                                      cost against one training run (banks.py)
    pydvl_direct_over_refsam          {size: pyDVL's DirectInfluence / refsam's closed form} at ρ = 0, the
                                      same problems and roots (logistic d = 11, 51, 201 at n = 1000; tanh
                                      MLPs at n = 500), all n × m scores each; dattri_explicit_over_refsam
                                      the same for dattri's IFAttributorExplicit; peers_runs has the times
                                      and the max |difference| of the scores. Only where the peer is
                                      installed; peers_skipped says which were not (peers.py)
    root_solve_jacobians              Jacobian evaluations of G for solve_fixed_point(method="ptc") from the
                                      end of a 2000-step full-batch SAM run of a tanh MLP (8, 40, 2),
                                      n = 1000, to a verified root stable under the run's optimizer (target
                                      <= 15), with root_solve_over_training: the solve's time / the run's
                                      (roots.py)
    mlp_hessian_d2000                 explicit MLP Hessian (d ≈ 2,000): autograd.hessian vs the
                                      R-operator on identity blocks vs the layer-wise assembly
                                      (refsam's MLP.hessian), with max |difference| to autograd
    scaling                           per method and axis (n, d, T): sizes, seconds, fitted log-log
                                      exponent, peak memory
The README next to this file records the numbers and the before/after of each optimisation.

This file is the runner: the sizes per mode (``CONFIGS``), the order of the runs and the keys of the
results. The benchmarks themselves are in the topic modules beside it, each callable on its own:

    common.py        one BLAS thread, the timers, the problems (λ = the base optimizer's weight decay)
    closed_form.py   closed form vs brute-force leave-one-out; over its unavoidable parts; MLP parts
    training.py      adjoint vs training; the MLP adjoint before/after; autodiff vs adjoint; step vs GEMV
    adam.py          the adjoint vs training through AdamW + SAM runs (clipping, a schedule)
    user_models.py   a user's own model (autograd derivatives) vs the built-in model, same run
    hessians.py      the MLP Hessian three ways; derivative products; the softmax Hessian's dgemm rate
    parallel.py      leave-one-out replays in blocks and on two processes; the two-process ceiling
    banks.py         counterfactual banks in blocks vs one re-solve at a time; a bank against training
    peers.py         refsam's closed form vs pyDVL's DirectInfluence and dattri's at ρ = 0 (where installed)
    roots.py         the root solver from a trained MLP's end point: Jacobians, time against training
    scaling.py       time and peak memory against n, d, T and m
    report.py        the printed summary and the README's tables
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# Each topic module imports ``common`` before NumPy: one BLAS thread unless the caller set the thread
# variables (see common.py), and this checkout on sys.path (run from a checkout without installing).
import common  # noqa: F401
import numpy as np
from adam import bench_adam_adjoint_over_training
from banks import run_bank_benchmarks
from closed_form import bench_closed_form_mlp, bench_closed_form_over_unavoidable, bench_closed_form_vs_loo
from common import BLAS_THREADS, logistic_problem, mlp_problem
from hessians import bench_derivative_products, bench_mlp_hessian, bench_softmax_hessian_rate
from parallel import bench_loo_block_and_parallel
from peers import run_peer_benchmarks
from report import format_markdown, format_summary
from roots import run_root_benchmarks
from scaling import (
    scaling_closed_form_and_loo,
    scaling_mlp_hessian,
    scaling_mlp_trajectory,
    scaling_test_functions,
    scaling_trajectory,
)
from training import (
    bench_adjoint_mlp_before_after,
    bench_adjoint_over_training,
    bench_autodiff_over_adjoint,
    bench_self_influence_diagonal,
    bench_training_step_over_gemv,
)
from user_models import bench_user_model_adjoint_over_builtin

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
        user_models=dict(n=1000, p=49, sizes=(20, 64, 50, 5), steps=200, mlp_steps=50, batch_size=100,
                         large=dict(n=5000, p=199, batch_size=1000, steps=30, mlp_steps=10)),
        autodiff=dict(n=1000, p=49, steps=100, batch_size=100),
        self_influence=dict(n=1000, sizes=(20, 64, 50, 5), steps=50, batch_size=100),
        hessian=dict(n=500, sizes=(16, 40, 30, 5)),
        closed_form_mlp=dict(n=500, sizes=(16, 40, 30, 5)),
        # refsam vs pyDVL / dattri at ρ = 0 (peers.py; skipped where they are not installed); m test losses
        peers=dict(repeats=5, n=1000, m=10, logistic_p=(10, 50, 200), mlp_n=500,
                   mlp_sizes=((10, 16, 3), (20, 32, 3), (20, 48, 5)), mlp_steps=1000),
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
        user_models=dict(n=1000, p=49, sizes=(20, 64, 50, 5), steps=100, mlp_steps=20, batch_size=100,
                         large=dict(n=5000, p=199, batch_size=1000, steps=10, mlp_steps=3)),
        autodiff=dict(n=1000, p=49, steps=30, batch_size=100),
        self_influence=dict(n=1000, sizes=(20, 64, 50, 5), steps=10, batch_size=100),
        hessian=dict(n=200, sizes=(16, 40, 30, 5)),
        closed_form_mlp=dict(n=200, sizes=(16, 20, 15, 5)),
        peers=dict(repeats=3, n=500, m=10, logistic_p=(10, 50), mlp_n=300, mlp_sizes=((10, 16, 3),),
                   mlp_steps=300),
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
        user_models=dict(n=60, p=4, sizes=(4, 6, 3), steps=5, mlp_steps=3, batch_size=10,
                         large=dict(n=120, p=9, batch_size=60, steps=3, mlp_steps=2)),
        autodiff=dict(n=60, p=4, steps=5, batch_size=10),
        self_influence=dict(n=60, sizes=(4, 6, 3), steps=5, batch_size=10),
        hessian=dict(n=20, sizes=(3, 5, 4, 3)),
        closed_form_mlp=dict(n=20, sizes=(3, 5, 4, 3)),
        peers=dict(repeats=1, n=60, m=3, logistic_p=(4,), mlp_n=60, mlp_sizes=((4, 5, 3),), mlp_steps=20),
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
    for key in ("adjoint_logistic", "adjoint_logistic_full_batch"):
        c = cfg[key]
        problem, optimizer, X_test, y_test = logistic_problem(c["n"], c["p"])
        adjoint[key] = bench_adjoint_over_training(problem, optimizer, X_test, y_test, c["steps"],
                                                   c["batch_size"], repeats)
    for key in ("adjoint_mlp", "adjoint_mlp_full_batch"):
        c = cfg[key]
        problem, optimizer, X_test, y_test = mlp_problem(c["n"], c["sizes"])
        adjoint[key] = bench_adjoint_over_training(problem, optimizer, X_test, y_test, c["steps"],
                                                   c["batch_size"], repeats)
    results["adjoint_over_training_runs"] = adjoint
    results["adjoint_over_training_logistic"] = adjoint["adjoint_logistic"]["ratio"]
    results["adjoint_over_training_mlp"] = adjoint["adjoint_mlp"]["ratio"]
    results["adjoint_over_training"] = max(results["adjoint_over_training_logistic"],
                                           results["adjoint_over_training_mlp"])

    log(f"[{time.perf_counter() - start:6.1f} s] adjoint vs training through AdamW ...")
    adam = {}
    for key, make in (("adjoint_logistic", lambda c: logistic_problem(c["n"], c["p"])),
                      ("adjoint_mlp", lambda c: mlp_problem(c["n"], c["sizes"]))):
        c = cfg[key]
        problem, _, X_test, y_test = make(c)
        adam[key] = bench_adam_adjoint_over_training(problem, X_test, y_test, c["steps"], c["batch_size"],
                                                     repeats)
    results["adam_adjoint_over_training_runs"] = adam
    results["adam_adjoint_over_training"] = max(run["ratio"] for run in adam.values())

    log(f"[{time.perf_counter() - start:6.1f} s] a user's own model vs the built-in ...")
    results.update(bench_user_model_adjoint_over_builtin(**cfg["user_models"], repeats=repeats))

    log(f"[{time.perf_counter() - start:6.1f} s] MLP adjoint before/after ...")
    results["adjoint_mlp_before_after"] = bench_adjoint_mlp_before_after(**cfg["adjoint_mlp_before_after"],
                                                                         repeats=repeats)

    log(f"[{time.perf_counter() - start:6.1f} s] autodiff vs adjoint ...")
    autodiff = bench_autodiff_over_adjoint(**cfg["autodiff"], repeats=repeats)
    results["autodiff_vs_adjoint"] = autodiff
    results["autodiff_over_adjoint"] = autodiff["ratio"]

    log(f"[{time.perf_counter() - start:6.1f} s] self-influence: diagonal vs matrix ...")
    own = bench_self_influence_diagonal(**cfg["self_influence"], repeats=repeats)
    results["self_influence_diagonal"] = own
    results["self_influence_diagonal_speedup"] = own["speedup"]

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

    log(f"[{time.perf_counter() - start:6.1f} s] counterfactual banks ...")
    results.update(run_bank_benchmarks(mode, log))

    log(f"[{time.perf_counter() - start:6.1f} s] peers at rho = 0 (pyDVL, dattri where installed) ...")
    results.update(run_peer_benchmarks(cfg["peers"], log))
    log(f"[{time.perf_counter() - start:6.1f} s] the root solver from a trained MLP's end point ...")
    results.update(run_root_benchmarks(mode, log))

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
