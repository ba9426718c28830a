"""The record of a SAM run, `Trajectory`, and its versioned ``.npz`` file format (no pickle)."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..data.archive import read_npz
from ..errors import InvalidInputError
from ..models import model_from_spec
from ..objective import Problem
from ..sam import SAM
from .step import SGDMomentum

__all__ = ["TRAJECTORY_FORMAT_VERSION", "Trajectory", "check_writable", "is_trajectory_file"]

TRAJECTORY_FORMAT_VERSION = 3  # 3: ‖g_t‖ per step; 2: momentum buffers and the optimizer's configuration
READABLE_FORMAT_VERSIONS = (1, 2, 3)

Array = NDArray[np.float64]


class Trajectory:
    """A recorded SAM run.

    The constructor checks what `load()` checks (shapes against ``config``'s steps, d and n, finite
    float64 arrays, batch indices in range, a valid SAM and momentum configuration) and raises
    `refsam.InvalidInputError` naming what is wrong; the model spec may be a user model's.

    Attributes
    ----------
    thetas : array (T+1, d)      θ_0 … θ_T
    epsilons : array (T, d)      ε_0 … ε_{T-1}
    batches : list of T int arrays   B_t, indices into the training set
    lrs : array (T,)             η_t
    weights : array (n,)         the sample weights w the run used
    config : dict                everything else needed to replay it: model spec, rho, rule, kappa,
                                 weight_decay, regularization, batch_size, seed, steps, n, d,
                                 data_sha256 (of X and y), momentum, dampening, nesterov
    buffers : array (T, d) or None   the momentum buffers buf_0 … buf_{T−1} (None without momentum):
                                 with θ_t, buf_{t−1} is the run's state
    grad_norms : array (T,) or None  ‖g_t‖₂ of the gradient each step's perturbation was built from
                                 (`refsam.training.train()` records it; None for runs recorded
                                 elsewhere or read from files of format 1 or 2). With ε_t it gives
                                 g_t for the SAM rule, g_t = (ε_t/ρ)(‖g_t‖ + e), so the exact
                                 trajectory methods need no gradient at θ_t to rebuild it. Given by
                                 hand it must be that norm.
    """

    def __init__(self, thetas: ArrayLike, epsilons: ArrayLike, batches: Any, lrs: ArrayLike,
                 weights: ArrayLike, config: dict[str, Any], buffers: ArrayLike | None = None,
                 grad_norms: ArrayLike | None = None) -> None:
        # Checked as Trajectory.load checks a file: shapes against config's steps, d, n; finite float64
        # arrays; batch indices in range; a configuration SAM, the model and the optimizer accept.
        try:
            self.thetas = np.asarray(thetas, dtype=np.float64)
            self.epsilons = np.asarray(epsilons, dtype=np.float64)
            self.batches = [np.asarray(b).reshape(-1) for b in batches]
            self.lrs = np.asarray(lrs, dtype=np.float64)
            self.weights = np.asarray(weights, dtype=np.float64)
            self.buffers = None if buffers is None else np.asarray(buffers, dtype=np.float64)
            self.grad_norms = None if grad_norms is None else np.asarray(grad_norms, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"Trajectory(...): every array must be numeric ({exc})") from None
        if not isinstance(config, Mapping):
            raise InvalidInputError(f"Trajectory(...): `config` must be a dict, got {type(config).__name__}")
        self.config = {"momentum": 0.0, "dampening": 0.0, "nesterov": False, **dict(config)}
        missing = set(_CONFIG_KEYS) - set(self.config)
        if missing:
            raise InvalidInputError(f"Trajectory(...): `config` lacks keys {sorted(missing)}")
        if any(b.dtype.kind not in "iu" for b in self.batches):
            raise InvalidInputError("Trajectory(...): `batches` must hold integer index arrays")
        self.batches = [b.astype(np.int64) for b in self.batches]
        offsets = np.cumsum([0] + [len(b) for b in self.batches]).astype(np.int64)
        flat = np.concatenate(self.batches) if self.batches else np.zeros(0, dtype=np.int64)
        d = self.thetas.shape[1] if self.thetas.ndim == 2 else 0
        data = {"thetas": self.thetas, "epsilons": self.epsilons, "lrs": self.lrs, "weights": self.weights,
                "batch_offsets": offsets, "batch_indices": flat,
                "buffers": np.zeros((0, d)) if self.buffers is None else self.buffers,
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
        return self.thetas[0]

    @property
    def theta_final(self) -> Array:
        """θ_T."""
        return self.thetas[-1]

    @property
    def w_hat(self) -> Array:
        """The perturbed points ŵ_t = θ_t + ε_t for t < T, shape (T, d)."""
        return self.thetas[:-1] + self.epsilons

    @property
    def perturbed(self) -> Array:
        """0.1's name for `w_hat`."""
        return self.w_hat

    def optimizer(self) -> SGDMomentum:
        """The base optimizer's momentum of this run (μ = 0 for runs recorded without it)."""
        c = self.config
        return SGDMomentum(c["momentum"], c["dampening"], c["nesterov"])

    def sam(self) -> SAM:
        """The perturbation rule of this run."""
        c = self.config
        return SAM.from_config(c)

    def problem(self, X: ArrayLike, y: ArrayLike, weights: ArrayLike | None = None) -> Problem:
        """Rebuild the run's Problem on data (X, y) (checked against the recorded fingerprint)."""
        c = self.config
        problem = Problem(model_from_spec(c["model"]), X, y, c["weight_decay"],
                          self.weights if weights is None else weights, c["regularization"])
        self.check_problem(problem)
        return problem

    def check_problem(self, problem: Problem) -> None:
        """Raise ValueError if ``problem`` is not the problem this trajectory was recorded on
        (model, data, weight decay, mode). Sample weights may differ (counterfactual replays)."""
        c = self.config
        mismatches = []
        if problem.model.spec() != c["model"]:
            mismatches.append(f"model {problem.model.spec()} != recorded {c['model']}")
        if problem.data_fingerprint() != c["data_sha256"]:
            mismatches.append("training data (X, y) differ from the recorded run's (sha256 mismatch)")
        if problem.weight_decay_config() != c["weight_decay"]:
            mismatches.append(f"weight_decay {problem.weight_decay_config()} != recorded {c['weight_decay']}")
        if problem.regularization != c["regularization"]:
            mismatches.append(
                f"regularization {problem.regularization!r} != recorded {c['regularization']!r}"
            )
        if mismatches:
            raise InvalidInputError("`problem` does not match the trajectory: " + "; ".join(mismatches))

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> None:
        """Write the trajectory to exactly ``path`` (an .npz archive, no pickle; no suffix is added).

        Batches are stored flat with offsets, so batches of different sizes round-trip exactly. An existing
        file is replaced only if it is a trajectory file (one refsam wrote) or with ``overwrite=True``;
        a directory or an unwritable place is a ValueError naming the path.
        """
        check_writable(path, overwrite, is_trajectory_file)
        offsets = np.cumsum([0] + [len(b) for b in self.batches]).astype(np.int64)
        flat = np.concatenate(self.batches) if self.batches else np.zeros(0, dtype=np.int64)
        with open(path, "wb") as fh:  # a file object: np.savez would append ".npz" to a bare name
            np.savez(
                fh,
                format_version=np.array(TRAJECTORY_FORMAT_VERSION),
                thetas=self.thetas,
                epsilons=self.epsilons,
                batch_indices=flat.astype(np.int64),
                batch_offsets=offsets,
                lrs=self.lrs,
                weights=self.weights,
                buffers=np.zeros((0, self.thetas.shape[1])) if self.buffers is None else self.buffers,
                grad_norms=np.zeros(0) if self.grad_norms is None else self.grad_norms,
                config_json=np.array(json.dumps(self.config, sort_keys=True)),
            )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Trajectory:
        """Read a trajectory written by `save()`. Never unpickles.

        Raises ValueError naming the file if it is not such an archive, has another format version,
        lacks a key, or is inconsistent (shapes, batch offsets and indices, configuration).
        """
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
        missing = (set(_ARRAY_KEYS + (("buffers",) if int(version) >= 2 else ())
                       + (("grad_norms",) if int(version) >= 3 else ())) - set(data))
        if missing:
            raise InvalidInputError(f"{where} lacks keys {sorted(missing)}")
        try:
            config = json.loads(str(data["config_json"]))
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{where} has an unreadable config_json: {exc}") from exc
        if not isinstance(config, dict):
            raise InvalidInputError(
                f"{where}: config_json must hold a JSON object, got {type(config).__name__}")
        required = _CONFIG_KEYS + (_MOMENTUM_KEYS if int(version) >= 2 else ())
        missing = set(required) - set(config)
        if missing:
            raise InvalidInputError(f"{where}: config_json lacks keys {sorted(missing)}")
        config = {"momentum": 0.0, "dampening": 0.0, "nesterov": False, **config}  # version 1: no momentum
        problems = _inconsistencies(data, config)
        if problems:
            raise InvalidInputError(f"{where} is inconsistent (tampered or corrupt): " + "; ".join(problems))
        offsets = data["batch_offsets"]
        flat = data["batch_indices"]
        batches = [flat[offsets[t]:offsets[t + 1]] for t in range(len(offsets) - 1)]
        buffers = data.get("buffers")
        buffers = None if buffers is None or buffers.shape[0] == 0 else buffers
        grad_norms = data.get("grad_norms")
        grad_norms = None if grad_norms is None or grad_norms.shape == (0,) else grad_norms
        return cls(data["thetas"], data["epsilons"], batches, data["lrs"], data["weights"], config,
                   buffers=buffers, grad_norms=grad_norms)

    def __repr__(self) -> str:
        c = self.config
        extra = f", momentum={c['momentum']}" if c["momentum"] else ""
        return (f"Trajectory(steps={self.steps}, d={self.thetas.shape[1]}, rule={c['rule']!r}, "
                f"rho={c['rho']}, batch_size={c['batch_size']}{extra})")


