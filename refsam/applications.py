"""Applications of influence: mislabeled-data detection, data removal, proponents and opponents, and
validation of every method against retraining (the last layer before the CLI).

Conventions
-----------
* Influence follows SPEC §1: ``I_j(f) = ∂ f(θ_final(w)) / ∂ w_j`` at w = 1, so removing point j
  changes f by about ``−I_j(f)``. Every method below returns this quantity, shape (n_train, n_test)
  for the per-sample test losses ``f = ℓ(z_test, ·)``.
* Methods (:data:`METHODS`):
    ``sam-full``    closed form at the SAM fixed point θ̂ (implicit function theorem; exact at a root)
    ``sam-frozen``  Koh–Liang at ŵ = θ̂ + ε̂ with ε̂ held constant (ablation)
    ``erm``         Koh–Liang at θ̂, SAM ignored (ablation)
    ``trajectory``  exact derivative of the recorded run (adjoint recursion)
    ``first-order`` trajectory with every step Jacobian A_t ≈ I and the SAM inner term dropped:
                    −Σ_t η_t c_{t,j} ∇ℓ_j(ŵ_t)ᵀ ∇f(θ_T)
    ``tracin``      TracIn, test gradient at the same checkpoint: −Σ_t η_t c_{t,j} ∇ℓ_j(ŵ_t)ᵀ ∇f(ŵ_t)
    ``first-order-unperturbed``, ``tracin-unperturbed``: the same with θ_t in place of ŵ_t
  (the trajectory family is :func:`refsam.trajectory_influence.trajectory_influence`; the closed-form
  family :func:`refsam.closed_form.hessian_influence`).
  and two detection baselines that are not influence methods: ``loss`` (rank by ℓ_j(θ_T)) and
  ``random``.
* Self-influence ``I_j(ℓ_j)`` is ≤ 0 for a well-behaved point (up-weighting j lowers its own loss). The
  detection score is ``−I_j(ℓ_j)``: how much j's own loss would rise if j were removed; points the
  model can fit only by memorising them — typically mislabeled ones — score high.
* Closed-form methods need a full-batch, decoupled run whose end point is refined to a root of
  G(θ) = ∇F(θ + ε(θ)) + λθ; :class:`Fit` records the residual and spectral radius so the report can say
  when the closed form is only an approximation (docs/validity.md).
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import pearsonr, rankdata, spearmanr

from ._validation import check_finite_array, check_positive_int, check_random_state
from .objective import Problem
from .sam import SAM
from .training import Trajectory, replay, train

CLOSED_FORM_METHODS = ("sam-full", "sam-frozen", "erm")
TRAJECTORY_METHODS = ("trajectory", "first-order", "tracin", "first-order-unperturbed", "tracin-unperturbed")
METHODS = CLOSED_FORM_METHODS + TRAJECTORY_METHODS
BASELINES = ("loss", "random")
DETECTION_FRACTIONS = (0.05, 0.10, 0.20)


def _progress(message: str, enabled: bool) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def rel_err(a, b) -> float:
    """‖a − b‖_∞ / max(‖b‖_∞, 1e-300) (SPEC §5)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# -- a trained model with everything the methods need ------------------------------------------------

@dataclass
class Fit:
    """A SAM training run and, where it exists, the SAM fixed point it converged to.

    Attributes
    ----------
    problem, sam, trajectory :
        The training problem, the perturbation rule and the recorded run.
    fixed_point :
        The result of ``solve_fixed_point`` started at θ_T (``.theta .residual .converged
        .spectral_radius``), or None when the closed form does not apply (minibatches; no root exists,
        e.g. coupled mode or λ = 0 on a convex model).
    fixed_point_note : str
        Why ``fixed_point`` is None, or "" .
    train_time : float
        Seconds spent training (and solving for the root).
    """

    problem: Problem
    sam: SAM
    trajectory: Trajectory
    fixed_point: object = None
    fixed_point_note: str = ""
    train_time: float = 0.0
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def theta_final(self) -> np.ndarray:
        """θ_T, the end of the recorded run, shape (d,)."""
        return self.trajectory.theta_final

    @property
    def theta_hat(self) -> np.ndarray:
        """θ̂: the refined root when there is one, else θ_T."""
        return self.theta_final if self.fixed_point is None else np.asarray(self.fixed_point.theta)

    def available_methods(self) -> tuple:
        """The methods that apply to this run (closed-form ones need a fixed point)."""
        if self.fixed_point is None:
            return TRAJECTORY_METHODS
        return METHODS


