"""Adam and AdamW under SAM: the exact adjoint through the run against the training that recorded it.

    bench_adam_adjoint_over_training   adam_adjoint_over_training (target <= 2.5): the adjoint for all n
                                       (one test loss) / the training run, through an AdamW + SAM run
                                       with clipping and a warm-up + cosine schedule, for the logistic
                                       model and the MLP of ``bench_adjoint_over_training``

The adjoint of an Adam step carries (θ, m, v) back and reads the descent gradient g̃_t (Adam's
derivatives depend on it, SGD's do not), so it takes one batch gradient at ŵ_t per step more than the
SGD adjoint: about two HVPs, two JVPs and one gradient per step against training's two gradients.
"""

from __future__ import annotations

import argparse
import sys

import common  # noqa: F401  (first: one BLAS thread before NumPy loads, and this checkout on sys.path)
from common import RHO, merge_results, paired_best_times

from refsam import SAM, AdamW, GradientClipping, train, trajectory_influence
from refsam.training import linear_warmup_cosine_lr


def bench_adam_adjoint_over_training(problem, X_test, y_test, steps, batch_size, repeats) -> dict:
    """(trajectory adjoint for all n, one test loss) / (the AdamW + SAM training run that recorded it)."""
    sam = SAM(RHO)
    optimizer = AdamW(linear_warmup_cosine_lr(1e-2, steps, max(1, steps // 10)), weight_decay=1e-2)
    clip = GradientClipping(1.0)
    run = {}

    def run_training():
        run["trajectory"] = train(problem, sam, optimizer, steps, batch_size=batch_size, seed=0,
                                  clip_grad_norm=clip)

    run_training()

    def run_adjoint():
        trajectory_influence(problem, run["trajectory"], X_test[:1], y_test[:1], "adjoint", verify=False)

    t_train, t_adjoint = paired_best_times(run_training, run_adjoint, repeats)
    return {
        "model": problem.model.name, "n": problem.n, "d": problem.d, "steps": steps,
        "batch_size": batch_size, "optimizer": "AdamW, clip 1.0, warm-up + cosine",
        "training_seconds": t_train, "adjoint_seconds": t_adjoint, "ratio": t_adjoint / t_train,
    }


def run_adam_benchmarks(mode: str = "full", log=print) -> dict:
    """The two runs of ``benchmarks/run.py``'s adjoint sizes (its CONFIGS[mode]), through AdamW + SAM."""
    from common import logistic_problem, mlp_problem
    from run import CONFIGS

    cfg = CONFIGS[mode]
    runs = {}
    for key, make in (("adjoint_logistic", lambda c: logistic_problem(c["n"], c["p"])),
                      ("adjoint_mlp", lambda c: mlp_problem(c["n"], c["sizes"]))):
        c = cfg[key]
        log(f"AdamW adjoint vs training: {key} {c}")
        problem, _, X_test, y_test = make(c)
        runs[key] = bench_adam_adjoint_over_training(problem, X_test, y_test, c["steps"], c["batch_size"],
                                                     cfg["repeats"])
    return {"adam_adjoint_over_training": max(r["ratio"] for r in runs.values()),
            "adam_adjoint_over_training_runs": runs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--update", metavar="RESULTS", help="merge the keys into an existing results JSON")
    args = parser.parse_args(argv)
    results = run_adam_benchmarks("quick" if args.quick else "full",
                                  log=lambda msg: print(msg, file=sys.stderr, flush=True))
    for key, r in results["adam_adjoint_over_training_runs"].items():
        print(f"{key}: {r['model']} n={r['n']} d={r['d']} T={r['steps']} batch={r['batch_size']}: adjoint "
              f"{r['adjoint_seconds']:.3f} s / training {r['training_seconds']:.3f} s = {r['ratio']:.2f}")
    print(f"adam_adjoint_over_training = {results['adam_adjoint_over_training']:.2f}  target <= 2.5")
    if args.update:
        merge_results(args.update, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
