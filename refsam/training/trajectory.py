"""The record of a SAM run, `Trajectory`, and its versioned ``.npz`` file format (no pickle)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..data.archive import check_target, read_npz, write_atomically
from ..errors import InvalidInputError, RefsamError
from ..models import model_from_spec
from ..objective import Problem
from ..sam import SAM
from ..tolerances import RTOL_RUN_REPLAY
from ..validation import check_progress
from .clipping import GradientClipping, clipping_from_config
from .optimizers import Optimizer, optimizer_from_config

__all__ = ["TRAJECTORY_FORMAT_VERSION", "ReplayCheck", "Trajectory", "UnverifiedRunError", "check_writable",
           "is_trajectory_file"]

# 4: the optimizer as an object (config "optimizer", with "clip_grad_norm") and its named states
#    ("state_<name>"), the loss's "l2"; a sha256 of the content (checked at load) and, optionally, the
#    training data X, y;
# 3: ‖g_t‖ per step; 2: momentum buffers and the optimizer's configuration. 1–3 load, converted (_from_v3).
TRAJECTORY_FORMAT_VERSION = 4
READABLE_FORMAT_VERSIONS = (1, 2, 3, 4)

Array = NDArray[np.float64]


class UnverifiedRunError(InvalidInputError):
    """A recorded run that its own replay does not reproduce (edited, corrupted, or recorded on other
    data or with another configuration): its derivative would be the derivative of no run."""


@dataclass(frozen=True)
class ReplayCheck:
    """What `Trajectory.verify()` found: the recorded run against its replay, step by step.

    ``max_residual`` is the largest relative deviation, over the steps t and the recorded state
    (θ_t, ε_{t−1}, the optimizer's states, ‖g_{t−1}‖), of the replayed value from the recorded one:
    ``‖replayed − recorded‖_∞ / max(‖recorded array‖_∞, 1e-300)``; ``step`` and ``array`` say where.
    A run refsam recorded replays bit for bit (residual 0).
    """

    ok: bool
    max_residual: float
    step: int  # the step t whose state deviates most (0 when nothing deviates)
    array: str  # which recorded array: "thetas", "epsilons", "state_<name>" or "grad_norms"
    tolerance: float
    error: str = ""  # why the replay itself failed (then ok is False and max_residual is inf)

    def __str__(self) -> str:
        if self.error:
            return f"the run does not replay: {self.error}"
        if self.max_residual == 0.0:
            return "the run replays bit for bit: largest step residual 0"
        verdict = "replays" if self.ok else "does NOT replay"
        return (f"the run {verdict}: largest step residual {self.max_residual:.2e} ({self.array} at step "
                f"{self.step}; tolerance {self.tolerance:.0e})")


class Trajectory:
    """A recorded SAM run.

    The constructor checks what `load()` checks (shapes against ``config``'s steps, d and n, finite
    float64 arrays, batch indices in range, a valid SAM and optimizer configuration) and raises
    `refsam.InvalidInputError` naming what is wrong; the model spec may be a user model's.

    Attributes
    ----------
    thetas : array (T+1, d)      θ_0 … θ_T
    epsilons : array (T, d)      ε_0 … ε_{T-1}
    batches : list of T int arrays   B_t, indices into the training set
    lrs : array (T,)             η_t
    weights : array (n,)         the sample weights w the run used
    config : dict                everything else needed to replay it: model spec, rho, rule, kappa, l2
                                 (the loss's), optimizer (its configuration without lr: name and
                                 momentum, dampening, nesterov, weight_decay for SGD; betas, eps,
                                 eps_root, weight_decay for Adam and AdamW), clip_grad_norm (None or
                                 the clipping's max_norm and convention), batch_size, seed, steps, n,
                                 d, data_sha256 (of X and y)
    states : dict of arrays (T, d)   the optimizer's state after each step, by its names (SGD with
                                 momentum: "momentum_buffer", buf_0 … buf_{T−1}; {} for plain SGD;
                                 Adam and AdamW: "exp_avg", "exp_avg_sq"): with θ_t, the state after
                                 step t − 1 is the run's state
    grad_norms : array (T,) or None  ‖g_t‖₂ of the gradient each step's perturbation was built from
                                 (`refsam.training.train()` records it; None for runs recorded
                                 elsewhere or read from files of format 1 or 2). With ε_t it gives
                                 g_t for the SAM rule, g_t = (ε_t/ρ)(‖g_t‖ + e), so the exact
                                 trajectory methods need no gradient at θ_t to rebuild it. Given by
                                 hand it must be that norm.
    """

    def __init__(self, thetas: ArrayLike, epsilons: ArrayLike, batches: Any, lrs: ArrayLike,
                 weights: ArrayLike, config: dict[str, Any], states: Mapping[str, ArrayLike] | None = None,
                 grad_norms: ArrayLike | None = None) -> None:
        # Checked as Trajectory.load checks a file: shapes against config's steps, d, n; finite float64
        # arrays; batch indices in range; a configuration SAM, the model and the optimizer accept.
        try:
            # copies: a recorded run owns its arrays (a caller editing theirs later changes nothing here)
            self.thetas = np.array(thetas, dtype=np.float64)
            self.epsilons = np.array(epsilons, dtype=np.float64)
            self.batches = [np.array(b).reshape(-1) for b in batches]
            self.lrs = np.array(lrs, dtype=np.float64)
            self.weights = np.array(weights, dtype=np.float64)
            self.states = {str(k): np.array(v, dtype=np.float64) for k, v in (states or {}).items()}
            self.grad_norms = None if grad_norms is None else np.array(grad_norms, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"Trajectory(...): every array must be numeric ({exc})") from None
        if not isinstance(config, Mapping):
            raise InvalidInputError(f"Trajectory(...): `config` must be a dict, got {type(config).__name__}")
        try:  # a deep copy: the run owns its configuration as it owns its arrays
            owned = copy.deepcopy(dict(config))
        except RecursionError:
            raise InvalidInputError("Trajectory(...): `config` is nested too deeply") from None
        self.config = {"clip_grad_norm": None, **owned}  # no clipping unless recorded
        self.training_data: tuple[Array, NDArray[np.int64]] | None = None  # (X, y) if the file carried them
        self._replays: dict[str, ReplayCheck] = {}  # verify()'s results by content digest and problem
        missing = set(_CONFIG_KEYS) - set(self.config)
        if missing:
            raise InvalidInputError(f"Trajectory(...): `config` lacks keys {sorted(missing)}")
        if any(b.dtype.kind not in "iu" for b in self.batches):
            raise InvalidInputError("Trajectory(...): `batches` must hold integer index arrays")
        self.batches = [b.astype(np.int64) for b in self.batches]
        offsets = np.cumsum([0] + [len(b) for b in self.batches]).astype(np.int64)
        flat = np.concatenate(self.batches) if self.batches else np.zeros(0, dtype=np.int64)
        data = {"thetas": self.thetas, "epsilons": self.epsilons, "lrs": self.lrs, "weights": self.weights,
                "batch_offsets": offsets, "batch_indices": flat,
                **{f"state_{k}": v for k, v in self.states.items()},
                "grad_norms": np.zeros(0) if self.grad_norms is None else self.grad_norms}
        problems = _inconsistencies(data, self.config, built_in_model=False)
        if problems:
            raise InvalidInputError("Trajectory(...) is inconsistent: " + "; ".join(problems))

    @property
    def steps(self) -> int:
        """T, the number of steps."""
        return len(self.lrs)

    @property
    def theta0(self) -> Array:
        """θ_0."""
        return np.asarray(self.thetas[0], dtype=np.float64)

    @property
    def theta_final(self) -> Array:
        """θ_T."""
        return np.asarray(self.thetas[-1], dtype=np.float64)

    @property
    def w_hat(self) -> Array:
        """The perturbed points ŵ_t = θ_t + ε_t for t < T, shape (T, d)."""
        return self.thetas[:-1] + self.epsilons

    def optimizer(self) -> Optimizer:
        """The base optimizer of this run, with its per-step learning rates ``lrs`` as its ``lr``."""
        return optimizer_from_config(self.config["optimizer"], self.lrs)

    def clipping(self) -> GradientClipping | None:
        """The run's gradient clipping (None: none)."""
        return clipping_from_config(self.config.get("clip_grad_norm"))

    def state(self, t: int, optimizer: Optimizer | None = None) -> tuple[Array, ...]:
        """The optimizer's state before step t (zeros before step 0), in ``optimizer().state_names`` order
        (``optimizer``: this run's, already built, e.g. by a loop over its steps)."""
        names = (self.optimizer() if optimizer is None else optimizer).state_names
        if t == 0:
            return tuple(np.zeros(self.thetas.shape[1]) for _ in names)
        return tuple(self.states[name][t - 1] for name in names)

    def rule_state(self, t: int, sam: SAM | None = None) -> Array | None:
        """The SAM rule's own state before step t (Friendly SAM's running mean m; zeros before step 0),
        None for a stateless rule (``sam``: this run's rule, already built)."""
        names = (self.sam() if sam is None else sam).state_names
        if not names:
            return None
        return np.zeros(self.thetas.shape[1]) if t == 0 else self.states[names[0]][t - 1]

    def sam(self) -> SAM:
        """The perturbation rule of this run."""
        c = self.config
        return SAM.from_config(c)

    def problem(self, X: ArrayLike, y: ArrayLike, weights: ArrayLike | None = None) -> Problem:
        """Rebuild the run's Problem on data (X, y) (checked against the recorded fingerprint)."""
        c = self.config
        problem = Problem(model_from_spec(c["model"]), X, y, self.weights if weights is None else weights,
                          l2=c["l2"])
        self.check_problem(problem)
        return problem

    def check_problem(self, problem: Problem) -> None:
        """Raise ValueError if ``problem`` is not the problem this trajectory was recorded on
        (model, data, the loss's l2). Sample weights may differ (counterfactual replays)."""
        c = self.config
        mismatches = []
        if problem.model.spec() != c["model"]:
            mismatches.append(f"model {problem.model.spec()} != recorded {c['model']}")
        if problem.data_fingerprint() != c["data_sha256"]:
            mismatches.append("training data (X, y) differ from the recorded run's (sha256 mismatch)")
        if problem.l2_config() != c["l2"]:
            mismatches.append(f"l2 {_short(problem.l2_config())} != recorded {_short(c['l2'])}")
        if mismatches:
            raise InvalidInputError("`problem` does not match the trajectory: " + "; ".join(mismatches))

    # -- integrity ----------------------------------------------------------------------------------
    def _arrays(self) -> dict[str, NDArray[Any]]:
        """The recorded arrays as a file stores them (batches flat with offsets; the optimizer's states by
        name; empty gradient norms where the run has none), with the training data when the run carries
        it."""
        offsets = np.cumsum([0] + [len(b) for b in self.batches]).astype(np.int64)
        flat = np.concatenate(self.batches) if self.batches else np.zeros(0, dtype=np.int64)
        arrays: dict[str, NDArray[Any]] = {
            "thetas": self.thetas, "epsilons": self.epsilons, "batch_indices": flat.astype(np.int64),
            "batch_offsets": offsets, "lrs": self.lrs, "weights": self.weights,
            **{f"state_{k}": v for k, v in self.states.items()},  # the optimizer's states, by name
            "grad_norms": np.zeros(0) if self.grad_norms is None else self.grad_norms,
        }
        if self.training_data is not None:
            arrays["X"], arrays["y"] = self.training_data
        return arrays

    def digest(self) -> str:
        """The sha256 (hex) of the run's content: every recorded array (name, dtype, shape, bytes) and the
        configuration as sorted JSON. A file of format 4 stores it; `load()` recomputes and compares.
        """
        h = hashlib.sha256()
        for key, value in sorted(self._arrays().items()):
            a = np.ascontiguousarray(value)
            h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
        h.update(json.dumps(self.config, sort_keys=True, default=_json_scalar).encode())
        return h.hexdigest()

    def verify(self, problem: Problem | None = None, progress: bool | None = False) -> ReplayCheck:
        """Replay the run and compare every recorded state with the replayed one (`ReplayCheck`).

        The replay is `refsam.training.replay()` with the run's own weights: θ_0, the batches, the
        learning rates, the rule, the optimizer and the clipping of the record, every step recomputed. A
        run refsam recorded replays bit for bit; an edited θ_t or ε_t, a changed ρ in the configuration,
        or a run recorded on other data does not. ``problem``: the problem the run was recorded on; may
        be omitted when the run carries its training data (a file saved with ``save(..., problem=...)``).
        Cost: one training run (the result is remembered for this content and problem). ``progress``: the
        replay's progress lines on stderr, as `train()`'s (None: where stderr is a terminal); off by
        default, since the influence methods call this before their own loops.
        """
        progress = check_progress(progress)
        if problem is None:
            if self.training_data is None:
                raise InvalidInputError("Trajectory.verify(): pass the `problem` the run was recorded on "
                                        "(this run does not carry its training data)")
            problem = self.problem(*self.training_data)
        if not isinstance(problem, Problem):
            raise InvalidInputError(f"`problem` must be a refsam.Problem, got {type(problem).__name__}")
        self.check_problem(problem)
        model_class = problem.model.__class__  # a user model may share a built-in model's spec
        key = f"{self.digest()}|{model_class.__module__}.{model_class.__qualname__}"
        if key not in self._replays:
            self._replays[key] = self._replay_check(problem, progress)
        return self._replays[key]

    def _replay_check(self, problem: Problem, progress: bool | None) -> ReplayCheck:
        from .run import replay  # the replay machinery of the training layer (run.py imports this module)

        try:
            replayed = replay(problem, self, weights=self.weights, progress=progress)
        except RefsamError as exc:
            return ReplayCheck(False, float("inf"), 0, "thetas", RTOL_RUN_REPLAY,
                               error=str(exc).strip().splitlines()[0])
        worst = (0.0, 0, "thetas")
        pairs = [("thetas", self.thetas[1:], replayed.thetas[1:]),
                 ("epsilons", self.epsilons, replayed.epsilons)]
        pairs += [(f"state_{name}", self.states[name], replayed.states[name])
                  for name in sorted(set(self.states) & set(replayed.states))]
        if self.grad_norms is not None and replayed.grad_norms is not None:
            pairs.append(("grad_norms", self.grad_norms.reshape(-1, 1), replayed.grad_norms.reshape(-1, 1)))
        for name, recorded, again in pairs:
            scale = max(float(np.max(np.abs(recorded), initial=0.0)), 1e-300)
            per_step = np.max(np.abs(again - recorded), axis=1, initial=0.0) / scale  # (T,)
            t = int(np.argmax(per_step)) if per_step.size else 0
            if per_step.size and not per_step[t] <= worst[0]:
                worst = (float(per_step[t]), t + (1 if name == "thetas" else 0), name)
        if set(self.states) != set(replayed.states):
            return ReplayCheck(False, float("inf"), 0, "states", RTOL_RUN_REPLAY,
                               error=f"the run records the states {sorted(self.states)}, its optimizer keeps "
                                     f"{sorted(replayed.states)}")
        ok = bool(worst[0] <= RTOL_RUN_REPLAY)
        return ReplayCheck(ok, worst[0], worst[1], worst[2], RTOL_RUN_REPLAY)

    def require_replay(self, problem: Problem, what: str) -> None:
        """Raise `UnverifiedRunError` naming ``what`` unless `verify()` passes."""
        check = self.verify(problem)
        if not check.ok:
            raise UnverifiedRunError(f"{what}: `trajectory` is not a run of `problem`: {check}; it was "
                                     f"edited, corrupted or recorded elsewhere; pass verify=False to "
                                     f"differentiate it anyway")

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], overwrite: bool = False, *,
             problem: Problem | None = None) -> None:
        """Write the trajectory to exactly ``path`` (an .npz archive, no pickle; no suffix is added).

        Batches are stored flat with offsets, so batches of different sizes round-trip exactly. The file
        carries the sha256 of its content (`digest()`), checked by `load()`. With ``problem``
        (the problem the run was recorded on) it also carries the training data X, y, so that
        `verify()` and ``refsam verify RUN`` can replay it on its own.

        The file is written whole or not at all (a temporary file renamed onto ``path``). An existing
        file is replaced only if it is a trajectory file (one refsam wrote) or with ``overwrite=True``;
        a symbolic link only with ``overwrite=True`` (the link is replaced, never written through); a
        directory, a FIFO or an unwritable place is an error naming the path.
        """
        where = check_writable(path, overwrite, is_trajectory_file)
        if problem is not None:
            if not isinstance(problem, Problem):
                raise InvalidInputError(f"`problem` must be a refsam.Problem, got {type(problem).__name__}")
            self.check_problem(problem)
            self.training_data = (np.array(problem.X), np.asarray(problem.y).astype(np.int64))
        payload: dict[str, Any] = {
            "format_version": np.array(TRAJECTORY_FORMAT_VERSION),
            **self._arrays(),
            "config_json": np.array(json.dumps(self.config, sort_keys=True, default=_json_scalar)),
            "content_sha256": np.array(self.digest()),
        }
        write_atomically(where, lambda fh: np.savez(fh, **payload))  # a file object: no ".npz" appended

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trajectory:
        """Read a trajectory written by `save()`. Never unpickles.

        Raises ValueError naming the file if it is not such an archive, has another format version,
        lacks a key, is inconsistent (shapes, batch offsets and indices, configuration), or (format 4)
        its content does not match the sha256 it carries (an edited or corrupted file).
        """
        if path is None or (isinstance(path, str) and not path.strip()):
            raise InvalidInputError(f"`path` must be a trajectory file name, got {path!r}")
        where = f"trajectory file {str(path)!r}"
        try:
            data = read_npz(path)
        except InvalidInputError as exc:
            raise InvalidInputError(f"cannot read a trajectory from {str(path)!r}: {exc}") from exc
        version = data.get("format_version")
        if (version is None or version.shape != () or version.dtype.kind not in "iu"
                or int(version) not in READABLE_FORMAT_VERSIONS):
            got = None if version is None else version.tolist()
            raise InvalidInputError(f"{where} has format_version {got!r}, this refsam reads "
                             f"{list(READABLE_FORMAT_VERSIONS)}")
        version = int(version)
        missing = (set(_ARRAY_KEYS + (("buffers",) if version in (2, 3) else ())
                       + (("grad_norms",) if version >= 3 else ())
                       + (("content_sha256",) if version >= 4 else ())) - set(data))
        if missing:
            raise InvalidInputError(f"{where} lacks keys {sorted(missing)}")
        try:
            config = json.loads(str(data["config_json"]))
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InvalidInputError(f"{where} has an unreadable config_json: "
                                    f"{str(exc).splitlines()[0] or type(exc).__name__}") from exc
        if not isinstance(config, dict):
            raise InvalidInputError(
                f"{where}: config_json must hold a JSON object, got {type(config).__name__}")
        momentum_keys = _MOMENTUM_KEYS if version in (2, 3) else ()
        required = _CONFIG_KEYS if version >= 4 else _CONFIG_KEYS_V3 + momentum_keys
        missing = set(required) - set(config)
        if missing:
            raise InvalidInputError(f"{where}: config_json lacks keys {sorted(missing)}")
        states = {key[len("state_"):]: data[key] for key in data if key.startswith("state_")}
        if version < 4:
            config, states = _from_v3(config, data.get("buffers"))
        problems = _inconsistencies({**data, **{f"state_{k}": v for k, v in states.items()}}, config)
        if problems:
            raise InvalidInputError(f"{where} is inconsistent (tampered or corrupt): " + "; ".join(problems))
        offsets = data["batch_offsets"]
        flat = data["batch_indices"]
        batches = [flat[offsets[t]:offsets[t + 1]] for t in range(len(offsets) - 1)]
        grad_norms = data.get("grad_norms")
        grad_norms = None if grad_norms is None or grad_norms.shape == (0,) else grad_norms
        trajectory = cls(data["thetas"], data["epsilons"], batches, data["lrs"], data["weights"], config,
                         states=states, grad_norms=grad_norms)
        if "X" in data and "y" in data:
            trajectory.training_data = (data["X"], data["y"])
        if version >= 4:
            stored = data["content_sha256"]
            if stored.shape != () or stored.dtype.kind != "U" or str(stored) != trajectory.digest():
                raise InvalidInputError(f"{where}: its content does not match the sha256 it carries: the "
                                        f"file was edited or corrupted; record the run again")
        return trajectory

    def __repr__(self) -> str:
        c = self.config
        return (f"Trajectory(steps={self.steps}, d={self.thetas.shape[1]}, sam={self.sam()!r}, "
                f"batch_size={c['batch_size']}, optimizer={self.optimizer()!r})")


