"""Counterfactual banks: the model's outputs after training on K random subsets, computed exactly.

Conventions
-----------
* A bank holds K subsets S_k ⊂ [n] of size ⌊α n⌋ (α = ``subset_ratio``, the kept fraction), drawn from
  ``seed`` (one ``rng.choice(n, size, replace=False)`` per subset, in order), as boolean ``masks``
  (K, n); for each, the outputs f_q(θ(S_k)) of every query q, ``outputs`` (K, m); and the outputs at
  the unmodified target, ``base`` (m,).
* Kinds — what "trained on S" means, with w⁰ the problem's (or run's) sample weights, and the target's
  base optimizer (the FixedPoint's, whose weight decay is part of G; the run's, with its η_t, state,
  weight decay and clipping) unchanged:
      "weights"   w = w⁰ ⊙ 1_S in the same objective: the root of G(θ; w) re-solved, or the recorded
                  run replayed (same θ_0, batches, η_t; the removed points keep their place in the
                  batches with weight 0, means over |B|). Exactly what the influence function
                  differentiates, so Σ_{i∈S} I_i predicts f(S) − f(1) + Σ_i I_i to first order.
      "retrain"   trained from scratch on S, as the field's banks do. For a root: the root of the mean
                  over S, G(θ; w) with w = (n/|S|) w⁰ ⊙ 1_S. For a run: ``train`` on the rows S with
                  the run's procedure (optimizer and η_t, steps, batch size, clipping, rule): batches
                  drawn from S, means over |B ∩ S| = |B|; the outputs averaged over the ``seeds`` (each
                  seed draws θ_0 and the batches), and ``base`` is the same average for runs on all n
                  points.
* A replayed batch whose points are all removed has F_{B,w} ≡ 0: its gradient is 0, so ε = 0 (Friendly
  SAM's ε from −σm is harmless: F ≡ 0 at any point), g̃ = 0 whatever the direction, and the
  step is the optimizer's step on its weight decay alone — no error, no NaN (``removed_batches=True``
  of `refsam.training.replay_final()`, `refsam.training.step.perturbations()`; ordinary training
  keeps SAM's ZeroGradientError). With batches of b points at α = 1/2 a given batch is all removed with
  probability ≈ 2^−b: with b = 4 and 100 steps, most subsets meet one.
* Outputs: ``"loss"`` ℓ(z_q, θ); ``"margin"`` the correct-class margin (TRAK's choice): (2y − 1) x̃ᵀθ
  for binary logistic regression, z_y − logsumexp_{k≠y} z_k for models with K-class logits z; or a
  callable ``f(theta, X_test, y_test) -> (m,)``.
* Blocks and shards: subsets are computed in fixed blocks of ``BANK_BLOCK`` consecutive subsets (the
  ground truth's chord re-solves, `resolve_block()`, and block
  replays, `refsam.training.replay_final()`). Shard i of N computes a contiguous run of whole
  blocks, so every block — and every bit of the bank — is the same whether computed serially, on an
  executor, or by N array jobs joined by `merge_bank_shards()`.
Cost: "weights" on a root, one LU of ∂G/∂θ at θ̂ and chord steps on (d, 32) blocks; on a run, one block
replay (two matrix products per step for the linear models) per 32 subsets; "retrain", one training
run (or root solve) per subset and seed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

import numpy as np
import scipy.special
from numpy.typing import ArrayLike, NDArray

from ..data.archive import check_target, read_npz, write_atomically
from ..errors import InvalidInputError
from ..influence.fixed_point import FixedPoint, FixedPointError, solve_fixed_point
from ..influence.linearisation import Factorised
from ..models import LogisticRegression
from ..objective import Problem
from ..sam import SAM
from ..tolerances import RESOLVE_TOL
from ..training import Optimizer, Trajectory, replay_final, train
from ..validation import check_progress
from ..version import __version__
from .parallel import check_parallel, map_rows
from .resolve import resolve_block, root_factors

__all__ = ["BANK_BLOCK", "BANK_FORMAT", "KINDS", "OUTPUTS", "CounterfactualBank", "counterfactual_bank",
           "counterfactual_outputs", "draw_masks", "load_bank", "merge_bank_shards", "model_outputs",
           "problem_fingerprint", "with_context"]

Array = NDArray[np.float64]
OutputFn = Callable[[Array, Array, Any], Any]

BANK_BLOCK = 32  # subsets per block: one chord re-solve or block replay of (d, 32) columns
BANK_FORMAT = "refsam-counterfactual-bank"
BANK_FORMAT_VERSION = 1
KINDS = ("weights", "retrain")
OUTPUTS = ("loss", "margin")
SERIAL_NAME = "bank"  # bank.npz + bank.json in a bank directory


# -- outputs ---------------------------------------------------------------------------------------------
def model_outputs(model: Any, theta: Array, X_test: Array, y_test: Any, output: str | OutputFn) -> Array:
    """f_q(θ) for every query q, shape (m,): the test loss, the correct-class margin, or ``output(θ, X, y)``.

    margin: (2y − 1) x̃ᵀθ for binary logistic regression; z_y − logsumexp_{k≠y} z_k for K-class logits.
    """
    if callable(output):
        return np.asarray(output(theta, X_test, y_test), dtype=np.float64)
    if output == "loss":
        return np.asarray(model.losses(theta, X_test, y_test), dtype=np.float64)
    if isinstance(model, LogisticRegression):
        margin: Array = (2.0 * np.asarray(y_test) - 1.0) * np.asarray(model.logits(theta, X_test))  # (m,)
        return margin
    Z = np.asarray(model.logits(theta, X_test), dtype=np.float64)  # (m, K)
    rows = np.arange(Z.shape[0])
    others = Z.copy()
    others[rows, y_test] = -np.inf
    margins: Array = Z[rows, y_test] - scipy.special.logsumexp(others, axis=1)
    return margins


def _check_output(model: Any, output: object) -> str | OutputFn:
    if callable(output):
        return output
    if output not in OUTPUTS:
        raise InvalidInputError(f"`output` must be one of {list(OUTPUTS)} or a function f(theta, X_test, "
                                f"y_test) -> (m,), got {output!r}")
    if output == "margin" and not isinstance(model, LogisticRegression) and not hasattr(model, "logits"):
        raise InvalidInputError(f"`output`='margin' needs a model with logits; {type(model).__name__} has "
                                f"none: use output='loss' or pass a function")
    return str(output)


def _output_name(output: str | OutputFn) -> str:
    return output if isinstance(output, str) else f"callable:{getattr(output, '__qualname__', 'f')}"


# -- fingerprints ----------------------------------------------------------------------------------------
def _sha256(*arrays: ArrayLike) -> str:
    h = hashlib.sha256()
    for a in arrays:
        arr = np.ascontiguousarray(a)
        h.update(str((arr.dtype.str, arr.shape)).encode())
        h.update(arr.data)
    return h.hexdigest()


def problem_fingerprint(problem: Problem, sam: SAM, target: FixedPoint | Trajectory, X_test: Array,
                        y_test: Any) -> dict[str, Any]:
    """Everything a bank's numbers depend on besides its own settings, as JSON: the model, the data, the
    weights, the loss's L2 term, the SAM rule, the target (θ̂ and the root's optimizer, whose weight
    decay is part of G; or the run's θ_0, schedule, η_t, optimizer and clipping) and the queries. Two
    banks can be joined, or scores graded on one, only if it agrees."""
    if isinstance(target, Trajectory):
        offsets = np.cumsum([0] + [len(b) for b in target.batches])
        run = {"target": "run", "target_sha256": _sha256(target.theta0, target.lrs, np.concatenate(
            target.batches), offsets), "optimizer": target.optimizer().config(),
               "clip_grad_norm": target.config.get("clip_grad_norm"),
               "batch_size": target.config["batch_size"], "seed": target.config["seed"],
               "steps": target.steps}
    else:
        run = {"target": "root", "target_sha256": _sha256(target.theta),
               "optimizer": None if target.optimizer is None else target.optimizer.config()}
    return {"model": problem.model.spec(), "data_sha256": problem.data_fingerprint(),
            "weights_sha256": _sha256(problem.weights), "l2": problem.l2_config(), "sam": sam.config(), **run,
            "test_sha256": _sha256(X_test, np.asarray(y_test, dtype=np.int64)),
            "n": problem.n, "d": problem.d, "m": int(X_test.shape[0])}


# -- the bank --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CounterfactualBank:
    """A bank of counterfactual outputs (module docstring).

    Attributes
    ----------
    masks : bool array (K, n)        masks[k, i] = i ∈ S_k (kept)
    outputs : array (K, m)           f_q(θ(S_k))
    base : array (m,)                f_q at the target itself (all points kept)
    meta : dict                      JSON: kind, output, subset_ratio, subset_size, n_subsets, seed,
                                     seeds, fingerprint (`problem_fingerprint()`), shard [i, N] or
                                     None, subsets [start, stop) of the serial bank this holds
    context : tuple or None          (problem, sam, target, X_test, y_test) of a bank built in this
                                     process (for `refsam.group_effects()`); not saved
    """

    masks: NDArray[np.bool_]
    outputs: Array
    base: Array
    meta: dict[str, Any]
    context: tuple[Any, ...] | None = field(default=None, repr=False)

    @property
    def n_subsets(self) -> int:
        return int(self.masks.shape[0])

    @property
    def fingerprint(self) -> str:
        """sha256 of the problem fingerprint (the dict is ``meta["fingerprint"]``)."""
        return hashlib.sha256(json.dumps(self.meta["fingerprint"], sort_keys=True).encode()).hexdigest()

    @property
    def indices(self) -> NDArray[np.int64]:
        """The kept training indices of every subset, (K, ⌊αn⌋), ascending (dattri's ``indices``)."""
        size = int(self.meta["subset_size"])
        return np.nonzero(self.masks)[1].reshape(self.n_subsets, size).astype(np.int64)

    def save(self, directory: str | os.PathLike[str], overwrite: bool = False) -> str:
        """Write ``bank.npz`` + ``bank.json`` (a shard: ``shard-I-of-N.*``) into ``directory`` (created);
        returns the .npz path. Atomic (`refsam.data.archive.write_atomically()`); an existing file is
        replaced only if refsam wrote it, or with ``overwrite=True`` (`refsam.data.archive.check_target()`:
        never through a symbolic link, never into a FIFO). No pickle."""
        return _save(self, os.fspath(directory), overwrite)

    def __repr__(self) -> str:
        m = self.meta
        shard = "" if m["shard"] is None else f", shard={tuple(m['shard'])}"
        return (f"CounterfactualBank(kind={m['kind']!r}, output={m['output']!r}, target="
                f"{m['fingerprint']['target']!r}, subset_ratio={m['subset_ratio']}, "
                f"subsets={self.n_subsets}, n={self.masks.shape[1]}, m={self.outputs.shape[1]}{shard})")


def draw_masks(n: int, size: int, count: int, seed: int) -> NDArray[np.bool_]:
    """K = ``count`` masks of ``size`` kept points each: subset k is the k-th ``rng.choice(n, size,
    replace=False)`` of ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, n), dtype=bool)
    for k in range(count):
        masks[k, rng.choice(n, size, replace=False)] = True
    return masks


def counterfactual_bank(problem: Problem, sam: SAM, target: FixedPoint | Trajectory, X_test: ArrayLike,
                        y_test: ArrayLike, *, subset_ratio: float = 0.5, n_subsets: int = 100,
                        kind: str = "weights", output: str | OutputFn = "loss", seed: int = 0,
                        seeds: Sequence[int] | None = None, executor: Executor | None = None,
                        n_jobs: int = 1, shard: tuple[int, int] | None = None,
                        directory: str | os.PathLike[str] | None = None,
                        progress: bool | None = None) -> CounterfactualBank:
    """The exact counterfactual bank of ``target`` (module docstring).

    Parameters
    ----------
    problem, sam : the problem and rule of the target (a run's must match its record)
    target : FixedPoint (the root re-solved) or Trajectory (the run replayed or retrained)
    X_test, y_test : the m queries
    subset_ratio : float in (0, 1]      α, the kept fraction: |S_k| = ⌊α n⌋ ≥ 1
    n_subsets : int >= 2                K
    kind : "weights" or "retrain"
    output : "loss", "margin" or f(theta, X_test, y_test) -> (m,)
    seed : int                          draws the subsets (recorded: shards draw the same ones)
    seeds : ints, optional              "retrain" of a run only: the training seeds averaged over
                                        (default: the run's recorded seed)
    executor, n_jobs : where the blocks run (`parallel`); the result is bit for bit the serial one
    shard : (i, N), optional            compute only shard i of N (0 ≤ i < N): a contiguous run of whole
                                        blocks; `merge_bank_shards()` joins the N shards
    directory : path, optional          also save the bank (or shard) there (`CounterfactualBank.save()`)
    progress : bool or None             a line on stderr per block of subsets; None (the default): on
                                        where stderr is a terminal

    Returns
    -------
    CounterfactualBank
    """
    spec = _check_bank_inputs(problem, sam, target, X_test, y_test, subset_ratio, n_subsets, kind, output,
                              seed, seeds, shard)
    executor, n_jobs = check_parallel(executor, n_jobs)
    progress = check_progress(progress)
    X_arr, y_arr, output = spec["X_test"], spec["y_test"], spec["output"]
    all_masks = draw_masks(problem.n, spec["subset_size"], n_subsets, seed)
    blocks = np.arange(-(-n_subsets // BANK_BLOCK), dtype=np.int64)
    if shard is not None:
        blocks = np.array_split(blocks, shard[1])[shard[0]]
    start = int(blocks[0]) * BANK_BLOCK if blocks.size else 0
    stop = min(n_subsets, (int(blocks[-1]) + 1) * BANK_BLOCK) if blocks.size else 0
    m = X_arr.shape[0]
    reference = _Reference.build(problem, sam, target, kind, spec["seeds"])
    task_args = (problem, sam, reference, X_arr, y_arr, output, kind, all_masks)
    if blocks.size:
        rows = map_rows(_block_rows, task_args, blocks, BANK_BLOCK * m, executor, n_jobs, "bank:", progress,
                        f"blocks of {BANK_BLOCK} subsets")
        outputs = rows.reshape(-1, m)[:stop - start]  # the last block may be short: its padding dropped
    else:
        outputs = np.zeros((0, m))
    base = _base_outputs(problem, sam, reference, X_arr, y_arr, output, kind)
    meta = {"format": BANK_FORMAT, "format_version": BANK_FORMAT_VERSION, "refsam_version": __version__,
            "kind": kind, "output": _output_name(output), "subset_ratio": float(subset_ratio),
            "subset_size": spec["subset_size"], "n_subsets": int(n_subsets), "seed": int(seed),
            "seeds": None if spec["seeds"] is None else [int(s) for s in spec["seeds"]],
            "block": BANK_BLOCK, "fingerprint": problem_fingerprint(problem, sam, target, X_arr, y_arr),
            "shard": None if shard is None else [int(shard[0]), int(shard[1])], "subsets": [start, stop]}
    bank = CounterfactualBank(all_masks[start:stop].copy(), outputs, base, meta,
                              (problem, sam, target, X_arr, y_arr))
    if directory is not None:
        bank.save(directory)
    return bank


def _check_bank_inputs(problem: object, sam: object, target: object, X_test: ArrayLike, y_test: ArrayLike,
                       subset_ratio: object, n_subsets: object, kind: object, output: object, seed: object,
                       seeds: object, shard: object) -> dict[str, Any]:
    """Validate once, at the boundary; returns the checked test set, output, subset size and seeds."""
    if not isinstance(problem, Problem):
        raise InvalidInputError(f"`problem` must be a refsam.Problem, got {type(problem).__name__}")
    if not isinstance(sam, SAM):
        raise InvalidInputError(f"`sam` must be a refsam.SAM, got {type(sam).__name__}")
    if isinstance(target, Trajectory):
        target.check_problem(problem)
        if sam.config() != target.sam().config():
            raise InvalidInputError(f"`sam` {sam!r} is not the rule the run recorded ({target.sam()!r})")
    elif isinstance(target, FixedPoint):
        problem.check_theta(target.theta, "target.theta")
    else:
        raise InvalidInputError(f"`target` must be a refsam.FixedPoint (a root, re-solved) or a "
                                f"refsam.Trajectory (a run, replayed), got {type(target).__name__}")
    X_arr, y_arr = problem.check_test(X_test, y_test)
    if isinstance(subset_ratio, bool) or not isinstance(subset_ratio, (int, float, np.floating)) or not (
            0.0 < float(subset_ratio) <= 1.0):
        raise InvalidInputError(f"`subset_ratio` must be a number in (0, 1] (the kept fraction), "
                                f"got {subset_ratio!r}")
    size = int(np.floor(float(subset_ratio) * problem.n))
    if size < 1:
        raise InvalidInputError(f"`subset_ratio` {subset_ratio} keeps no point of n = {problem.n}: use "
                                f"subset_ratio >= {1 / problem.n:.3g}")
    if isinstance(n_subsets, bool) or not isinstance(n_subsets, (int, np.integer)) or n_subsets < 2:
        raise InvalidInputError(f"`n_subsets` must be an int >= 2 (a rank correlation over subsets), "
                                f"got {n_subsets!r}")
    if kind not in KINDS:
        raise InvalidInputError(f"`kind` must be one of {list(KINDS)}, got {kind!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InvalidInputError(f"`seed` must be an int (the bank records it, so that shards draw the same "
                                f"subsets), got {seed!r}")
    checked_seeds = _check_seeds(target, kind, seeds, size)
    if shard is not None:
        _check_shard(shard, int(n_subsets))
    return {"X_test": X_arr, "y_test": y_arr, "output": _check_output(problem.model, output),
            "subset_size": size, "seeds": checked_seeds}


def _check_seeds(target: object, kind: object, seeds: object, size: int) -> tuple[int, ...] | None:
    if not (kind == "retrain" and isinstance(target, Trajectory)):
        if seeds is not None:
            raise InvalidInputError("`seeds` applies to kind='retrain' of a run only (a root has no seed; "
                                    "'weights' replays the recorded run)")
        return None
    config = target.config
    if config.get("schedule") == "external":
        raise InvalidInputError("kind='retrain' draws new batches from each subset: a run with an external "
                                "batch schedule has no procedure to redraw them; use kind='weights'")
    if config["batch_size"] is not None and config["batch_size"] > size:
        raise InvalidInputError(f"kind='retrain' with batch_size {config['batch_size']} needs subsets of at "
                                f"least that many points, got {size}: raise subset_ratio")
    if seeds is None:
        if not isinstance(config["seed"], int):
            raise InvalidInputError("the run recorded no int seed: pass `seeds` for kind='retrain'")
        return (int(config["seed"]),)
    try:
        values: tuple[Any, ...] = tuple(seeds)  # type: ignore[arg-type]
    except TypeError:
        values = ()
    if not values or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in values):
        raise InvalidInputError(f"`seeds` must be a non-empty sequence of ints, got {seeds!r}")
    return tuple(int(s) for s in values)


def _check_shard(shard: object, n_subsets: int) -> tuple[int, int]:
    n_blocks = -(-n_subsets // BANK_BLOCK)
    ok = (isinstance(shard, (tuple, list)) and len(shard) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in shard))
    if not ok or not 0 <= shard[0] < shard[1]:  # type: ignore[index]
        raise InvalidInputError(f"`shard` must be (i, N) with 0 <= i < N, got {shard!r}")
    if shard[1] > n_blocks:  # type: ignore[index]
        raise InvalidInputError(f"`shard` N = {shard[1]} exceeds the {n_blocks} blocks of {BANK_BLOCK} "  # type: ignore[index]
                                f"subsets in a bank of {n_subsets}: use at most {n_blocks} shards")
    return int(shard[0]), int(shard[1])  # type: ignore[index]


# -- computing blocks ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Reference:
    """What every block of one bank shares: the polished root, its optimizer and its LU, or the run (and
    its seeds)."""

    root: Array | None = None
    optimizer: Optimizer | None = None
    factors: Factorised | None = None
    run: Trajectory | None = None
    seeds: tuple[int, ...] | None = None

    @classmethod
    def build(cls, problem: Problem, sam: SAM, target: FixedPoint | Trajectory, kind: str,
              seeds: tuple[int, ...] | None) -> _Reference:
        if isinstance(target, Trajectory):
            return cls(run=target, seeds=seeds)
        root = _solve_root(problem, sam, target.optimizer, target.theta, None)
        return cls(root=root, optimizer=target.optimizer,
                   factors=root_factors(problem, sam, target.optimizer, root))


def _solve_root(problem: Problem, sam: SAM, optimizer: Optimizer | None, theta_start: Array,
                weights: Array | None) -> Array:
    """The root of G(θ; w) — the residual of the root's ``optimizer`` — reached from ``theta_start`` at
    the ground truth's tolerance (the one place this module calls the root solver)."""
    return solve_fixed_point(problem, sam, theta_start, optimizer=optimizer, tol=RESOLVE_TOL,
                             weights=weights, progress=False).theta


def _subproblem(problem: Problem, rows: NDArray[np.int64]) -> Problem:
    """The problem on the training rows ``rows`` only (their weights, the same loss and L2 term)."""
    return Problem(problem.model, problem.X[rows], problem.y[rows], weights=problem.weights[rows],
                   l2=problem.l2)


def _retrain(problem: Problem, run: Trajectory, rows: NDArray[np.int64], seed: int) -> Array:
    """θ_T of the run's procedure (its optimizer with η_t, steps, batch size, clipping, rule) trained from
    scratch on ``rows`` with ``seed`` (the one place this module calls ``train``)."""
    fresh = train(_subproblem(problem, rows), run.sam(), run.optimizer(), run.steps,
                  batch_size=run.config["batch_size"], seed=seed, clip_grad_norm=run.clipping(),
                  progress=False)
    return fresh.theta_final


def _thetas(problem: Problem, sam: SAM, reference: _Reference, masks: NDArray[np.bool_],
            kind: str) -> list[list[Array]]:
    """θ(S) for every mask (rows): one θ per subset, or one per seed for "retrain" of a run."""
    if reference.run is None:  # a root: re-solve the block of weight vectors together
        assert reference.root is not None and reference.factors is not None
        W = problem.weights[None, :] * masks  # (K, n): w⁰ ⊙ 1_S
        if kind == "retrain":
            W = W * (problem.n / masks.sum(axis=1))[:, None]  # the mean over |S|
        try:
            roots = resolve_block(problem, sam, reference.optimizer, reference.root, W, [0] * len(W),
                                  reference.factors)
        except FixedPointError as exc:  # resolve_block names a training point; a bank's unit is a subset
            reason = str(exc).split(" failed: ", 1)[-1]
            raise FixedPointError(f"re-solving the root of a subset (kept {int(masks.sum(axis=1).min())} of "
                                  f"{problem.n} points) failed: {reason}", exc.residual, exc.reason) from exc
        return [[r] for r in roots]
    if kind == "weights":  # the run replayed with w⁰ ⊙ 1_S, as one block
        W = reference.run.weights[None, :] * masks
        return [[t] for t in replay_final(problem, reference.run, W, removed_batches=True)]
    assert reference.seeds is not None
    return [[_retrain(problem, reference.run, np.flatnonzero(mask), s) for s in reference.seeds]
            for mask in masks]


def _mean_outputs(model: Any, thetas: list[Array], X_test: Array, y_test: Any,
                  output: str | OutputFn) -> Array:
    """The mean over seeds of f(θ) (one θ: f(θ) itself)."""
    values = [model_outputs(model, t, X_test, y_test, output) for t in thetas]
    return values[0] if len(values) == 1 else np.mean(values, axis=0)


def _block_rows(problem: Problem, sam: SAM, reference: _Reference, X_test: Array, y_test: Any,
                output: str | OutputFn, kind: str, masks: NDArray[np.bool_],
                blocks: NDArray[np.int64]) -> Array:
    """One task of `map_rows()`: per block b, the outputs of subsets b·BANK_BLOCK … (flattened,
    NaN-padded to BANK_BLOCK rows), shape (len(blocks), BANK_BLOCK · m)."""
    m = X_test.shape[0]
    out = np.full((len(blocks), BANK_BLOCK, m), np.nan)
    for row, b in enumerate(blocks):
        block = masks[b * BANK_BLOCK:(b + 1) * BANK_BLOCK]
        for k, thetas in enumerate(_thetas(problem, sam, reference, block, kind)):
            out[row, k] = _mean_outputs(problem.model, thetas, X_test, y_test, output)
    return out.reshape(len(blocks), BANK_BLOCK * m)


def _base_outputs(problem: Problem, sam: SAM, reference: _Reference, X_test: Array, y_test: Any,
                  output: str | OutputFn, kind: str) -> Array:
    """f at the target with every point kept: θ̂ (polished), θ_T, or the mean over seeds of runs on all n."""
    if reference.run is None:
        assert reference.root is not None
        return model_outputs(problem.model, reference.root, X_test, y_test, output)
    if kind == "weights":
        return model_outputs(problem.model, reference.run.theta_final, X_test, y_test, output)
    assert reference.seeds is not None
    everything = np.arange(problem.n)
    thetas = [_retrain(problem, reference.run, everything, s) for s in reference.seeds]
    return _mean_outputs(problem.model, thetas, X_test, y_test, output)


def counterfactual_outputs(problem: Problem, sam: SAM, target: FixedPoint | Trajectory, X_test: Array,
                           y_test: Any, masks: NDArray[np.bool_], kind: str, output: str | OutputFn,
                           seeds: tuple[int, ...] | None = None) -> Array:
    """f(θ(S)) for explicit masks (K, n) of kept points, of any sizes, (K, m): one subset at a time, by
    the bank's own machinery (used for the groups of `refsam.group_effects()`). Trusts its inputs."""
    reference = _Reference.build(problem, sam, target, kind, seeds)
    out = np.empty((len(masks), X_test.shape[0]))
    for k, mask in enumerate(masks):
        thetas = _thetas(problem, sam, reference, mask[None, :], kind)[0]
        out[k] = _mean_outputs(problem.model, thetas, X_test, y_test, output)
    return out


# -- files -----------------------------------------------------------------------------------------------
def _file_stem(meta: dict[str, Any]) -> str:
    shard = meta["shard"]
    return SERIAL_NAME if shard is None else f"shard-{shard[0]:05d}-of-{shard[1]:05d}"


def _is_bank_file(path: str) -> bool:
    """True if ``path`` is a .json or .npz that refsam wrote for a bank."""
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as fh:
                return bool(json.load(fh).get("format") == BANK_FORMAT)
        return {"masks", "outputs", "base", "format"} <= set(read_npz(path))
    except (OSError, ValueError, AttributeError):
        return False


def _save(bank: CounterfactualBank, directory: str, overwrite: bool) -> str:
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise InvalidInputError(f"cannot write a bank into {directory!r}: it is a file; give a directory")
    os.makedirs(directory, exist_ok=True)
    stem = os.path.join(directory, _file_stem(bank.meta))
    meta_text = json.dumps(bank.meta, sort_keys=True, indent=1).encode()
    # both files are checked before either is written: never half a bank over a foreign file (nor over a
    # link, a FIFO or a folder: refsam.data.archive.check_target)
    npz_path, json_path = (check_target(stem + suffix, overwrite, _is_bank_file, "directory")
                           for suffix in (".npz", ".json"))
    write_atomically(npz_path, lambda fh: np.savez(fh, format=np.array(BANK_FORMAT), masks=bank.masks,
                                                   outputs=bank.outputs, base=bank.base))
    def write_meta(fh: BinaryIO) -> None:
        fh.write(meta_text)

    write_atomically(json_path, write_meta)
    return npz_path


def _read(npz_path: str) -> CounterfactualBank:
    """One bank file pair (``X.npz`` + ``X.json``), checked for consistency."""
    where = f"bank file {npz_path!r}"
    json_path = npz_path[:-4] + ".json"
    if not os.path.isfile(npz_path):
        raise InvalidInputError(f"{where} does not exist")
    try:
        with open(json_path, encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{where}: its metadata {json_path!r} is missing or unreadable "
                                f"({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != BANK_FORMAT:
        raise InvalidInputError(f"{json_path!r} is not a refsam bank's metadata (no format {BANK_FORMAT!r})")
    if meta.get("format_version") != BANK_FORMAT_VERSION:
        raise InvalidInputError(f"{where} has format_version {meta.get('format_version')!r}, this refsam "
                                f"reads {BANK_FORMAT_VERSION}")
    try:
        arrays = read_npz(npz_path)
    except InvalidInputError as exc:
        raise InvalidInputError(f"cannot read {where}: {exc}") from exc
    missing = {"masks", "outputs", "base"} - set(arrays)
    if missing:
        raise InvalidInputError(f"{where} lacks arrays {sorted(missing)}")
    masks, outputs, base = arrays["masks"], arrays["outputs"], arrays["base"]
    fp = meta["fingerprint"]
    start, stop = meta["subsets"]
    problems = []
    if masks.dtype != bool or masks.shape != (stop - start, fp["n"]):
        problems.append(f"masks {masks.dtype} {masks.shape}, expected bool {(stop - start, fp['n'])}")
    elif np.any(masks.sum(axis=1) != meta["subset_size"]):
        problems.append(f"a mask does not keep subset_size = {meta['subset_size']} points")
    if outputs.dtype != np.float64 or outputs.shape != (stop - start, fp["m"]):
        problems.append(f"outputs {outputs.dtype} {outputs.shape}, expected float64 "
                        f"{(stop - start, fp['m'])}")
    if base.dtype != np.float64 or base.shape != (fp["m"],):
        problems.append(f"base {base.dtype} {base.shape}, expected float64 {(fp['m'],)}")
    if problems:
        raise InvalidInputError(f"{where} is inconsistent (tampered or corrupt): " + "; ".join(problems))
    return CounterfactualBank(masks, outputs, base, meta)


def load_bank(path: str | os.PathLike[str]) -> CounterfactualBank:
    """A bank written by `CounterfactualBank.save()`: a directory (its ``bank.npz``) or an .npz path.
    A directory holding only shards is refused with a pointer to `merge_bank_shards()`."""
    where = os.fspath(path)
    if os.path.isdir(where):
        serial = os.path.join(where, SERIAL_NAME + ".npz")
        if not os.path.isfile(serial):
            if _shard_files(where):
                raise InvalidInputError(f"{where!r} holds bank shards but no merged bank: run "
                                        f"`refsam bank merge {where}` (refsam.merge_bank_shards) first")
            raise InvalidInputError(f"{where!r} holds no bank ({SERIAL_NAME}.npz): build one with "
                                    f"`refsam bank` (refsam.counterfactual_bank)")
        where = serial
    return _read(where)


def _shard_files(directory: str) -> list[str]:
    return sorted(os.path.join(directory, f) for f in os.listdir(directory)
                  if f.startswith("shard-") and f.endswith(".npz"))


# the settings every shard of one bank shares (all of meta but where the shard sits)
_SHARED_KEYS = ("kind", "output", "subset_ratio", "subset_size", "n_subsets", "seed", "seeds", "block",
                "fingerprint")


def merge_bank_shards(shards: str | os.PathLike[str] | Sequence[CounterfactualBank | str | os.PathLike[str]],
                      directory: str | os.PathLike[str] | None = None,
                      overwrite: bool = False) -> CounterfactualBank:
    """Join the N shards of one bank into the serial bank, bit for bit.

    ``shards``: a directory holding ``shard-*.npz`` files, or a list of banks or shard files. They must
    share every setting and the problem fingerprint, agree on N, and hold each i in 0..N−1 exactly once
    (missing or overlapping shards are refused, naming them). ``directory``: also save the merged bank.
    """
    if isinstance(shards, (str, os.PathLike)):
        folder = os.fspath(shards)
        if not os.path.isdir(folder):
            raise InvalidInputError(f"`shards` {folder!r} is not a directory of bank shards")
        paths: Sequence[Any] = _shard_files(folder)
        if not paths:
            raise InvalidInputError(f"{folder!r} holds no bank shards (shard-*.npz)")
    else:
        paths = list(shards)
        if not paths:
            raise InvalidInputError("`shards` is empty: give a directory or a list of shards")
    banks = [s if isinstance(s, CounterfactualBank) else _read(os.fspath(s)) for s in paths]
    first = banks[0].meta
    for bank in banks:
        if bank.meta["shard"] is None:
            raise InvalidInputError("`shards` holds a whole bank, not a shard: nothing to merge")
        differ = [k for k in _SHARED_KEYS if bank.meta[k] != first[k]]
        if differ:
            what = ("a bank from another problem (fingerprint differs)" if "fingerprint" in differ
                    else f"different settings {differ}")
            raise InvalidInputError(f"shard {tuple(bank.meta['shard'])} is {what}: shards of one bank only")
    counts = {bank.meta["shard"][1] for bank in banks}
    if len(counts) > 1:
        raise InvalidInputError(f"overlapping shards: they split the bank into different numbers of shards "
                                f"{sorted(counts)}")
    total = counts.pop()
    seen: dict[int, int] = {}
    for bank in banks:
        i = bank.meta["shard"][0]
        seen[i] = seen.get(i, 0) + 1
    overlapping = sorted(i for i, c in seen.items() if c > 1)
    if overlapping:
        raise InvalidInputError(f"overlapping shards: shard(s) {overlapping} of {total} given more than once")
    missing = sorted(set(range(total)) - set(seen))
    if missing:
        raise InvalidInputError(f"missing shards: {missing} of {total} (each of 0..{total - 1} is needed)")
    banks.sort(key=lambda b: b.meta["shard"][0])
    for bank in banks[1:]:
        if not np.array_equal(bank.base, banks[0].base):
            raise InvalidInputError(f"shard {tuple(bank.meta['shard'])} has another base output: computed "
                                    f"by another refsam or machine? Rebuild the shards in one setting")
    meta = dict(first, shard=None, subsets=[0, int(first["n_subsets"])])
    merged = CounterfactualBank(np.concatenate([b.masks for b in banks]),
                                np.concatenate([b.outputs for b in banks]), banks[0].base.copy(), meta,
                                banks[0].context)
    if merged.masks.shape[0] != first["n_subsets"]:
        raise InvalidInputError(f"the shards hold {merged.masks.shape[0]} subsets, the bank has "
                                f"{first['n_subsets']}: inconsistent shards")
    if directory is not None:
        merged.save(directory, overwrite)
    return merged


def with_context(bank: CounterfactualBank, problem: Problem, sam: SAM, target: FixedPoint | Trajectory,
                 X_test: ArrayLike, y_test: ArrayLike) -> CounterfactualBank:
    """A loaded bank with its problem attached (checked against the fingerprint), for group effects."""
    X_arr, y_arr = problem.check_test(X_test, y_test)
    if problem_fingerprint(problem, sam, target, X_arr, y_arr) != bank.meta["fingerprint"]:
        raise InvalidInputError("the bank was built for another problem (fingerprint differs): model, data, "
                                "weights, λ, rule, target or queries")
    return replace(bank, context=(problem, sam, target, X_arr, y_arr))
