"""The oracle kit: a versioned suite of small reference cases, and the checker for external scores.

A *case* is one tiny SAM run recorded completely — data, θ_0, configuration, batch schedule, learning
rates, the trajectory — together with the exact influence refsam computes for it and a finite-difference
ground truth. A faster implementation (PyTorch, JAX, …) reads the cases with plain numpy and json, computes
its own influence scores, and :func:`check_scores` compares them (``refsam check DIR --scores FILE``).

Conventions
-----------
* Influence as everywhere in refsam (SPEC §1): ``scores[j, k] = I_j(f_k) = ∂ f_k(θ_T(w)) / ∂ w_j`` at
  w = 1, where f_k(θ) = ℓ(z_k^test, θ) is the (unweighted) loss of test point k. Shape (n_train, n_test).
* A directory holds ``manifest.json`` and one ``<case id>.npz`` per case. The manifest carries the schema
  version, every case's configuration, the sha256 of every case file, and for every stored output the
  tolerance a comparison against it should use. ``.npz`` files load with ``allow_pickle=False``.
* Comparison of scores S with a reference R (SPEC §5): ``max_abs_err = ‖S − R‖_∞``,
  ``rel_err = max_abs_err / max(‖R‖_∞, 1e-300)``; a case passes iff
  ``max_abs_err <= atol + rtol · ‖R‖_∞`` with that output's (rtol, atol). The Spearman rank correlation
  of the flattened arrays is reported beside it (informative, not part of the verdict).
* The suite spans model (logistic, softmax, mlp) × rule (sam, usam, asam) × regularisation (decoupled,
  coupled) × batching (full, minibatch): 36 cases, each n_train = 12, n_test = 3, d ≤ 20, T = 20.

Outputs stored per case (shape (n_train, n_test) unless noted):
    trajectory       exact trajectory influence, adjoint recursion (SPEC §4)              every case
    trajectory_fd    central finite differences of replays with w_j = 1 ± h (ground truth) every case
    trajectory_parameters   dθ_T/dw_j, shape (n_train, n_params), checked against ``trajectory``
                     by the chain rule; for debugging a port one derivative at a time   every case
    closed_form      closed form at a verified root θ̂ (SPEC §3), variant "full"
    closed_form_frozen, closed_form_erm   the two ablations at the same root
    closed_form_fd   central finite differences of the re-solved root (ground truth)
The closed-form outputs exist only for decoupled, full-batch cases whose root was found and verified
(‖G(θ̂)‖ ≤ 1e-10 and closed form = re-solved finite differences ≤ 1e-6); the manifest says why otherwise.
The full schema is documented in docs/validating.md.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .closed_form import hessian_influence
from .counterfactual import finite_difference_influence
from .datasets import make_gaussian_classification
from .fixed_point import FixedPointError, solve_fixed_point
from .models import MLP, LogisticRegression, SoftmaxRegression, model_from_spec
from .objective import Problem
from .resolve import finite_difference_influence as finite_difference_root_influence
from .sam import SAM
from .training import Trajectory, train
from .trajectory_influence import trajectory_influence, trajectory_parameter_influence

SCHEMA_VERSION = 1
FORMAT_NAME = "refsam-reference-cases"
MANIFEST_NAME = "manifest.json"

# -- the suite's axes and sizes -----------------------------------------------------------------------
MODELS = ("logistic", "softmax", "mlp")
RULES = ("sam", "usam", "asam")
REGULARIZATIONS = ("decoupled", "coupled")
BATCHINGS = ("full", "minibatch")

N_TRAIN = 12  # training points per case
N_TEST = 3  # test points per case: one influence column each
N_FEATURES = 3
STEPS = 20  # T
BATCH_SIZE = 4  # minibatch cases: 3 batches per epoch, reshuffled every epoch
LR = 0.5  # η; minibatch cases decay it linearly, η_t = η (1 − t/(2T)) (the per-step lr array is exercised)
WEIGHT_DECAY = 0.05  # λ > 0 so that softmax has a nonsingular ∂G/∂θ
RHO = {"sam": 0.1, "usam": 0.2, "asam": 0.5}  # ρ per rule: each moves the influence by several percent
KAPPA = 0.01  # ASAM's κ
DATA_SEED = {"logistic": 1, "softmax": 2, "mlp": 3}  # data, θ_0 and batch shuffles per model

# -- tolerances: each stored output carries the one a comparison against it should use --------------
RTOL_EXACT = 1e-7  # an exact derivative recomputed by another float64 implementation: reordered sums
#                    over T = 20 steps and another linear solver agree to ~1e-12; 1e-7 leaves margin yet
#                    rejects any dropped term (the SAM terms move the scores by more than 1e-3)
RTOL_TRAJECTORY_FD = 1e-5  # SPEC §4: central differences of replays, h = FD_STEP, O(h²) truncation
RTOL_CLOSED_FORM_FD = 1e-6  # SPEC §3: central differences of the re-solved root
RTOL_CHAIN_RULE = 1e-9  # scores = (dθ_T/dw) ∇f(θ_T)ᵀ: the same exact derivative contracted two ways
ATOL = 0.0  # the criterion is relative to ‖reference‖_∞, so no absolute floor is needed
FD_STEP = 1e-4  # h in w_j = 1 ± h
ROOT_TOL = 1e-10  # ‖G(θ̂)‖ at which a root counts as verified (SPEC §3)
ROOT_WARMUP_STEPS = 200  # extra full-batch SAM steps from θ_T that warm-start the root finder

OUTPUT_METHODS = {
    "trajectory": "exact trajectory influence: adjoint recursion through the recorded run (SPEC §4)",
    "trajectory_fd": "central finite differences of replaying the run with w_j = 1 ± h (ground truth)",
    "trajectory_parameters": "exact parameter influence d theta_T / d w_j (row j), adjoint recursion",
    "closed_form": "closed form at the verified root theta_hat, variant 'full' (SPEC §3)",
    "closed_form_frozen": "closed form at theta_hat with the perturbation frozen (ablation, SPEC §3)",
    "closed_form_erm": "Koh-Liang influence at theta_hat, SAM ignored (ablation, SPEC §3)",
    "closed_form_fd": "central finite differences of the re-solved root with w_j = 1 ± h (ground truth)",
}
TARGETS = tuple(OUTPUT_METHODS)

# Arrays every case file holds (name -> description); shapes are checked against the manifest.
TRAJECTORY_ARRAYS = ("X", "y", "X_test", "y_test", "weights", "theta0", "thetas", "epsilons", "lrs",
                     "batch_indices", "batch_offsets", "test_losses")


class CaseFileError(ValueError):
    """A case directory or scores file is missing, corrupt, tampered with or malformed.

    The message is one line naming the file, what was expected, what was found and the remedy.
    """


# -- the suite ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaseSpec:
    """One point of the grid model × rule × regularisation × batching."""

    model: str
    rule: str
    regularization: str
    batching: str

    @property
    def case_id(self) -> str:
        return f"{self.model}-{self.rule}-{self.regularization}-{self.batching}"


CASE_SPECS = tuple(
    CaseSpec(m, r, reg, b) for m in MODELS for r in RULES for reg in REGULARIZATIONS for b in BATCHINGS
)


def case_ids(pattern: str | None = None) -> list:
    """Ids of the suite's cases, optionally filtered by a shell-style pattern (``"mlp-*"``)."""
    return [s.case_id for s in _select_specs(pattern)]


