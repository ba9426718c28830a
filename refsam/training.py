"""SAM training that records a replayable trajectory (SPEC §2).

One step on batch B_t with learning rate η_t:

  decoupled:  g_t = ∇F_{B_t,w}(θ_t)              ε_t = ε(θ_t; g_t)    ŵ_t = θ_t + ε_t
              θ_{t+1} = θ_t − η_t (∇F_{B_t,w}(ŵ_t) + λ θ_t)
  coupled:    g_t = ∇F_{B_t,w}(θ_t) + λ θ_t      ε_t = ε(θ_t; g_t)    ŵ_t = θ_t + ε_t
              θ_{t+1} = θ_t − η_t (∇F_{B_t,w}(ŵ_t) + λ ŵ_t)

ρ = 0 gives ε_t = 0 exactly, so the run is exactly (S)GD. A run is deterministic given
(θ_0, batch schedule, η schedule, rule, ρ, λ, mode, w); :class:`Trajectory` records all of them and
:func:`replay` re-runs a recorded schedule — with other sample weights for counterfactual runs.

Batches: ``batch_size=None`` is the full batch at every step. Otherwise each epoch draws a seeded
permutation of [n] and cuts it into consecutive batches of ``batch_size``; the last batch of an epoch
holds the remainder (it is smaller when batch_size does not divide n, as with drop_last=False).
"""

from __future__ import annotations

import json
import sys
import zipfile

import numpy as np

from ._validation import check_finite_array, check_positive, check_positive_int, check_random_state
from .models import model_from_spec
from .objective import Problem
from .sam import SAM

TRAJECTORY_FORMAT_VERSION = 1


def sam_step(problem: Problem, sam: SAM, theta, idx, lr: float, weights=None):
    """One SAM step (equations in the module docstring). Returns (θ_{t+1}, ε_t)."""
    lam = problem.weight_decay
    g = problem.grad(theta, idx, weights)
    if problem.regularization == "coupled":
        g = g + lam * theta
    eps = sam.perturbation(theta, g)
    theta_perturbed = theta + eps  # ŵ_t
    if problem.regularization == "coupled":
        descent = problem.grad(theta_perturbed, idx, weights) + lam * theta_perturbed
    else:
        descent = problem.grad(theta_perturbed, idx, weights) + lam * theta
    return theta - lr * descent, eps