def fit(problem: Problem, sam: SAM, lr: float = 0.5, steps: int = 300, batch_size=None, seed=0,
        solve_root: bool = True, progress: bool = False) -> Fit:
    """Train with SAM (:func:`refsam.train`) and, for full-batch runs, refine θ_T to the SAM fixed point
    with ``solve_fixed_point`` so the closed-form methods apply. If no root exists (provably, e.g. coupled
    mode on a convex model) ``fixed_point`` is None; if the solver does not reach one, ``fixed_point``
    is its best point with ``converged=False`` and the closed forms are only approximations.

    Cost: ``steps`` SAM steps plus a root solve (a few d×d factorizations).
    """
    start = time.perf_counter()
    trajectory = train(problem, sam, lr, steps, batch_size=batch_size, seed=seed, progress=progress)
    fixed_point, note = None, ""
    if not solve_root:
        note = "root solve skipped"
    elif batch_size is not None and batch_size < problem.n:
        note = "minibatch run: no fixed point of the full-batch map is targeted"
    else:
        from .fixed_point import FixedPointError, solve_fixed_point

        lr_root = float(np.ravel(lr)[-1])  # the step size the run ended with, for the stability check
        try:
            fixed_point = solve_fixed_point(problem, sam, trajectory.theta_final, lr=lr_root,
                                            raise_on_failure=False)
        except FixedPointError as exc:  # no root exists (or G undefined): only trajectory methods apply
            note = str(exc).split(":")[0]  # the claim, without the proof that follows it
    return Fit(problem, sam, trajectory, fixed_point, note, time.perf_counter() - start)


# -- influence by method -------------------------------------------------------------------------------