def _select_specs(pattern):
    if pattern is None:
        return list(CASE_SPECS)
    specs = [s for s in CASE_SPECS if fnmatch.fnmatchcase(s.case_id, pattern)]
    if not specs:
        raise ValueError(
            f"`cases` pattern {pattern!r} matches no case; ids look like 'logistic-sam-decoupled-full' "
            f"(model-rule-regularization-batching)"
        )
    return specs


def _build_model(name: str):
    return {
        "logistic": LogisticRegression,
        "softmax": lambda: SoftmaxRegression(3),
        "mlp": lambda: MLP((N_FEATURES, 3, 2), activation="tanh"),
    }[name]()


def _make_run(spec: CaseSpec):
    """(problem, sam, trajectory, X_test, y_test) of one case: the deterministic recipe."""
    model = _build_model(spec.model)
    seed = DATA_SEED[spec.model]
    X_all, y_all, _ = make_gaussian_classification(
        N_TRAIN + N_TEST, N_FEATURES, model.n_classes, separation=1.0, seed=seed
    )
    X, y = X_all[:N_TRAIN], y_all[:N_TRAIN]
    X_test, y_test = X_all[N_TRAIN:], y_all[N_TRAIN:]
    problem = Problem(model, X, y, weight_decay=WEIGHT_DECAY, regularization=spec.regularization)
    sam = SAM(RHO[spec.rule], spec.rule, kappa=KAPPA)
    if spec.batching == "full":
        batch_size, lr = None, LR
    else:
        batch_size = BATCH_SIZE
        lr = LR * (1.0 - 0.5 * np.arange(STEPS) / STEPS)  # η_t = η (1 − t/(2T)), t = 0 … T−1
    trajectory = train(problem, sam, lr, STEPS, batch_size=batch_size, seed=seed)
    return problem, sam, trajectory, X_test, y_test


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """SPEC §5: ‖a − b‖_∞ / max(‖b‖_∞, 1e-300)."""
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def _closed_form_outputs(problem, sam, trajectory, X_test, y_test):
    """(arrays, outputs-metadata, status) of the closed form, or ({}, {}, reason) without a verified root."""
    lr = float(trajectory.lrs[0])
    # Warm start: θ_T after ROOT_WARMUP_STEPS more full-batch steps (T = 20 steps end too far from the
    # MLP roots for the root finder; the root found is the one the run is heading for).
    warm = train(problem, sam, lr, ROOT_WARMUP_STEPS, theta0=trajectory.theta_final).theta_final
    try:
        root = solve_fixed_point(problem, sam, warm, lr=lr, tol=ROOT_TOL)
    except FixedPointError as exc:
        return {}, {}, f"no verified root: {str(exc).splitlines()[0]}"
    theta_hat = root.theta
    arrays = {"theta_hat": theta_hat}
    for variant, name in (("full", "closed_form"), ("frozen", "closed_form_frozen"),
                          ("erm", "closed_form_erm")):
        arrays[f"influence_{name}"] = hessian_influence(problem, sam, theta_hat, X_test, y_test,
                                                        variant=variant)
    arrays["influence_closed_form_fd"] = finite_difference_root_influence(
        problem, sam, theta_hat, X_test, y_test, h=FD_STEP
    )
    err = _rel_err(arrays["influence_closed_form"], arrays["influence_closed_form_fd"])
    if not err <= RTOL_CLOSED_FORM_FD:
        return {}, {}, (f"root not verified: closed form vs re-solved finite differences rel. err "
                        f"{err:.2e} > {RTOL_CLOSED_FORM_FD:.0e}")
    shape = (problem.n, len(y_test))  # (n_train, n_test)
    outputs = {
        "closed_form": _output("closed_form", shape, True, RTOL_EXACT, against="closed_form_fd", err=err,
                               tolerance=RTOL_CLOSED_FORM_FD),
        "closed_form_frozen": _output("closed_form_frozen", shape, True, RTOL_EXACT),
        "closed_form_erm": _output("closed_form_erm", shape, True, RTOL_EXACT),
        "closed_form_fd": _output("closed_form_fd", shape, False, RTOL_CLOSED_FORM_FD, step=FD_STEP),
    }
    outputs["closed_form"]["root"] = {
        "array": "theta_hat", "residual": float(f"{root.residual:.3e}"),
        "condition_number": float(f"{root.condition_number:.3e}"), "lr": lr,
        "spectral_radius": float(f"{root.spectral_radius:.6f}"),
    }
    status = (f"verified root: ||G(theta_hat)|| = {root.residual:.1e}, cond(dG/dtheta) = "
              f"{root.condition_number:.1e}, spectral radius of I - lr dG/dtheta = "
              f"{root.spectral_radius:.4f}")
    return arrays, outputs, status


