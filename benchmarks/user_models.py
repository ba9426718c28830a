"""A user's own model (a `refsam.Model` with per-sample losses in autograd.numpy, nothing else) against
the built-in model of the same loss, on the same run.

    bench_user_model_adjoint_over_builtin   user_model_adjoint_over_builtin (target <= 3): the trajectory
                                            adjoint (all n, one test loss) of a user logistic model over
                                            `refsam.LogisticRegression`'s, and the same for an MLP written
                                            as a user model (`AutogradMLP`: the MLP's spec, autograd's
                                            derivatives) over `refsam.MLP`'s (batch 100)
    user_model_runs                         both runs' details; ``*_large_batch``: the same pair at
                                            n = 5000, batch 1000 (logistic: d = 200)

A user model's derivatives are `refsam.models.AutogradDerivatives`: (H v, J v) together by
reverse-of-reverse (one trace per point of φ(θ, u) = J(θ)ᵀu, then one backward pass per column), and the
cancellation check's Σ|c_i|‖∇ℓ_i‖ bounded by 5 evaluations of the losses unless the bound cannot rule the
warning out. Both runs are trained from the same seed with the same optimizer, so they are the same run
up to rounding; the table reports the influences' difference.

Each run also records where a user step's time goes (``per_step``, µs, process time, best of 20): the
adjoint's step does two points (θ_t and ŵ_t), each one trace and one backward pass, plus the screen at
θ_t; ``trace_and_backward`` is a fresh point's first (H v, J v), ``backward`` a second column at that
point, ``screen`` the cancellation check's bound; ``builtin_step`` and ``user_step`` the two adjoints'
process times (best of ``repeats``) divided by T. ``forward_over_reverse`` is the same (H v, J v) by
autograd's forward mode over the reverse pass (its difference to refsam's in
``forward_over_reverse_max_abs_diff``), the cheapest form autograd offers for one column, and
``autograd_floor_over_builtin_step`` twice it (the step's two points) over the built-in step: what no
adjoint through autograd can go below, whatever else it shares.
"""

from __future__ import annotations

import argparse
import sys
import time

import common  # noqa: F401  (first: one BLAS thread before NumPy loads, and this checkout on sys.path)

# isort: split
import autograd.numpy as anp  # (autograd loads NumPy: after common)
import numpy as np
from autograd import make_vjp
from autograd.differential_operators import make_jvp
from common import (
    RHO,
    AutogradMLP,
    best_time,
    logistic_problem,
    merge_results,
    mlp_problem,
    paired_best_times,
    with_model,
)

import refsam
from refsam import SAM, train, trajectory_influence
from refsam.models import AutogradDerivatives, grad_norm_sum_screen


class UserLogistic(refsam.Model):
    """Binary logistic regression as a user writes it: θ = [w, b], ℓ = log(1 + e^{−s z}), s = ±1."""

    name = "user_logistic"

    @property
    def n_classes(self) -> int:
        return 2

    def n_params(self, n_features: int) -> int:
        return n_features + 1

    def losses(self, theta, X, y):
        z = anp.dot(X, theta[:-1]) + theta[-1]
        return anp.logaddexp(0.0, (1.0 - 2.0 * y) * z)


def _process_best(fn, repeats: int) -> float:
    return best_time(fn, repeats, clock=time.process_time)


def _per_step(user, run, repeats=20) -> dict:
    """µs of one point's derivative work for the user model, at θ_T on the last batch (module docstring)."""
    idx, theta = run.batches[-1], run.thetas[-1]
    X, y, c = user.X[idx], user.y[idx], user.weights[idx] / len(idx)
    v = np.random.default_rng(0).standard_normal((theta.shape[0], 2))
    at = AutogradDerivatives(user.model, theta, X, y, c)
    at.hvp_and_jvp(v[:, 0])

    def losses(t):
        return user.model.losses(t, X, y)

    def gradient_and_losses(t):  # (J(θ)ᵀc, ℓ(θ)): its forward-mode tangent along v is (H v, J v)
        backward, values = make_vjp(losses)(t)
        return anp.concatenate([backward(c), values])

    def forward_over_reverse():
        return make_jvp(gradient_and_losses)(theta)(v[:, 0])[1]

    HV, JV = at.hvp_and_jvp(v[:, 0])
    tangent = forward_over_reverse()
    return {"trace_and_backward": 1e6 * _process_best(
                lambda: AutogradDerivatives(user.model, theta, X, y, c).hvp_and_jvp(v[:, 0]), repeats),
            "backward": 1e6 * _process_best(lambda: at.hvp_and_jvp(v[:, 1]), repeats),
            "screen": 1e6 * _process_best(lambda: grad_norm_sum_screen(losses, theta, c), repeats),
            "forward_over_reverse": 1e6 * _process_best(forward_over_reverse, repeats),
            "forward_over_reverse_max_abs_diff": float(np.max(np.abs(tangent - np.concatenate([HV[:, 0],
                                                                                           JV[:, 0]]))))}