_ARRAY_KEYS = ("format_version", "thetas", "epsilons", "batch_indices", "batch_offsets", "lrs", "weights",
               "config_json")
_CONFIG_KEYS = ("model", "rho", "rule", "kappa", "weight_decay", "regularization", "batch_size", "seed",
                "steps", "n", "d", "data_sha256")
_MOMENTUM_KEYS = ("momentum", "dampening", "nesterov")


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
            SAM.from_config(config)
            if built_in_model:
                model_from_spec(config["model"])
            optimizer = SGDMomentum(config["momentum"], config["dampening"], config["nesterov"])
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"invalid configuration ({exc})")
            return problems
        buffers = data.get("buffers")
        if buffers is not None:
            want = (T, d) if optimizer.active else (0, d)
            if buffers.shape != want:
                problems.append(f"buffers has shape {buffers.shape}, expected {want}")
            elif buffers.dtype != np.float64 or not np.all(np.isfinite(buffers)):
                problems.append("buffers must be finite float64")
        elif optimizer.active:
            problems.append("a momentum run must store its buffers")
        norms = data.get("grad_norms")
        if norms is not None and norms.shape != (0,):
            if norms.shape != (T,):
                problems.append(f"grad_norms has shape {norms.shape}, expected {(T,)} (or empty)")
            elif norms.dtype != np.float64 or not np.all(np.isfinite(norms)) or np.any(norms < 0):
                problems.append("grad_norms must be finite float64 >= 0")
    return problems