class Trajectory:
    """A recorded SAM run.

    Attributes
    ----------
    thetas : array (T+1, d)      θ_0 … θ_T
    epsilons : array (T, d)      ε_0 … ε_{T-1}
    batches : list of T int arrays   B_t, indices into the training set
    lrs : array (T,)             η_t
    weights : array (n,)         the sample weights w the run used
    config : dict                everything else needed to replay it: model spec, rho, rule, kappa,
                                 weight_decay, regularization, batch_size, seed, steps, n, d,
                                 data_sha256 (of X and y)
    """

    def __init__(self, thetas, epsilons, batches, lrs, weights, config):
        self.thetas = np.asarray(thetas, dtype=np.float64)
        self.epsilons = np.asarray(epsilons, dtype=np.float64)
        self.batches = [np.asarray(b, dtype=np.int64) for b in batches]
        self.lrs = np.asarray(lrs, dtype=np.float64)
        self.weights = np.asarray(weights, dtype=np.float64)
        self.config = dict(config)

    @property
    def steps(self) -> int:
        """T, the number of steps."""
        return len(self.lrs)

    @property
    def theta0(self) -> np.ndarray:
        return self.thetas[0]

    @property
    def theta_final(self) -> np.ndarray:
        """θ_T."""
        return self.thetas[-1]

    @property
    def perturbed(self) -> np.ndarray:
        """ŵ_t = θ_t + ε_t for t < T, shape (T, d)."""
        return self.thetas[:-1] + self.epsilons

    def sam(self) -> SAM:
        """The perturbation rule of this run."""
        c = self.config
        return SAM(c["rho"], c["rule"], c["kappa"])

    def problem(self, X, y, weights=None) -> Problem:
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
        if problem.weight_decay != c["weight_decay"]:
            mismatches.append(f"weight_decay {problem.weight_decay} != recorded {c['weight_decay']}")
        if problem.regularization != c["regularization"]:
            mismatches.append(
                f"regularization {problem.regularization!r} != recorded {c['regularization']!r}"
            )
        if mismatches:
            raise ValueError("`problem` does not match the trajectory: " + "; ".join(mismatches))

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path) -> None:
        """Write the trajectory to exactly ``path`` (an .npz archive, no pickle; no suffix is added).

        Batches are stored flat with offsets, so batches of different sizes round-trip exactly.
        """
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
                config_json=np.array(json.dumps(self.config, sort_keys=True)),
            )

    @classmethod
    def load(cls, path) -> Trajectory:
        """Read a trajectory written by :meth:`save`. Never unpickles.

        Raises ValueError naming the file if it is not such an archive, has another format version,
        lacks a key, or is inconsistent (shapes, batch offsets and indices, configuration).
        """
        where = f"trajectory file {str(path)!r}"
        try:
            archive = np.load(path, allow_pickle=False)
            if not hasattr(archive, "files"):
                raise ValueError("it holds a single array, not the .npz archive Trajectory.save writes")
            with archive:
                data = {k: archive[k] for k in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"cannot read a trajectory from {str(path)!r}: {exc}") from exc
        missing = set(_ARRAY_KEYS) - set(data)
        if missing:
            raise ValueError(f"{where} lacks keys {sorted(missing)}")
        version = data["format_version"]
        if version.shape != () or version.dtype.kind not in "iu" or int(version) != TRAJECTORY_FORMAT_VERSION:
            raise ValueError(
                f"{where} has format_version {version.tolist()!r}, this refsam reads "
                f"{TRAJECTORY_FORMAT_VERSION}"
            )
        try:
            config = json.loads(str(data["config_json"]))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where} has an unreadable config_json: {exc}") from exc
        if not isinstance(config, dict):
            raise ValueError(f"{where}: config_json must hold a JSON object, got {type(config).__name__}")
        missing = set(_CONFIG_KEYS) - set(config)
        if missing:
            raise ValueError(f"{where}: config_json lacks keys {sorted(missing)}")
        problems = _inconsistencies(data, config)
        if problems:
            raise ValueError(f"{where} is inconsistent (tampered or corrupt): " + "; ".join(problems))
        offsets = data["batch_offsets"]
        flat = data["batch_indices"]
        batches = [flat[offsets[t]:offsets[t + 1]] for t in range(len(offsets) - 1)]
        return cls(data["thetas"], data["epsilons"], batches, data["lrs"], data["weights"], config)

    def __repr__(self) -> str:
        c = self.config
        return (f"Trajectory(steps={self.steps}, d={self.thetas.shape[1]}, rule={c['rule']!r}, "
                f"rho={c['rho']}, batch_size={c['batch_size']})")


_ARRAY_KEYS = ("format_version", "thetas", "epsilons", "batch_indices", "batch_offsets", "lrs", "weights",
               "config_json")
_CONFIG_KEYS = ("model", "rho", "rule", "kappa", "weight_decay", "regularization", "batch_size", "seed",
                "steps", "n", "d", "data_sha256")


def _inconsistencies(data: dict, config: dict) -> list:
    """What is wrong with the arrays of a loaded trajectory, given its config (empty list: nothing)."""
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
            SAM(config["rho"], config["rule"], config["kappa"])
            model_from_spec(config["model"])
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"invalid configuration ({exc})")
    return problems


def make_batches(n: int, steps: int, batch_size, seed) -> list:
    """The batch schedule: full batch, or seeded per-epoch shuffles cut into batches (see module doc)."""
    if batch_size is None:
        full = np.arange(n)
        return [full for _ in range(steps)]
    rng = check_random_state(seed)
    batches = []
    while len(batches) < steps:
        perm = rng.permutation(n)
        for start in range(0, n, batch_size):
            batches.append(np.sort(perm[start:start + batch_size]))
            if len(batches) == steps:
                break
    return batches


def _check_lr(lr, steps: int) -> np.ndarray:
    if np.ndim(lr) == 0:
        return np.full(steps, check_positive("lr", lr))
    lrs = check_finite_array("lr", lr, shape=(steps,))
    if np.any(lrs <= 0):
        raise ValueError(f"`lr` entries must be > 0, got minimum {float(lrs.min())!r}")
    return lrs