_ARRAY_KEYS = ("format_version", "thetas", "epsilons", "batch_indices", "batch_offsets", "lrs", "weights",
               "config_json")
_CONFIG_KEYS = ("model", "rho", "rule", "kappa", "l2", "optimizer", "batch_size", "seed", "steps", "n", "d",
                "data_sha256")
_CONFIG_KEYS_V3 = ("model", "rho", "rule", "kappa", "weight_decay", "regularization", "batch_size", "seed",
                   "steps", "n", "d", "data_sha256")
_MOMENTUM_KEYS = ("momentum", "dampening", "nesterov")


def _from_v3(config: dict[str, Any], buffers: Array | None) -> tuple[dict[str, Any], dict[str, Array]]:
    """A configuration of formats 1–3 in format 4's fields: 0.1's "decoupled" weight decay was SGD's
    ``weight_decay``, its "coupled" one the loss's ``l2``; momentum buffers are the "momentum_buffer"."""
    config = dict(config)
    lam = config.pop("weight_decay")
    coupled = config.pop("regularization") == "coupled"
    mu, tau, nesterov = (config.pop(k, default) for k, default in zip(_MOMENTUM_KEYS, (0.0, 0.0, False)))
    config["l2"] = lam if coupled else 0.0
    config["optimizer"] = {"name": "SGD", "momentum": mu, "dampening": tau, "nesterov": nesterov,
                           "weight_decay": 0.0 if coupled else lam}
    has_buffers = buffers is not None and buffers.shape[0] > 0
    return config, ({"momentum_buffer": buffers} if has_buffers and buffers is not None else {})