def is_trajectory_file(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is an .npz archive written by `Trajectory.save()` (its keys say so)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {"format_version", "config_json", "thetas"} <= set(getattr(archive, "files", ()))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def check_writable(path: str | os.PathLike[str], overwrite: bool, ours: Any) -> None:
    """Raise ValueError (naming ``path``) unless a file can be written there without destroying anything
    refsam did not write: the path is not a directory, its folder exists and is writable, and an existing
    file is ``ours(path)`` or ``overwrite`` is set. Called before the work, not after."""
    where = os.fspath(path)
    if os.path.isdir(where):
        raise InvalidInputError(f"cannot write {where!r}: it is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(where))
    if not os.path.isdir(folder):
        raise InvalidInputError(f"cannot write {where!r}: the folder {folder!r} does not exist")
    if os.path.exists(where):
        if not os.access(where, os.W_OK):
            raise InvalidInputError(f"cannot write {where!r}: the file is not writable")
        if not overwrite and not ours(where):
            raise InvalidInputError(
                f"refusing to overwrite {where!r}: refsam did not write it; choose another "
                f"name, or pass overwrite=True (--force on the command line)")
    elif not os.access(folder, os.W_OK):
        raise InvalidInputError(f"cannot write {where!r}: the folder {folder!r} is not writable")