def _output(name, shape, exact, rtol, against=None, err=None, tolerance=None, step=None) -> dict:
    out = {"array": f"influence_{name}", "shape": list(shape), "method": OUTPUT_METHODS[name],
           "exact": exact, "rtol": rtol, "atol": ATOL}
    if against is not None:
        out["verified_against"] = {"output": against, "rel_err": float(f"{err:.3e}"),
                                   "tolerance": tolerance}
    if step is not None:
        out["fd_step"] = step
    return out


def _build_case(spec: CaseSpec):
    """(arrays, manifest entry without file/sha256) for one case."""
    problem, sam, trajectory, X_test, y_test = _make_run(spec)
    offsets = np.cumsum([0] + [len(b) for b in trajectory.batches]).astype(np.int64)
    arrays = {
        "X": problem.X, "y": problem.y.astype(np.int64),
        "X_test": X_test, "y_test": y_test.astype(np.int64),
        "weights": trajectory.weights, "theta0": trajectory.theta0,
        "thetas": trajectory.thetas, "epsilons": trajectory.epsilons, "lrs": trajectory.lrs,
        "batch_indices": np.concatenate(trajectory.batches).astype(np.int64), "batch_offsets": offsets,
        "test_losses": problem.model.losses(trajectory.theta_final, X_test, y_test),
    }
    exact = trajectory_influence(problem, trajectory, X_test, y_test, method="adjoint")
    fd = finite_difference_influence(problem, trajectory, X_test, y_test, h=FD_STEP)
    err = _rel_err(exact, fd)
    if not err <= RTOL_TRAJECTORY_FD:  # a failed self-check is a refsam bug: never export it
        raise RuntimeError(f"case {spec.case_id}: adjoint vs finite differences rel. err {err:.2e} "
                           f"> {RTOL_TRAJECTORY_FD:.0e}; refusing to export an unverified case")
    # dθ_T/dw_j, row j; checked by the chain rule: scores[j, k] = (dθ_T/dw_j) · ∇f_k(θ_T)
    parameters = trajectory_parameter_influence(problem, trajectory, method="adjoint")  # (n, d)
    test_grads = problem.model.per_sample_grads(trajectory.theta_final, X_test, y_test)  # (m, d)
    chain_err = _rel_err(parameters @ test_grads.T, exact)
    if not chain_err <= RTOL_CHAIN_RULE:
        raise RuntimeError(f"case {spec.case_id}: parameter influence contradicts the scores by the chain "
                           f"rule (rel. err {chain_err:.2e} > {RTOL_CHAIN_RULE:.0e}); refusing to export")
    arrays["influence_trajectory"] = exact
    arrays["influence_trajectory_fd"] = fd
    arrays["influence_trajectory_parameters"] = parameters
    shape = (problem.n, len(y_test))  # (n_train, n_test)
    outputs = {
        "trajectory": _output("trajectory", shape, True, RTOL_EXACT, against="trajectory_fd", err=err,
                              tolerance=RTOL_TRAJECTORY_FD),
        "trajectory_fd": _output("trajectory_fd", shape, False, RTOL_TRAJECTORY_FD, step=FD_STEP),
        "trajectory_parameters": _output("trajectory_parameters", (problem.n, problem.d), True, RTOL_EXACT,
                                         against="trajectory", err=chain_err, tolerance=RTOL_CHAIN_RULE),
    }
    if spec.regularization == "decoupled" and spec.batching == "full":
        cf_arrays, cf_outputs, closed_form_status = _closed_form_outputs(problem, sam, trajectory,
                                                                         X_test, y_test)
        arrays.update(cf_arrays)
        outputs.update(cf_outputs)
    else:
        closed_form_status = ("not applicable: the closed form is defined for decoupled, full-batch "
                              "runs at a root (SPEC §3)")
    c = trajectory.config
    entry = {
        "id": spec.case_id,
        "model": c["model"],
        "rule": c["rule"], "rho": c["rho"], "kappa": c["kappa"],
        "weight_decay": c["weight_decay"], "regularization": c["regularization"],
        "batching": spec.batching, "batch_size": c["batch_size"],
        "steps": trajectory.steps,
        "lr_schedule": "constant" if spec.batching == "full" else "linear decay: lr_t = lr (1 - t / (2T))",
        "n_train": problem.n, "n_test": int(X_test.shape[0]), "n_features": problem.p,
        "n_params": problem.d, "n_classes": problem.model.n_classes,
        "outputs": outputs,
        "closed_form_status": closed_form_status,
    }
    return arrays, entry


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def export_cases(directory, cases: str | None = None, progress: bool = False) -> dict:
    """Write the reference suite to ``directory`` (created if needed) and return its manifest.

    Parameters
    ----------
    directory : path
        Receives ``manifest.json`` and one ``<case id>.npz`` per case. Existing files of the same names
        are overwritten; other files are left alone.
    cases : str, optional
        Shell-style pattern selecting case ids (``"logistic-*"``); default all 36.
    progress : bool
        Print one line per case to stdout.

    The export is deterministic: the same refsam on the same machine writes the same bytes (and hence
    the same sha256) every time. Every case is self-checked before it is written (adjoint vs finite
    differences ≤ 1e-5; closed form vs re-solved finite differences ≤ 1e-6 where a root is claimed).
    Cost: a few seconds for the whole suite.
    """
    from . import __version__  # here, not at the top: refsam/__init__.py may import this module

    specs = _select_specs(cases)
    directory = os.fspath(directory)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise CaseFileError(f"cannot create the case directory {directory!r}: {exc.strerror or exc}") from exc
    entries = []
    for spec in specs:
        arrays, entry = _build_case(spec)
        file_name = f"{spec.case_id}.npz"
        path = os.path.join(directory, file_name)
        np.savez(path, **arrays)
        entry = {"id": entry.pop("id"), "file": file_name, "sha256": _sha256(path), **entry}
        entries.append(entry)
        if progress:
            print(f"  {spec.case_id:<34} {entry['closed_form_status'].split(':')[0]}", flush=True)
    manifest = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "generator": f"refsam {__version__}",
        "influence_convention": ("scores[j, k] = I_j(f_k) = d f_k(theta_T(w)) / d w_j at w = 1; f_k is the "
                                 "loss of test point k; removing j is dw_j = -1 (SPEC §1)"),
        "comparison": ("pass iff max|S - R| <= atol + rtol * max|R| over all entries, with the "
                       "output's rtol and atol"),
        "cases": entries,
    }
    with open(os.path.join(directory, MANIFEST_NAME), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=False, ensure_ascii=False)
        f.write("\n")
    return manifest