def _run(problem: Problem, sam: SAM, theta0, batches, lrs, progress=False):
    """Run the SAM steps over a given schedule; the single code path of train and replay."""
    steps = len(lrs)
    thetas = np.empty((steps + 1, problem.d))
    epsilons = np.empty((steps, problem.d))
    thetas[0] = theta0
    report_every = max(1, steps // 10)
    for t in range(steps):
        thetas[t + 1], epsilons[t] = sam_step(problem, sam, thetas[t], batches[t], lrs[t])
        if not np.all(np.isfinite(thetas[t + 1])):
            raise FloatingPointError(
                f"training diverged at step {t}: θ_{t + 1} has non-finite entries; lower `lr` "
                f"(got {lrs[t]}) or `rho` (got {sam.rho})"
            )
        if progress and ((t + 1) % report_every == 0 or t + 1 == steps):
            print(f"  step {t + 1}/{steps}", file=sys.stderr, flush=True)
    return thetas, epsilons


def train(problem: Problem, sam: SAM, lr, steps: int, batch_size=None, seed=0, theta0=None,
          progress: bool = False) -> Trajectory:
    """Train with SAM and record the trajectory.

    Parameters
    ----------
    problem : Problem
    sam : SAM
    lr : float > 0 or array (steps,) of floats > 0
        η_t, constant or per step.
    steps : int >= 1
        T.
    batch_size : int in 1..n, or None for the full batch
    seed : None, int or np.random.Generator
        Seeds the batch shuffles and, when ``theta0`` is None, the initial θ.
    theta0 : array (d,), optional
        Initial parameters; default ``problem.init_params(seed)``.
    progress : bool
        Print progress to stderr every 10% of the steps.

    Returns
    -------
    Trajectory

    Raises
    ------
    ZeroGradientError
        If a batch gradient is exactly zero under the SAM or ASAM rule (ε undefined).
    """
    if not isinstance(problem, Problem):
        raise ValueError(f"`problem` must be a refsam.Problem, got {type(problem).__name__}")
    if not isinstance(sam, SAM):
        raise ValueError(f"`sam` must be a refsam.SAM, got {type(sam).__name__}")
    steps = check_positive_int("steps", steps)
    lrs = _check_lr(lr, steps)
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
        if batch_size > problem.n:
            raise ValueError(
                f"`batch_size` must be <= n={problem.n} (or None for the full batch), got {batch_size}"
            )
    rng = check_random_state(seed)
    seed_record = int(seed) if isinstance(seed, (int, np.integer)) else None
    if theta0 is None:
        theta0 = problem.init_params(rng)
    else:
        theta0 = problem.check_theta(theta0, "theta0")
    batches = make_batches(problem.n, steps, batch_size, rng)
    thetas, epsilons = _run(problem, sam, theta0, batches, lrs, progress)
    config = {
        "model": problem.model.spec(),
        **sam.config(),
        "weight_decay": problem.weight_decay,
        "regularization": problem.regularization,
        "batch_size": batch_size,
        "seed": seed_record,
        "steps": steps,
        "n": problem.n,
        "d": problem.d,
        "data_sha256": problem.data_fingerprint(),
    }
    return Trajectory(thetas, epsilons, batches, lrs, problem.weights, config)


def replay(problem: Problem, trajectory: Trajectory, weights=None, progress: bool = False) -> Trajectory:
    """Re-run a recorded schedule (θ_0, batches, η_t, SAM rule) on ``problem``.

    With ``weights=None`` the run uses ``problem.weights``; a replay with the recorded weights reproduces
    the trajectory bit for bit. Other weights give the counterfactual run (same init, batches and
    learning rates), e.g. ``w_j = 0`` for leave-one-out or ``w_j = 1 ± h`` for finite differences.
    """
    if not isinstance(trajectory, Trajectory):
        raise ValueError(f"`trajectory` must be a refsam.Trajectory, got {type(trajectory).__name__}")
    trajectory.check_problem(problem)
    if weights is not None:
        problem = problem.with_weights(weights)
    sam = trajectory.sam()
    thetas, epsilons = _run(problem, sam, trajectory.theta0, trajectory.batches, trajectory.lrs,
                            progress)
    config = dict(trajectory.config)
    return Trajectory(thetas, epsilons, trajectory.batches, trajectory.lrs, problem.weights, config)
