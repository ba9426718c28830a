"""Hypothesis strategies for refsam's domain: small problems, SAM rules and recorded runs.

These are a public asset for anyone testing refsam or checking a port of it against refsam: each
strategy is named for what it draws, bounded (small n, p and d; bounded float entries, so every draw
runs in milliseconds and no draw overflows), and seeded (randomness that hypothesis does not draw
element by element comes from a drawn integer seed through ``np.random.default_rng``; under
hypothesis's derandomized ``ci`` profile every run draws the same examples).

This module imports ``hypothesis`` (the ``test`` extra: ``pip install "refsam[test]"``). ``import refsam``
never imports it, so the runtime dependencies stay numpy, scipy and autograd.

Strategies
----------
``problems(...)``       a `Problem`: logistic, softmax or MLP model, X with bounded
                        entries, valid labels, the loss's λ (``l2``), optional sample weights.
``sam_configs(...)``    a `SAM`: rule, ρ, κ.
``optimizers(steps)``   a `SGD`: η (constant or per step), weight decay, momentum.
``trajectories(...)``   a pair ``(problem, trajectory)``: a short recorded `train()` run.

``influence_problems(...)``  an `InfluenceProblem` (problem, sam, trajectory, X_test, y_test):
                        a drawn run plus test points — everything an influence method takes.
``suite_cases(pattern)`` one of the oracle kit's 84 reference-case configurations, as an InfluenceProblem.

Helpers
-------
``rel_err(a, b)``       refsam's relative error ‖a − b‖_∞ / max(‖b‖_∞, 1e-300) (`refsam.tolerances`).
``check_grads(model, theta, X, y, c)``  the derivative oracle: every product of ``model.at(...)`` against
                        autograd on ``model.losses`` and against central finite differences.
``assert_influence_close(actual, desired, rtol, atol, err_msg)``  the ``refsam check`` criterion as
                        an assertion, with a diagnosis on failure (worst entries, sign, scale, shape).

Example
-------
>>> from hypothesis import given
>>> from refsam.kit.testing import problems, sam_configs
>>> @given(problems(kinds=("logistic",)), sam_configs(rules=("sam",), min_rho=0.01))
... def test_sam_radius(problem, sam): ...
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

try:
    from hypothesis import assume
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays
except ImportError as exc:  # pragma: no cover - exercised only without the test extra
    raise ImportError(
        'refsam.kit.testing needs hypothesis; install the test extra: pip install "refsam[test]"'
    ) from exc

from typing import Any

from numpy.typing import ArrayLike

from ..models import ACTIVATIONS, MLP, AutogradDerivatives, LogisticRegression, Model, SoftmaxRegression
from ..objective import Problem
from ..sam import BASE_RULES, SAM
from ..tolerances import FD_GRAD_STEP, RTOL_DERIVATIVE, RTOL_FD_DERIVATIVE, rel_err
from ..training import SGD, Trajectory, train

__all__ = [
    "MIN_POSITIVE_WEIGHT",
    "MODEL_KINDS",
    "InfluenceProblem",
    "assert_influence_close",
    "check_grads",
    "influence_problems",
    "optimizers",
    "problems",
    "rel_err",
    "sam_configs",
    "suite_cases",
    "trajectories",
]

MODEL_KINDS = ("logistic", "softmax", "mlp")
MIN_POSITIVE_WEIGHT = 1e-100  # the smallest non-zero sample weight the strategies draw


def _bounded_floats(low: float, high: float) -> st.SearchStrategy[float]:
    """Finite float64 in [low, high], no subnormals (they only test the FPU, not refsam)."""
    return st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)


@st.composite
def problems(draw: Any, kinds: tuple[str, ...] = MODEL_KINDS, min_n: int = 2, max_n: int = 10,
             max_features: int = 3, max_classes: int = 3, max_abs_x: float = 2.0,
             l2s: tuple[float, ...] = (0.0, 0.0, 1e-2, 0.1), weighted: bool | None = None,
             activations: tuple[str, ...] = ACTIVATIONS, max_depth: int = 2, max_width: int = 3) -> Problem:
    """A small random `Problem`.

    Parameters
    ----------
    kinds : subset of ("logistic", "softmax", "mlp")
        Model families to draw from. MLPs get 1..``max_depth`` hidden layers of width 1..``max_width``
        and an activation from ``activations``.
    min_n, max_n : int
        Range of the number of training points n.
    max_features : int
        p is drawn from 1..max_features.
    max_classes : int
        K for softmax and MLP is drawn from 2..max_classes (logistic is always binary).
    max_abs_x : float
        Entries of X lie in [−max_abs_x, max_abs_x].
    l2s : sequence of float
        The loss's λ (``Problem(l2=λ)``, seen by the perturbation) is drawn from these values.
    weighted : bool or None
        True: sample weights w_i drawn from {0} ∪ [1e-100, 2] (MIN_POSITIVE_WEIGHT: a weight of 1e-308
        makes its gradients subnormal, where refsam raises NonFiniteResultError rather than compute);
        False: all ones; None: either.
    """
    kind = draw(st.sampled_from(kinds))
    model: Model
    n = draw(st.integers(min_n, max_n))
    p = draw(st.integers(1, max_features))
    n_classes = 2 if kind == "logistic" else draw(st.integers(2, max_classes))
    if kind == "logistic":
        model = LogisticRegression()
    elif kind == "softmax":
        model = SoftmaxRegression(n_classes)
    else:
        hidden = draw(st.lists(st.integers(1, max_width), min_size=1, max_size=max_depth))
        model = MLP((p, *hidden, n_classes), activation=draw(st.sampled_from(activations)))
    X = draw(arrays(np.float64, (n, p), elements=_bounded_floats(-max_abs_x, max_abs_x)))
    y = draw(arrays(np.int64, (n,), elements=st.integers(0, n_classes - 1)))
    l2 = draw(st.sampled_from(l2s))
    if weighted is None:
        weighted = draw(st.booleans())
    weight_values = st.one_of(st.just(0.0), _bounded_floats(MIN_POSITIVE_WEIGHT, 2.0))
    weights = draw(arrays(np.float64, (n,), elements=weight_values)) if weighted else None
    return Problem(model, X, y, weights=weights, l2=l2)


@st.composite
def sam_configs(draw: Any, rules: tuple[str, ...] = BASE_RULES, min_rho: float = 0.0,
                max_rho: float = 0.3,
                min_kappa: float = 1e-3, max_kappa: float = 1.0, conventions: bool | None = False) -> SAM:
    """A `SAM` with rule from ``rules``, ρ in [min_rho, max_rho], κ in [min_kappa, max_kappa].

    Pass ``min_rho > 0`` when the property needs a genuine perturbation (‖ε‖ = ρ, say); with the
    default ``min_rho = 0`` the boundary ρ = 0 (plain (S)GD) is among the draws. ``conventions``:
    True also draws the public implementations' options — ``norm_eps`` in {1e-16, 1e-12},
    ``m_sharpness`` in 1..4, κ = 0 (ASAM) —, False (default) none of them, None either.
    """
    rule = draw(st.sampled_from(rules))
    rho = draw(_bounded_floats(min_rho, max_rho))
    kappa = draw(_bounded_floats(min_kappa, max_kappa))
    if conventions is None:
        conventions = draw(st.booleans())
    if not conventions:
        return SAM(rho, rule, kappa)
    norm_eps = draw(st.sampled_from([0.0, 1e-16, 1e-12]))
    m_sharpness = draw(st.one_of(st.none(), st.integers(1, 4)))
    if rule == "asam" and draw(st.booleans()):
        kappa = 0.0
    return SAM(rho, rule, kappa, norm_eps=norm_eps, m_sharpness=m_sharpness)


@st.composite
def optimizers(draw: Any, steps: int, max_lr: float = 0.3, per_step_lr: bool | None = None,
               weight_decays: tuple[float, ...] = (0.0, 1e-2, 0.1), momentum: bool | None = False) -> SGD:
    """A `SGD` for a run of ``steps`` steps.

    η is drawn from [1e-3, max_lr], constant or (``per_step_lr``; None: either) one value per step; the
    weight decay from ``weight_decays``; ``momentum`` True: μ in [0.5, 0.95], Nesterov or not, dampening 0
    (torch.optim.SGD semantics); False (default): plain SGD; None: either.
    """
    if per_step_lr is None:
        per_step_lr = draw(st.booleans())
    lr: Any
    if per_step_lr:
        lr = draw(arrays(np.float64, (steps,), elements=_bounded_floats(1e-3, max_lr)))
    else:
        lr = draw(_bounded_floats(1e-3, max_lr))
    if momentum is None:
        momentum = draw(st.booleans())
    mu, nesterov = (draw(_bounded_floats(0.5, 0.95)), draw(st.booleans())) if momentum else (0.0, False)
    return SGD(lr, mu, nesterov=nesterov, weight_decay=draw(st.sampled_from(weight_decays)))


@st.composite
def trajectories(draw: Any, problem_strategy: Any = None, sam_strategy: Any = None, min_steps: int = 1,
                 max_steps: int = 5, max_lr: float = 0.3, per_step_lr: bool | None = None,
                 minibatch: bool | None = None, momentum: bool | None = False,
                 weight_decays: tuple[float, ...] = (0.0, 1e-2, 0.1)) -> tuple[Problem, Trajectory]:
    """``(problem, trajectory)``: a short recorded SAM run on a drawn problem.

    Parameters
    ----------
    problem_strategy, sam_strategy : strategies, optional
        Default `problems()` and `sam_configs()`.
    min_steps, max_steps : int
        Range of T.
    max_lr, per_step_lr, momentum, weight_decays :
        The optimizer's, as `optimizers()` draws it.
    minibatch : bool or None
        True: a batch size in 1..n (seeded per-epoch shuffles, possibly a smaller last batch);
        False: full batch; None: either.

    Notes
    -----
    Draws where a batch gradient is exactly zero under the SAM/ASAM rule (ε undefined, refsam raises
    `ZeroGradientError`) or the run diverges are rejected, not returned.
    """
    problem = draw(problems() if problem_strategy is None else problem_strategy)
    sam = draw(sam_configs() if sam_strategy is None else sam_strategy)
    steps = draw(st.integers(min_steps, max_steps))
    optimizer = draw(optimizers(steps, max_lr, per_step_lr, weight_decays, momentum))
    if minibatch is None:
        minibatch = draw(st.booleans())
    batch_size = draw(st.integers(1, problem.n)) if minibatch else None
    seed = draw(st.integers(0, 2**16))
    try:
        trajectory = train(problem, sam, optimizer, steps, batch_size=batch_size, seed=seed, progress=False)
    except FloatingPointError:  # ZeroGradientError (ε undefined) or divergence: discard this draw
        assume(False)
    return problem, trajectory


# -- comparing influence scores (the oracle kit) --------------------------------------------------------
MAX_WORST_ENTRIES = 5  # entries listed in a failure message


def assert_influence_close(actual: ArrayLike, desired: ArrayLike, rtol: float = 1e-7, atol: float = 0.0,
                           err_msg: str = "") -> None:
    """Assert that influence scores match a reference, with a diagnosis when they do not.

    Passes iff ``max|actual − desired| ≤ atol + rtol · max|desired|`` — the criterion of
    ``refsam check`` (rel_err over the whole array, so tiny entries need no special care).
    ``desired`` is the reference (e.g. refsam's `trajectory_influence()`); arrays are
    typically (n_train, n_test), entry [j, k] = I_j(f_k), but any matching shapes work.

    On failure the AssertionError states the error and the tolerance, how many entries are off, the
    worst entries with their indices, the Spearman rank correlation, and what the mismatch looks like
    when it has a simple cause: a flipped sign (refsam's I_j = +∂f/∂w_j), a constant scale factor (such
    as n: Koh & Liang's I_up,loss = n·I_j), transposed shapes, non-finite entries, or all zeros.
    """
    a = np.asarray(actual, dtype=np.float64)
    d = np.asarray(desired, dtype=np.float64)
    header = "influence scores differ" + (f": {err_msg}" if err_msg else "")
    if a.shape != d.shape:
        hint = "; transposed? influence arrays are (n_train, n_test)" if a.shape == d.shape[::-1] else ""
        raise AssertionError(f"{header}\nshape mismatch: actual {a.shape}, desired {d.shape}{hint}")
    for name, arr in (("actual", a), ("desired", d)):
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))
            raise AssertionError(f"{header}\n{name} has {len(bad)} NaN/inf entries, the first at "
                                 f"{_index(bad[0])}")
    if a.size == 0:
        return
    diff = np.abs(a - d)  # same shape as the inputs
    scale = float(np.max(np.abs(d)))
    tolerance = atol + rtol * scale
    max_abs = float(np.max(diff))
    if max_abs <= tolerance:
        return
    n_off = int(np.count_nonzero(diff > tolerance))
    lines = [
        header,
        f"max |actual − desired| = {max_abs:.3e} > atol + rtol·max|desired| = {atol:.1e} + {rtol:.1e}·"
        f"{scale:.3e} = {tolerance:.3e}",
        f"relative error {max_abs / max(scale, 1e-300):.3e}; {n_off} of {a.size} entries off by more than "
        f"the tolerance",
    ]
    diagnosis = _diagnose(a, d, tolerance)
    if diagnosis:
        lines.append("looks like: " + diagnosis)
    if a.size >= 2 and np.ptp(a) > 0 and np.ptp(d) > 0:
        from scipy.stats import spearmanr

        lines.append(f"Spearman rank correlation {spearmanr(a.ravel(), d.ravel())[0]:.6f}")
    lines.append("worst entries (index: actual, desired, difference):")
    for flat in np.argsort(diff, axis=None)[::-1][:min(MAX_WORST_ENTRIES, n_off)]:
        where = np.unravel_index(flat, a.shape)
        lines.append(f"  {_index(where)}: {a[where]:+.6e}, {d[where]:+.6e}, {a[where] - d[where]:+.3e}")
    raise AssertionError("\n".join(lines))


def _index(where: Any) -> str:
    return "[" + ", ".join(str(int(i)) for i in where) + "]"


def _diagnose(a: np.ndarray, d: np.ndarray, tolerance: float) -> str:
    """A simple explanation of a mismatch, or ""."""
    if not np.any(a):
        return "actual is identically zero"
    if np.max(np.abs(a + d)) <= tolerance:
        return ("actual = −desired: the sign is flipped (refsam's I_j = +∂f/∂w_j at w = 1; removing j "
                "is Δw_j = −1)")
    dd = float(np.sum(d * d))
    if dd > 0:
        c = float(np.sum(a * d)) / dd  # least-squares factor: actual ≈ c · desired
        if c != 0 and np.max(np.abs(a / c - d)) <= tolerance:
            return (f"actual ≈ {c:.6g} × desired: a constant scale factor (a factor n or |B| is Koh & "
                    f"Liang's I_up,loss = n·I_j, or a mean taken over Σw instead of |B|)")
    return ""


# -- bundles for influence methods ----------------------------------------------------------------------
class InfluenceProblem(NamedTuple):
    """Everything an influence method takes: a recorded run and test points.

    ``problem`` (Problem), ``sam`` (SAM, the run's rule), ``trajectory`` (Trajectory),
    ``X_test`` (m, p), ``y_test`` (m,) int labels valid for the model.
    """

    problem: Problem
    sam: SAM
    trajectory: Trajectory
    X_test: np.ndarray
    y_test: np.ndarray


@st.composite
def influence_problems(draw: Any, trajectory_strategy: Any = None, min_test: int = 1, max_test: int = 3,
                       max_abs_x: float = 2.0) -> InfluenceProblem:
    """An `InfluenceProblem`: a drawn run (default `trajectories()`) plus m ∈ [min_test,
    max_test] test points with entries in [−max_abs_x, max_abs_x] and labels valid for the model."""
    problem, trajectory = draw(trajectories() if trajectory_strategy is None else trajectory_strategy)
    m = draw(st.integers(min_test, max_test))
    X_test = draw(arrays(np.float64, (m, problem.p), elements=_bounded_floats(-max_abs_x, max_abs_x)))
    y_test = draw(arrays(np.int64, (m,), elements=st.integers(0, problem.model.n_classes - 1)))
    return InfluenceProblem(problem, trajectory.sam(), trajectory, X_test, y_test)


def suite_cases(pattern: str | None = None) -> st.SearchStrategy[InfluenceProblem]:
    """One of the oracle kit's reference-case configurations (`refsam.kit`), recorded afresh, as an
    `InfluenceProblem`. ``pattern`` selects case ids (``"mlp-*"``). Deterministic per case."""
    from .suite import make_run, select_specs

    def build(spec: Any) -> InfluenceProblem:
        problem, sam, trajectory, X_test, y_test = make_run(spec)
        return InfluenceProblem(problem, sam, trajectory, X_test, y_test)

    return st.sampled_from(select_specs(pattern)).map(build)


# -- the derivative oracle ------------------------------------------------------------------------------


def check_grads(model: Model, theta: ArrayLike, X: ArrayLike, y: ArrayLike, c: ArrayLike | None = None, *,
                rtol: float = RTOL_DERIVATIVE, n_directions: int = 3, seed: int = 0,
                finite_differences: bool = True) -> None:
    """Assert that ``model.at(theta, X, y, c)`` computes the derivatives of ``model.losses``.

    Like autograd's ``check_grads``, but for refsam's derivative protocol: every product of the model's
    `BatchDerivatives` — ``grad``, ``per_sample_grads``, ``hvp``, ``jvp``,
    ``hvp_and_jvp``, ``hessian`` — is compared with `AutogradDerivatives`
    (autograd on ``losses``, independent of any hand derivation) to ``rtol``, along ``n_directions``
    seeded random directions; with ``finite_differences`` also the gradient and the Hessian-vector
    product with central differences of the loss and of the gradient (h = 1e-6, rtol 1e-5), an oracle
    independent of autograd as well. Raises AssertionError naming the first product that disagrees.
    """
    theta = np.asarray(theta, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    c = np.ones(X.shape[0]) if c is None else np.asarray(c, dtype=np.float64)
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((theta.shape[0], n_directions))  # (d, k)
    mine, oracle = model.at(theta, X, y, c), AutogradDerivatives(model, theta, X, y, c)
    hv, jv = mine.hvp_and_jvp(V)
    pairs = {
        "grad()": (mine.grad(), oracle.grad()),
        "per_sample_grads()": (mine.per_sample_grads(), oracle.per_sample_grads()),
        "hvp(V)": (mine.hvp(V), oracle.hvp(V)),
        "hvp(v) for one vector": (mine.hvp(V[:, 0]), oracle.hvp(V[:, 0])),
        "jvp(V)": (mine.jvp(V), oracle.jvp(V)),
        "hvp_and_jvp(V)[0]": (hv, oracle.hvp(V)),
        "hvp_and_jvp(V)[1]": (jv, oracle.jvp(V)),
        "hessian()": (mine.hessian(), oracle.hessian()),
        "losses()": (mine.losses(), oracle.losses()),
    }
    for what, (actual, desired) in pairs.items():
        _assert_close(f"{type(model).__name__}.at(...).{what} vs autograd", actual, desired, rtol)
    if not finite_differences:
        return
    h = FD_GRAD_STEP

    def loss(t: Any) -> float:
        return float(c @ np.asarray(model.losses(t, X, y)))

    for col in range(n_directions):
        v = V[:, col]
        fd_grad = (loss(theta + h * v) - loss(theta - h * v)) / (2 * h)
        _assert_close("grad()·v vs central differences of the loss", np.array([mine.grad() @ v]),
                      np.array([fd_grad]), RTOL_FD_DERIVATIVE)
        plus, minus = model.at(theta + h * v, X, y, c).grad(), model.at(theta - h * v, X, y, c).grad()
        _assert_close("hvp(v) vs central differences of grad()", mine.hvp(v), (plus - minus) / (2 * h),
                      RTOL_FD_DERIVATIVE)


def _assert_close(what: str, actual: Any, desired: Any, rtol: float) -> None:
    actual, desired = np.asarray(actual, dtype=np.float64), np.asarray(desired, dtype=np.float64)
    if actual.shape != desired.shape:
        raise AssertionError(f"{what}: shape {actual.shape}, expected {desired.shape}")
    err = rel_err(actual, desired)
    if not err <= rtol:
        raise AssertionError(f"{what}: relative error {err:.3e} > rtol {rtol:.1e}")