# -- reading and verifying a case directory -------------------------------------------------------------
_CASE_FIELDS = {
    "id": str, "file": str, "sha256": str, "model": dict, "rule": str, "rho": (int, float),
    "kappa": (int, float), "weight_decay": (int, float), "regularization": str, "batching": str,
    "steps": int, "n_train": int, "n_test": int, "n_features": int, "n_params": int, "outputs": dict,
}
_OUTPUT_FIELDS = {"array": str, "shape": list, "rtol": (int, float), "atol": (int, float), "exact": bool}


def _manifest_error(directory, message) -> CaseFileError:
    return CaseFileError(f"{os.path.join(os.fspath(directory), MANIFEST_NAME)}: {message}")


def read_manifest(directory, verify: bool = True) -> dict:
    """Read and validate ``directory/manifest.json``; with ``verify`` also check every file's sha256.

    Raises
    ------
    CaseFileError (a ValueError)
        Missing directory or manifest, invalid JSON, unknown format or schema version, missing or
        mistyped fields, a missing case file, or a sha256 mismatch (tampered or corrupted file).
    """
    directory = os.fspath(directory)
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise CaseFileError(f"case directory {directory!r} {what}; create one with "
                            f"`refsam export-cases DIR`")
    if not os.path.isfile(path):
        raise CaseFileError(f"{path} is missing: {directory!r} is not a case directory; create one with "
                            f"`refsam export-cases {directory}`")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _manifest_error(directory, f"not valid JSON ({exc}); re-export the cases") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise _manifest_error(directory, f"`format` must be {FORMAT_NAME!r}, got {got!r}")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise _manifest_error(directory, f"`schema_version` {version!r} is not supported; this refsam "
                                         f"reads schema_version {SCHEMA_VERSION}: re-export the cases")
    cases = manifest.get("cases")
    if not isinstance(cases, list) or not cases:
        raise _manifest_error(directory, "`cases` must be a non-empty list")
    seen = set()
    for i, case in enumerate(cases):
        if not isinstance(case, dict):
            raise _manifest_error(directory, f"cases[{i}] must be an object, got {type(case).__name__}")
        where = f"cases[{i}] ({case.get('id', '?')})"
        _check_fields(directory, case, _CASE_FIELDS, where)
        if case["id"] in seen:
            raise _manifest_error(directory, f"{where}: duplicate case id {case['id']!r}")
        seen.add(case["id"])
        if os.path.basename(case["file"]) != case["file"]:
            raise _manifest_error(directory, f"{where}: `file` must be a plain file name, got "
                                             f"{case['file']!r}")
        for name, output in case["outputs"].items():
            if not isinstance(output, dict):
                raise _manifest_error(directory, f"{where}: outputs[{name!r}] must be an object")
            _check_fields(directory, output, _OUTPUT_FIELDS, f"{where}: outputs[{name!r}]")
            if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in output["shape"]):
                raise _manifest_error(directory, f"{where}: outputs[{name!r}]: `shape` must be a list of "
                                                 f"ints >= 0, got {output['shape']!r}")
        if "trajectory" not in case["outputs"]:
            raise _manifest_error(directory, f"{where}: outputs lacks 'trajectory'")
    if verify:
        for case in cases:
            _verify_file(directory, case)
    return manifest