def _short(value: Any) -> str:
    """A configuration value for a message: a per-coordinate list is summarised, not printed whole."""
    if isinstance(value, list):
        return f"<{len(value)} per-coordinate values>"
    return repr(value)


def _inconsistencies(data: dict[str, Any], config: dict[str, Any], built_in_model: bool = True) -> list[str]:
    """What is wrong with the arrays of a trajectory, given its config (empty list: nothing).

    ``built_in_model``: the model spec must name a built-in model (a file: the model is rebuilt from
    it); False for a run in memory, whose model may be a user's subclass of Model."""
    T, d, n = config["steps"], config["d"], config["n"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (T, d, n)):
        return [f"config steps, d, n must be ints >= 0, got {T!r}, {d!r}, {n!r}"]
    expected_shapes = {"thetas": (T + 1, d), "epsilons": (T, d), "lrs": (T,), "weights": (n,),
                       "batch_offsets": (T + 1,)}
    problems = [f"{key} has shape {data[key].shape}, expected {shape}"
                for key, shape in expected_shapes.items() if data[key].shape != shape]
    for key in ("thetas", "epsilons", "lrs", "weights"):
        if data[key].dtype != np.float64 or not np.all(np.isfinite(data[key])):
            problems.append(f"{key} must be finite float64")
    if data["lrs"].size and np.any(data["lrs"] <= 0):
        problems.append("lrs must be > 0")
    offsets, flat = data["batch_offsets"], data["batch_indices"]
    if offsets.dtype.kind not in "iu" or flat.dtype.kind not in "iu" or flat.ndim != 1:
        problems.append("batch_offsets and batch_indices must be 1-D integer arrays")
    elif not problems:
        if offsets[0] != 0 or offsets[-1] != flat.size or np.any(np.diff(offsets) <= 0):
            problems.append(f"batch_offsets must rise strictly from 0 to {flat.size}")
        if flat.size and (flat.min() < 0 or flat.max() >= n):
            problems.append(f"batch_indices must lie in 0..{n - 1}")
    if not problems:
        try:
            sam = SAM.from_config(config)
            sam.check_steps(T)
            if built_in_model:
                model_from_spec(config["model"])
            optimizer = optimizer_from_config(config["optimizer"], 1.0)
            optimizer.check_dimension(d)
            clipping_from_config(config.get("clip_grad_norm"))
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"invalid configuration ({exc})")
            return problems
        stored = {key[len("state_"):] for key in data if key.startswith("state_")}
        kept = optimizer.state_names + sam.state_names
        if stored != set(kept):
            whose = "the optimizer's and the rule's" if sam.state_names else "the optimizer's"
            problems.append(f"{whose} states are {sorted(kept)}, the run stores {sorted(stored)}")
        for name in sorted(set(kept) & stored):
            values = data[f"state_{name}"]
            if values.shape != (T, d):
                problems.append(f"state {name!r} has shape {values.shape}, expected {(T, d)}")
            elif values.dtype != np.float64 or not np.all(np.isfinite(values)):
                problems.append(f"state {name!r} must be finite float64")
        norms = data.get("grad_norms")
        if norms is not None and norms.shape != (0,):
            if norms.shape != (T,):
                problems.append(f"grad_norms has shape {norms.shape}, expected {(T,)} (or empty)")
            elif norms.dtype != np.float64 or not np.all(np.isfinite(norms)) or np.any(norms < 0):
                problems.append("grad_norms must be finite float64 >= 0")
    return problems




def _json_scalar(value: Any) -> Any:
    """json.dumps' fallback for numpy scalars and arrays in a configuration."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def is_trajectory_file(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is an .npz archive written by `Trajectory.save()` (its keys say so)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {"format_version", "config_json", "thetas"} <= set(getattr(archive, "files", ()))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def check_writable(path: str | os.PathLike[str], overwrite: bool, ours: Any, argument: str = "path") -> str:
    """Raise InvalidInputError (naming ``path``) unless a file can be written there without destroying
    anything refsam did not write (`refsam.data.archive.check_target()`: not a directory, a FIFO or a
    symbolic link, its folder exists and is writable, and an existing file is ``ours(path)`` or
    ``overwrite`` is set). Called before the work, not after. Returns the path as a str."""
    return check_target(path, overwrite, ours, argument)