def _adjoint_pair(builtin, user, optimizer, X_test, y_test, steps, batch_size, repeats, same_spec):
    sam = SAM(RHO)
    run_b = train(builtin, sam, optimizer, steps, batch_size=batch_size, seed=0, progress=False)
    run_u = run_b if same_spec else train(user, sam, optimizer, steps, batch_size=batch_size, seed=0,
                                          progress=False)
    out = {}

    def adjoint_builtin():
        out["builtin"] = trajectory_influence(builtin, run_b, X_test[:1], y_test[:1], verify=False,
                                              progress=False)

    def adjoint_user():
        out["user"] = trajectory_influence(user, run_u, X_test[:1], y_test[:1], verify=False, progress=False)

    t_builtin, t_user = paired_best_times(adjoint_builtin, adjoint_user, repeats)
    diff = float(np.max(np.abs(out["user"] - out["builtin"])) / np.max(np.abs(out["builtin"])))
    per_step = _per_step(user, run_u)
    per_step.update(builtin_step=1e6 * _process_best(adjoint_builtin, repeats) / steps,
                    user_step=1e6 * _process_best(adjoint_user, repeats) / steps)
    # the floor of any adjoint through autograd: (H v, J v) at the step's two points by the cheapest
    # autograd form measured, against the whole built-in step
    floor = 2 * per_step["forward_over_reverse"]
    per_step["autograd_floor_over_builtin_step"] = floor / per_step["builtin_step"]
    return {"n": builtin.n, "d": builtin.d, "steps": steps, "batch_size": batch_size,
            "builtin_seconds": t_builtin, "user_seconds": t_user, "ratio": t_user / t_builtin,
            "max_rel_diff_user_vs_builtin": diff, "per_step": per_step}


def bench_user_model_adjoint_over_builtin(n=1000, p=49, sizes=(20, 64, 50, 5), steps=200, mlp_steps=50,
                                          batch_size=100, large=None, repeats=3) -> dict:
    """The two keys at ``batch_size``; with ``large`` = dict(n=, p=, batch_size=, steps=, mlp_steps=), the
    same pair again at a larger batch (``*_large_batch`` runs: where the arithmetic outweighs autograd's
    per-operation overhead)."""
    runs, sizes_by_suffix = {}, {"": (n, p, batch_size, steps, mlp_steps)}
    if large:
        sizes_by_suffix["_large_batch"] = tuple(large[key] for key in ("n", "p", "batch_size", "steps",
                                                                       "mlp_steps"))
    for suffix, (n_, p_, batch, steps_, mlp_steps_) in sizes_by_suffix.items():
        problem, optimizer, X_test, y_test = logistic_problem(n_, p_)
        user = refsam.Problem(UserLogistic(), problem.X, problem.y, problem.weights, l2=problem.l2)
        runs["logistic" + suffix] = _adjoint_pair(problem, user, optimizer, X_test, y_test, steps_, batch,
                                                  repeats, False)
        problem, optimizer, X_test, y_test = mlp_problem(n_, sizes)
        user = with_model(problem, AutogradMLP(sizes, "tanh"))
        runs["mlp" + suffix] = _adjoint_pair(problem, user, optimizer, X_test, y_test, mlp_steps_, batch,
                                             repeats, True)
    return {"user_model_adjoint_over_builtin": runs["logistic"]["ratio"],
            "user_mlp_adjoint_over_builtin": runs["mlp"]["ratio"],
            "user_model_runs": runs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", metavar="RESULTS", help="merge the keys into an existing results JSON")
    parser.add_argument("--repeats", type=int, help="timings per side (default: the full run's)")
    args = parser.parse_args(argv)
    from run import CONFIGS

    results = bench_user_model_adjoint_over_builtin(**CONFIGS["full"]["user_models"],
                                                    repeats=args.repeats or CONFIGS["full"]["repeats"])
    for key, r in results["user_model_runs"].items():
        print(f"{key}: n={r['n']} d={r['d']} T={r['steps']} batch={r['batch_size']}: user "
              f"{r['user_seconds']:.3f} s / built-in {r['builtin_seconds']:.3f} s = {r['ratio']:.2f} "
              f"(max rel. diff {r['max_rel_diff_user_vs_builtin']:.1e})")
        print("  per step (us): " + ", ".join(f"{k} {v:.0f}" for k, v in r["per_step"].items()))
    if args.update:
        merge_results(args.update, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