def _check_fields(directory, mapping, fields, where):
    for key, kind in fields.items():
        if key not in mapping:
            raise _manifest_error(directory, f"{where}: missing field `{key}`")
        value = mapping[key]
        if isinstance(value, bool) and kind is not bool:
            raise _manifest_error(directory, f"{where}: field `{key}` has type bool")
        if not isinstance(value, kind):
            raise _manifest_error(directory, f"{where}: field `{key}` has type {type(value).__name__}")


def _verify_file(directory, case) -> str:
    path = os.path.join(directory, case["file"])
    if not os.path.isfile(path):
        raise CaseFileError(f"case file {path} listed in the manifest is missing; re-export the cases")
    digest = _sha256(path)
    if digest != case["sha256"]:
        raise CaseFileError(
            f"case file {path}: sha256 mismatch (manifest {case['sha256'][:12]}…, file {digest[:12]}…): "
            f"the file was modified or corrupted; re-export the cases"
        )
    return path


def load_case(directory, case_id: str, verify: bool = True) -> ReferenceCase:
    """Read one case (its manifest entry and every array), checking hash, keys and shapes."""
    manifest = read_manifest(directory, verify=False)
    entries = {c["id"]: c for c in manifest["cases"]}
    if case_id not in entries:
        raise CaseFileError(f"no case {case_id!r} in {os.fspath(directory)!r}; it holds "
                            f"{_preview(sorted(entries))}")
    return _load_entry(os.fspath(directory), entries[case_id], verify)


