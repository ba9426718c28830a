"""Curvature: explicit Hessians and the derivative products every method is built from.

    bench_mlp_hessian            mlp_hessian_d2000 (autograd vs R-operator blocks vs the layer-wise assembly)
    bench_derivative_products    derivative_products (MLP gradient, HVP and JVP costs, in gradients)
    bench_softmax_hessian_rate   softmax_hessian_dgemm_fraction (hardware: its rate over a dgemm's)
"""

from __future__ import annotations

import common  # noqa: F401  (first: one BLAS thread before NumPy loads, and this checkout on sys.path)
import numpy as np
from common import best_time, mlp_problem, round_robin_best_times

from refsam import MLP, Problem, SoftmaxRegression
from refsam.models import AutogradDerivatives


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
    problem, _, _, _ = mlp_problem(n, sizes)
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


def _product_calls(sizes, batch: int):
    """{name: argument-free call} for one batch of a tanh MLP; the fused fast paths if present."""
    problem, _, _, _ = mlp_problem(batch, sizes)
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


def _gemm_rate(n: int, d: int, repeats: int) -> float:
    """FLOP/s of a dgemm AᵀB, A and B (n, d), on this machine now (2·n·d² flops)."""
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    return 2.0 * n * d * d / best_time(lambda: A.T @ B, repeats)


def bench_softmax_hessian_rate(n: int, p: int, K: int, repeats: int) -> dict:
    """SoftmaxRegression's Hessian: its rate over the flops it needs (symmetric rank-n updates: n·d(d+1)
    for MᵀCM plus K·n·q(q+1) for the diagonal blocks, q = p + 1, d = qK) against a same-size dgemm's.
    The loss alone (no L2 term): a weight decay belongs to the optimizer and never enters a Hessian."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((n, p)), rng.integers(0, K, n)
    problem = Problem(SoftmaxRegression(K), X, y)
    theta = 0.1 * rng.standard_normal(problem.d)
    at = problem.at(theta)
    q, d = p + 1, problem.d
    seconds = best_time(at.hessian, repeats)
    flops = n * d * (d + 1) + K * n * q * (q + 1)
    rate, dgemm = flops / seconds, _gemm_rate(n, d, repeats)
    return {"n": n, "d": d, "seconds": seconds, "gflops": rate / 1e9, "dgemm_gflops": dgemm / 1e9,
            "fraction_of_dgemm": rate / dgemm}