def influence(fit_: Fit, method: str, X_test, y_test, progress: bool = False) -> np.ndarray:
    """I_j(ℓ(z_test_k, ·)) for every training point j and test point k, shape (n_train, n_test).

    ``method`` is one of :data:`METHODS` (see the module docstring). Closed-form methods use θ̂,
    trajectory methods the recorded run. ``progress`` reports the trajectory sweep on stderr.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}, got {method!r}")
    problem = fit_.problem
    X_test, y_test = problem.model.check_data(X_test, y_test, "X_test", "y_test")
    if method in CLOSED_FORM_METHODS:
        if fit_.fixed_point is None:
            raise ValueError(f"method {method!r} needs a SAM fixed point: {fit_.fixed_point_note}")
        from .closed_form import hessian_influence

        variant = {"sam-full": "full", "sam-frozen": "frozen", "erm": "erm"}[method]
        with warnings.catch_warnings():  # an unverified root is reported by the caller, not warned here
            warnings.simplefilter("ignore")
            return np.asarray(hessian_influence(problem, fit_.sam, fit_.theta_hat, X_test, y_test,
                                                variant=variant, on_unverified="warn"))
    from .trajectory_influence import trajectory_influence

    name = "adjoint" if method == "trajectory" else method.replace("-", "_")
    return np.asarray(trajectory_influence(problem, fit_.trajectory, X_test, y_test, method=name,
                                           progress=progress))


def self_influence(fit_: Fit, method: str, progress: bool = False) -> np.ndarray:
    """I_j(ℓ_j): each training point's influence on its own loss, shape (n,).

    Closed-form methods use ``closed_form.self_influence`` (one solve per training point); trajectory
    methods take the diagonal of :func:`influence` with the training set as test set (n test functions).
    """
    key = ("self", method)
    if key in fit_._cache:
        return fit_._cache[key]
    problem = fit_.problem
    if method in CLOSED_FORM_METHODS and fit_.fixed_point is not None:
        from .closed_form import self_influence as closed_form_self_influence

        variant = {"sam-full": "full", "sam-frozen": "frozen", "erm": "erm"}[method]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = closed_form_self_influence(problem, fit_.sam, fit_.theta_hat, variant=variant,
                                               on_unverified="warn")
    else:
        value = np.diag(influence(fit_, method, problem.X, problem.y, progress)).copy()
    fit_._cache[key] = np.asarray(value, dtype=np.float64)
    return fit_._cache[key]


# -- mislabeled-data detection ---------------------------------------------------------------------------

def detection_scores(fit_: Fit, method: str, seed=0, progress: bool = False) -> np.ndarray:
    """Suspicion scores, shape (n,): higher means more likely mislabeled.

    * influence methods: ``−I_j(ℓ_j)`` (self-influence, sign flipped: the rise of j's loss on removal)
    * ``loss``: ``ℓ_j(θ_T)``, the training loss at the end of the run
    * ``random``: seeded uniform noise (the chance baseline)
    """
    if method == "loss":
        return np.asarray(fit_.problem.losses(fit_.theta_final), dtype=np.float64)
    if method == "random":
        return check_random_state(seed).random(fit_.problem.n)
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS + BASELINES)}, got {method!r}")
    return -self_influence(fit_, method, progress)


def _check_scores_mask(scores, flipped):
    scores = check_finite_array("scores", scores, ndim=1)
    flipped = np.asarray(flipped)
    if flipped.shape != scores.shape:
        raise ValueError(f"`flipped` must have shape {scores.shape} to match `scores`, got {flipped.shape}")
    return scores, flipped.astype(bool)


def recall_at_fraction(scores, flipped, fraction: float) -> float:
    """Fraction of the flipped labels found among the top ``ceil(fraction·n)`` scores.

    Ties at the cut are broken by index order (stable sort), so the result is deterministic.
    """
    scores, flipped = _check_scores_mask(scores, flipped)
    if not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must lie in (0, 1], got {fraction}")
    if not flipped.any():
        raise ValueError("`flipped` marks no point: recall is undefined without flipped labels")
    k = int(np.ceil(fraction * scores.size - 1e-9))
    top = np.argsort(-scores, kind="stable")[:k]
    return float(flipped[top].sum() / flipped.sum())


def auroc(scores, flipped) -> float:
    """Area under the ROC curve for ``scores`` separating flipped (positive) from clean points.

    Computed by hand as the Mann–Whitney statistic with average ranks for ties:
        AUROC = (Σ_{i flipped} rank_i − n₊(n₊+1)/2) / (n₊ n₋)
    = P(score of a random flipped point > score of a random clean one) + ½ P(tie).
    """
    scores, flipped = _check_scores_mask(scores, flipped)
    n_pos, n_neg = int(flipped.sum()), int((~flipped).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs flipped and clean points, got {n_pos} flipped and {n_neg} clean")
    ranks = rankdata(scores)  # average ranks, 1..n
    return float((ranks[flipped].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_metrics(scores, flipped, fractions=DETECTION_FRACTIONS) -> dict:
    """``{"top5%": recall, "top10%": …, "top20%": …, "auroc": …}`` for one ranking."""
    out = {f"top{round(100 * f)}%": recall_at_fraction(scores, flipped, f) for f in fractions}
    out["auroc"] = auroc(scores, flipped)
    return out


def detection_curve(scores, flipped):
    """(fraction of data inspected, fraction of flipped labels found), each shape (n+1,), for plots."""
    scores, flipped = _check_scores_mask(scores, flipped)
    order = np.argsort(-scores, kind="stable")
    found = np.concatenate([[0], np.cumsum(flipped[order])]) / max(flipped.sum(), 1)
    inspected = np.arange(scores.size + 1) / scores.size
    return inspected, found


@dataclass
class DetectionResult:
    method: str
    scores: np.ndarray  # (n,), higher = more suspicious
    metrics: dict
    seconds: float


def detect_mislabeled(fit_: Fit, flipped, methods=None, seed=0, progress: bool = False) -> list:
    """Rank training points by every method (and the loss and random baselines) and score the ranking
    against the known ``flipped`` mask. Returns a list of :class:`DetectionResult`."""
    flipped = np.asarray(flipped, dtype=bool)
    if flipped.shape != (fit_.problem.n,):
        raise ValueError(f"`flipped` must have shape ({fit_.problem.n},), got {flipped.shape}")
    methods = list(fit_.available_methods() if methods is None else methods) + list(BASELINES)
    results = []
    for i, method in enumerate(methods):
        _progress(f"  detection [{i + 1}/{len(methods)}] {method}", progress)
        start = time.perf_counter()
        scores = detection_scores(fit_, method, seed, progress and method == "trajectory")
        seconds = time.perf_counter() - start
        results.append(DetectionResult(method, scores, detection_metrics(scores, flipped), seconds))
    return results


# -- data removal and model editing ----------------------------------------------------------------------

def mean_loss(problem: Problem, theta, X, y) -> float:
    """f(θ) = (1/m) Σ_k ℓ(z_k, θ), the mean loss on (X, y)."""
    return float(np.mean(problem.model.losses(theta, X, y)))


def retrain_without(fit_: Fit, removed) -> np.ndarray:
    """θ_T of the same run (init, batches, learning rates, rule) with w_j = 0 for j in ``removed``."""
    weights = fit_.problem.weights.copy()
    weights[np.asarray(removed, dtype=np.int64)] = 0.0
    return replay(fit_.problem, fit_.trajectory, weights=weights).theta_final


@dataclass
class RemovalResult:
    """Removing ``removed`` from training: predicted and actual change of the validation loss."""

    method: str
    removed: np.ndarray  # (k,) training indices
    predicted_change: float  # −Σ_{j∈S} I_j(f); nan for random removal
    actual_change: float  # f(θ_T without S) − f(θ_T)


def remove_harmful(fit_: Fit, X_val, y_val, k: int, methods=None, n_random: int = 3, seed=0,
                   progress: bool = False) -> list:
    """Remove the k training points most harmful to the mean validation loss f, per method, retrain
    with the same procedure (w_j = 0), and compare the actual change of f with the prediction.

    The most harmful points have the largest ``I_j(f)`` (up-weighting them raises f), so the linear
    prediction of removing the set S is ``Δf ≈ −Σ_{j∈S} I_j(f)`` (negative: f should fall). ``n_random``
    random sets of k points give the reference ("random" rows, no prediction).
    """
    problem = fit_.problem
    k = check_positive_int("k", k)
    if k >= problem.n:
        raise ValueError(f"`k` must be < n={problem.n}, got {k}")
    X_val, y_val = problem.model.check_data(X_val, y_val, "X_val", "y_val")
    methods = fit_.available_methods() if methods is None else methods
    f0 = mean_loss(problem, fit_.theta_final, X_val, y_val)
    results = []
    for i, method in enumerate(methods):
        _progress(f"  removal [{i + 1}/{len(methods)}] {method}: influence and retraining", progress)
        inf_f = influence(fit_, method, X_val, y_val).mean(axis=1)  # I_j(f), (n,)
        removed = np.sort(np.argsort(-inf_f, kind="stable")[:k])
        predicted = -float(inf_f[removed].sum())
        actual = mean_loss(problem, retrain_without(fit_, removed), X_val, y_val) - f0
        results.append(RemovalResult(method, removed, predicted, actual))
    rng = check_random_state(seed)
    for _ in range(n_random):
        removed = np.sort(rng.choice(problem.n, size=k, replace=False))
        actual = mean_loss(problem, retrain_without(fit_, removed), X_val, y_val) - f0
        results.append(RemovalResult("random", removed, float("nan"), actual))
    return results


# -- proponents and opponents -----------------------------------------------------------------------------

@dataclass
class Explanation:
    """The training points that most support (proponents) and oppose (opponents) a test prediction.

    ``influence[j] = I_j(ℓ(z_test))``. Proponents have the most negative influence (up-weighting them
    lowers the test loss; removing them would raise it); opponents the most positive.
    """

    method: str
    influence: np.ndarray  # (n,)
    proponents: np.ndarray  # (k,) indices, strongest first
    opponents: np.ndarray  # (k,) indices, strongest first


def explain_prediction(fit_: Fit, x, y, k: int = 5, method: str = "sam-full") -> Explanation:
    """Proponents and opponents of the prediction at test point (x, y) under ``method``.

    Parameters
    ----------
    x : array (p,)   the test input
    y : int          its label (the loss ℓ(z_test) is measured at this label)
    k : int          how many of each to return
    """
    problem = fit_.problem
    k = check_positive_int("k", k)
    x = check_finite_array("x", x, shape=(problem.p,))
    inf = influence(fit_, method, x[None, :], np.array([y]))[:, 0]  # (n,)
    order = np.argsort(inf, kind="stable")
    k = min(k, problem.n)
    return Explanation(method, inf, order[:k], order[::-1][:k])


# -- validation against retraining -----------------------------------------------------------------------

@dataclass
class Agreement:
    """One method's predictions beside ground truth on a subset of training points."""

    method: str
    predicted: np.ndarray  # (s,) −I_j(f): predicted change of f on removing j
    actual_loo: np.ndarray  # (s,) f(θ without j) − f(θ), by retraining
    derivative_truth: np.ndarray  # (s,) finite-difference I_j(f) of the object the method targets
    influence: np.ndarray  # (s,) I_j(f) by the method
    seconds: float

    @property
    def pearson(self) -> float:
        return _safe_corr(pearsonr, self.predicted, self.actual_loo)

    @property
    def spearman(self) -> float:
        return _safe_corr(spearmanr, self.predicted, self.actual_loo)

    @property
    def max_rel_err(self) -> float:
        """rel_err of the method's I_j(f) against the finite-difference derivative it estimates."""
        return rel_err(self.influence, self.derivative_truth)


def _safe_corr(fn, a, b) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(fn(a, b)[0])


@dataclass
class GroundTruth:
    """Ground truth for f = mean validation loss on a subset of training points (SPEC §5).

    ``loo_run``: actual change of f when j is removed and the run is repeated (same init, batches,
    learning rates; w_j = 0). ``derivative_run``: central differences of f(θ_T(w)) in w_j, the exact
    target of the trajectory methods. ``derivative_root`` / ``loo_root``: the same for the re-solved
    SAM root θ̂(w), the target of the closed-form methods (nan without a root).
    """

    subset: np.ndarray  # (s,) training indices
    loo_run: np.ndarray  # (s,)
    derivative_run: np.ndarray  # (s,)
    derivative_root: np.ndarray  # (s,)
    loo_root: np.ndarray  # (s,)
    seconds: float


H_RUN = 1e-4  # replay finite differences: truncation O(h²) ≈ 1e-8 relative, rounding ≈ 1e-16/h


def choose_subset(n: int, size: int, flipped=None, seed=0) -> np.ndarray:
    """A seeded subset of ``size`` training indices; with a ``flipped`` mask, up to half are flipped
    points (their removal has the largest effects, which spreads the ground truth out)."""
    size = min(check_positive_int("size", size), n)
    rng = check_random_state(seed)
    if flipped is None or not np.any(flipped):
        return np.sort(rng.choice(n, size=size, replace=False))
    flipped = np.asarray(flipped, dtype=bool)
    bad, good = np.flatnonzero(flipped), np.flatnonzero(~flipped)
    n_bad = min(size // 2, bad.size)
    n_good = min(size - n_bad, good.size)
    return np.sort(np.concatenate([rng.choice(bad, n_bad, replace=False),
                                   rng.choice(good, n_good, replace=False)]))


def ground_truth(fit_: Fit, X_val, y_val, subset, h: float = H_RUN, progress: bool = False) -> GroundTruth:
    """Retrain and re-solve for every j in ``subset`` (see :class:`GroundTruth`).

    Cost: 3 replays of the run per point (:mod:`refsam.counterfactual`), plus 3 root solves per point
    when there is a root (:mod:`refsam.resolve`).
    """
    problem = fit_.problem
    X_val, y_val = problem.model.check_data(X_val, y_val, "X_val", "y_val")
    subset = np.asarray(subset, dtype=np.int64)
    start = time.perf_counter()
    from .counterfactual import finite_difference_influence as replay_differences
    from .counterfactual import leave_one_out_replay

    _progress(f"  ground truth: {subset.size} leave-one-out replays, {2 * subset.size} finite-difference "
              f"replays", progress)
    # per-sample validation losses (s, m) -> mean over the validation set: f = mean loss, linear in ℓ_k
    loo_run = leave_one_out_replay(problem, fit_.trajectory, X_val, y_val, subset,
                                   progress=progress).mean(axis=1)
    derivative_run = replay_differences(problem, fit_.trajectory, X_val, y_val, subset, h=h,
                                        progress=progress).mean(axis=1)
    derivative_root = np.full(subset.size, np.nan)
    loo_root = np.full(subset.size, np.nan)
    if fit_.fixed_point is not None and fit_.fixed_point.converged:
        from .resolve import finite_difference_influence, leave_one_out

        _progress(f"  ground truth: re-solving the SAM root for {subset.size} points (×3 solves)", progress)
        theta_hat = fit_.theta_hat
        derivative_root = finite_difference_influence(problem, fit_.sam, theta_hat, X_val, y_val,
                                                      indices=subset).mean(axis=1)
        loo_root = leave_one_out(problem, fit_.sam, theta_hat, X_val, y_val, indices=subset).mean(axis=1)
    return GroundTruth(subset, loo_run, derivative_run, derivative_root, loo_root,
                       time.perf_counter() - start)


def compare_methods(fit_: Fit, X_val, y_val, truth: GroundTruth, methods=None,
                    progress: bool = False) -> list:
    """Each method's I_j(f), f = mean validation loss, beside the ground truth on ``truth.subset``.

    Closed-form methods are compared with the root's finite differences (their exact target) and
    trajectory methods with the run's; both with the actual leave-one-out retraining. Returns a list
    of :class:`Agreement` (timing covers all n training points, not just the subset).
    """
    methods = fit_.available_methods() if methods is None else methods
    out = []
    for i, method in enumerate(methods):
        _progress(f"  influence [{i + 1}/{len(methods)}] {method}", progress)
        start = time.perf_counter()
        inf_f = influence(fit_, method, X_val, y_val, progress and method == "trajectory").mean(axis=1)
        seconds = time.perf_counter() - start
        target = truth.derivative_root if method in CLOSED_FORM_METHODS else truth.derivative_run
        sub = inf_f[truth.subset]
        out.append(Agreement(method, -sub, truth.loo_run, target, sub, seconds))
    return out