def load_cases(directory, cases: str | None = None) -> list:
    """All cases of a directory (optionally those whose id matches ``cases``), verified."""
    manifest = read_manifest(directory, verify=True)
    entries = [c for c in manifest["cases"] if cases is None or fnmatch.fnmatchcase(c["id"], cases)]
    return [_load_entry(os.fspath(directory), c, verify=False) for c in entries]


def _load_entry(directory, entry, verify) -> ReferenceCase:
    path = _verify_file(directory, entry) if verify else os.path.join(directory, entry["file"])
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CaseFileError(f"case file {path}: unreadable .npz ({exc}); re-export the cases") from exc
    n, m, p, d, T = (entry["n_train"], entry["n_test"], entry["n_features"], entry["n_params"],
                     entry["steps"])
    shapes = {"X": (n, p), "y": (n,), "X_test": (m, p), "y_test": (m,), "weights": (n,), "theta0": (d,),
              "thetas": (T + 1, d), "epsilons": (T, d), "lrs": (T,), "batch_offsets": (T + 1,),
              "test_losses": (m,)}
    for output in entry["outputs"].values():
        shapes[output["array"]] = tuple(output["shape"])
        root = output.get("root")
        if isinstance(root, dict) and isinstance(root.get("array"), str):
            shapes[root["array"]] = (d,)
    missing = sorted((set(shapes) | {"batch_indices"}) - set(arrays))
    if missing:
        raise CaseFileError(f"case file {path}: missing arrays {missing}; re-export the cases")
    for key, shape in shapes.items():
        if arrays[key].shape != shape:
            raise CaseFileError(f"case file {path}: array {key!r} has shape {arrays[key].shape}, the "
                                f"manifest implies {shape}")
    return ReferenceCase(entry, arrays, path)


class ReferenceCase:
    """One loaded case: ``meta`` (its manifest entry) and ``arrays`` (name -> array).

    ``problem()``, ``sam()`` and ``trajectory()`` rebuild the refsam objects of the recorded run, for
    refsam's own tests and for users who want to compute with refsam on a case.
    """

    def __init__(self, meta: dict, arrays: dict, path: str):
        self.meta = meta
        self.arrays = arrays
        self.path = path

    @property
    def case_id(self) -> str:
        return self.meta["id"]

    @property
    def batches(self) -> list:
        """B_t as a list of T int arrays."""
        offsets, flat = self.arrays["batch_offsets"], self.arrays["batch_indices"]
        return [flat[offsets[t]:offsets[t + 1]] for t in range(len(offsets) - 1)]

    def reference(self, target: str = "trajectory") -> np.ndarray:
        """The stored output ``target`` (see :data:`TARGETS`), shape (n_train, n_test)."""
        if target not in self.meta["outputs"]:
            raise ValueError(f"case {self.case_id!r} has no output {target!r}; it has "
                             f"{sorted(self.meta['outputs'])} ({self.meta.get('closed_form_status', '')})")
        return self.arrays[self.meta["outputs"][target]["array"]]

    def problem(self) -> Problem:
        m = self.meta
        return Problem(model_from_spec(m["model"]), self.arrays["X"], self.arrays["y"], m["weight_decay"],
                       self.arrays["weights"], m["regularization"])

    def sam(self) -> SAM:
        return SAM(self.meta["rho"], self.meta["rule"], self.meta["kappa"])

    def trajectory(self) -> Trajectory:
        m, a = self.meta, self.arrays
        problem = self.problem()
        config = {"model": m["model"], **self.sam().config(), "weight_decay": m["weight_decay"],
                  "regularization": m["regularization"], "batch_size": m["batch_size"], "seed": None,
                  "steps": m["steps"], "n": m["n_train"], "d": m["n_params"],
                  "data_sha256": problem.data_fingerprint()}
        return Trajectory(a["thetas"], a["epsilons"], self.batches, a["lrs"], a["weights"], config)

    def __repr__(self) -> str:
        return f"ReferenceCase({self.case_id!r}, outputs={sorted(self.meta['outputs'])})"


# -- checking external scores ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CaseCheck:
    """The comparison of one case's scores with its reference output."""

    case_id: str
    passed: bool
    max_abs_err: float  # ‖S − R‖_∞
    rel_err: float  # ‖S − R‖_∞ / ‖R‖_∞
    spearman: float  # rank correlation of the flattened arrays (nan if either is constant)
    rtol: float
    atol: float
    note: str = ""


@dataclass(frozen=True)
class CheckReport:
    """Per-case results of :func:`check_scores`; ``passed`` iff every compared case passed."""

    target: str
    results: tuple
    skipped: tuple = ()  # cases selected but without the target output (e.g. no closed form)
    ignored_keys: tuple = ()  # score keys that name no selected case

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def n_failed(self) -> int:
        return sum(not r.passed for r in self.results)

    def table(self) -> str:
        """The per-case table printed by ``refsam check``."""
        width = max([len("case")] + [len(r.case_id) for r in self.results])
        lines = [f"{'case':<{width}}  result  max abs err  rel err    spearman  rtol"]
        for r in self.results:
            lines.append(f"{r.case_id:<{width}}  {'pass' if r.passed else 'FAIL':<6}  {r.max_abs_err:<11.3e}"
                         f"  {r.rel_err:<9.3e}  {r.spearman:<8.4f}  {r.rtol:.0e}"
                         + (f"  {r.note}" if r.note else ""))
        n = len(self.results)
        lines.append(f"{n - self.n_failed}/{n} cases passed (target: {self.target})"
                     + ("" if self.passed else f"; {self.n_failed} FAILED"))
        if self.skipped:
            lines.append(f"{len(self.skipped)} selected cases have no {self.target!r} output and were "
                         f"skipped: {_preview(self.skipped)}")
        if self.ignored_keys:
            lines.append(f"ignored {len(self.ignored_keys)} score keys that name no selected case: "
                         f"{_preview(self.ignored_keys)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _preview(names, limit=4) -> str:
    names = list(names)
    shown = ", ".join(repr(x) for x in names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def read_scores(scores) -> dict:
    """Scores as a dict case id -> array: from an ``.npz`` path (no pickle) or a mapping."""
    if isinstance(scores, Mapping):
        return dict(scores)
    path = os.fspath(scores)
    if not os.path.isfile(path):
        raise CaseFileError(f"scores file {path!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise CaseFileError(f"scores file {path!r} holds a single array, expected an .npz with one "
                                f"array per case id (np.savez(path, **{{case_id: scores}}))")
        with loaded as f:
            return {k: f[k] for k in f.files}
    except CaseFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CaseFileError(f"scores file {path!r} is not a readable .npz without pickle ({reason}); write "
                            f"it with np.savez(path, **{{case_id: array}})") from exc


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    a, b = a.ravel(), b.ravel()
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b)[0])


def compare(scores: np.ndarray, reference: np.ndarray, rtol: float, atol: float = 0.0,
            case_id: str = "") -> CaseCheck:
    """Compare one score array with a reference of the same shape (criterion in the module docstring)."""
    if not np.all(np.isfinite(scores)):
        bad = int(scores.size - np.count_nonzero(np.isfinite(scores)))
        return CaseCheck(case_id, False, float("inf"), float("inf"), float("nan"), rtol, atol,
                         f"{bad} non-finite scores")
    max_abs = float(np.max(np.abs(scores - reference)))
    scale = float(np.max(np.abs(reference)))
    passed = max_abs <= atol + rtol * scale
    note = ""
    if not passed and np.max(np.abs(scores + reference)) <= atol + rtol * scale:
        note = "scores = -reference: sign convention flipped? (I_j = +d f / d w_j)"
    return CaseCheck(case_id, bool(passed), max_abs, max_abs / max(scale, 1e-300),
                     _spearman(scores, reference), rtol, atol, note)


def check_scores(directory, scores, target: str = "trajectory", cases: str | None = None) -> CheckReport:
    """Compare external influence scores with the reference cases in ``directory``.

    Parameters
    ----------
    directory : path
        A directory written by :func:`export_cases`; its manifest and every file's sha256 are verified.
    scores : path or mapping
        An ``.npz`` (loaded with ``allow_pickle=False``) or a dict holding one array per case id, shape
        (n_train, n_test), entry [j, k] = I_j(loss of test point k) — or (n_train, n_params) for the
        target "trajectory_parameters", row j = dθ_T/dw_j. Keys naming no case are ignored.
    target : str
        Which stored output to compare with: "trajectory" (default), "trajectory_fd",
        "trajectory_parameters", "closed_form", "closed_form_frozen", "closed_form_erm" or
        "closed_form_fd". Cases without it are skipped.
    cases : str, optional
        Shell-style pattern restricting the cases compared (``"logistic-*"``).

    Returns
    -------
    CheckReport
        ``.passed``, ``.results`` (one :class:`CaseCheck` per case) and ``.table()``.

    Raises
    ------
    CaseFileError (a ValueError)
        For a corrupt, tampered or missing case file or manifest, an unreadable scores file, a selected
        case missing from the scores, or scores of the wrong shape or dtype.
    """
    if target not in TARGETS:
        raise ValueError(f"`target` must be one of {list(TARGETS)}, got {target!r}")
    manifest = read_manifest(directory, verify=True)
    entries = [c for c in manifest["cases"] if cases is None or fnmatch.fnmatchcase(c["id"], cases)]
    if not entries:
        raise ValueError(f"`cases` pattern {cases!r} matches none of the {len(manifest['cases'])} cases in "
                         f"{os.fspath(directory)!r}")
    compared = [c for c in entries if target in c["outputs"]]
    skipped = tuple(c["id"] for c in entries if target not in c["outputs"])
    if not compared:
        raise ValueError(f"none of the selected cases has a {target!r} output (see each case's "
                         f"closed_form_status in the manifest)")
    score_arrays = read_scores(scores)
    where = "scores" if isinstance(scores, Mapping) else f"scores file {os.fspath(scores)!r}"
    missing = [c["id"] for c in compared if c["id"] not in score_arrays]
    if missing:
        raise CaseFileError(f"{where} lacks {len(missing)} case ids: {_preview(missing)}; it has "
                            f"{_preview(sorted(score_arrays)) or 'no arrays'} (select cases with --cases)")
    results = []
    for entry in compared:
        case = _load_entry(os.fspath(directory), entry, verify=False)
        output = entry["outputs"][target]
        raw = np.asarray(score_arrays[entry["id"]])
        if raw.dtype.kind not in "fiu":
            raise CaseFileError(f"{where}: scores for {entry['id']!r} have dtype {raw.dtype}, expected "
                                f"float64")
        expected = tuple(output["shape"])
        if raw.shape != expected:
            names = {(entry["n_train"], entry["n_test"]): "(n_train, n_test) = ",
                     (entry["n_train"], entry["n_params"]): "(n_train, n_params) = "}.get(expected, "")
            hint = "; transpose it" if raw.shape == expected[::-1] else ""
            raise CaseFileError(f"{where}: scores for {entry['id']!r} have shape {raw.shape}, expected "
                                f"{names}{expected}{hint}")
        results.append(compare(raw.astype(np.float64), case.arrays[output["array"]], output["rtol"],
                               output["atol"], entry["id"]))
    selected = {c["id"] for c in entries}
    ignored = tuple(sorted(k for k in score_arrays if k not in selected))
    return CheckReport(target, tuple(results), skipped, ignored)
