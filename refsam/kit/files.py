"""The reference suite on disk: export, the manifest (schema, sha256 of every file), and reading a case.

A directory holds ``manifest.json`` and one ``<case id>.npz`` per case. The manifest carries the schema
version, every case's configuration, the sha256 of every case file, for every stored output the
tolerance a comparison against it should use, and the sha256 of the manifest itself. ``.npz`` files load
with ``allow_pickle=False``. The full schema is documented in docs/validating.md.

Nothing here is trusted for a verdict: the hashes catch corruption and careless edits, and
`verify_against_recipe()` binds each case (id ↔ file ↔ arrays ↔ manifest entry) to what refsam's
recipe computes for that id (`refsam.kit.suite.recompute_case()`), which is what
`refsam.kit.check_scores()` grades against.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..data.archive import check_target, read_npz, write_atomically
from ..errors import InvalidInputError
from ..ground_truth.parallel import check_parallel, shared_executor
from ..models import model_from_spec
from ..objective import Problem
from ..sam import SAM
from ..tolerances import RTOL_CASE_RECOMPUTE, rel_err
from ..training import Optimizer, Trajectory, optimizer_from_config
from ..training.clipping import GradientClipping, clipping_from_config
from ..validation import check_progress
from ..version import __version__
from .suite import ATOL, OUTPUT_RTOL, build_case, remember_case, select_specs, spec_of

__all__ = [
    "FORMAT_NAME",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "TRAJECTORY_ARRAYS",
    "CaseFileError",
    "ReferenceCase",
    "export_cases",
    "load_case",
    "load_cases",
    "load_entry",
    "preview",
    "read_manifest",
    "verify_against_recipe",
]

# 3: the SAM variants: `rho` a number or a per-step list, the rule's own fields (`fisher_eta`, `sigma`,
#    `ema`, `direction`, `alpha`, `unit_gradient`, `perturb_mask`, `every`, each only where it applies) and
#    the rule's state array (`state_sam_ema`, Friendly SAM's running mean);
# 2: the optimizer as an object ("optimizer"), the loss's "l2" and the "penalty" axis; the manifest's own
# sha256 (`manifest_sha256`); ids, files and arrays bound to the recipe. 1 (refsam 0.1's) is refused.
SCHEMA_VERSION = 3
FORMAT_NAME = "refsam-reference-cases"
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".refsam-export.lock"  # present while an export writes into the directory

# Arrays every case file holds (name -> description); shapes are checked against the manifest.
TRAJECTORY_ARRAYS = ("X", "y", "X_test", "y_test", "weights", "theta0", "thetas", "epsilons", "lrs",
                     "batch_indices", "batch_offsets", "test_losses")


class CaseFileError(InvalidInputError):
    """A case directory or scores file is missing, corrupt, tampered with or malformed.

    The message is one line naming the file, what was expected, what was found and the remedy.
    """


def preview(names: Iterable[object], limit: int = 4) -> str:
    """The first ``limit`` names, quoted, and how many there are in all: for one-line messages."""
    names = list(names)
    shown = ", ".join(repr(x) for x in names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")



def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def export_cases(directory: str | os.PathLike[str], cases: str | None = None,
                 progress: bool | None = None, force: bool = False, *, executor: Executor | None = None,
                 n_jobs: int = 1) -> dict[str, Any]:
    """Write the reference suite to ``directory`` (created if needed) and return its manifest.

    Parameters
    ----------
    directory : path
        Receives ``manifest.json`` and one ``<case id>.npz`` per case. Files of other names are left
        alone. A ``manifest.json`` already there is replaced only if refsam wrote it and the new export
        keeps every case it lists (or with ``force``); a file at a case's name only if it is a case file
        refsam wrote; a symbolic link never (with ``force`` the link itself, not its target). Every file
        is written whole (a temporary file renamed onto its name), and the directory is locked
        (``.refsam-export.lock``) while the export writes: a second export into it is refused.
    cases : str, optional
        Shell-style pattern selecting case ids (``"logistic-*"``); default all 84.
    progress : bool or None
        A line per case on stderr; None (the default) means on where stderr is a terminal.
    force : bool
        Replace a manifest refsam did not write, one listing cases this export would drop, files at the
        cases' names that refsam did not write, and symbolic links there.
    executor, n_jobs :
        Run the self-checks' finite-difference loops on a concurrent.futures executor or a pool of
        ``n_jobs`` processes (`refsam.ground_truth.parallel`): the same bytes are written.

    Returns
    -------
    dict
        The manifest written to ``directory/manifest.json``.

    Notes
    -----
    The export is deterministic: the same refsam on the same machine writes the same bytes (and hence
    the same sha256) every time. Every case is self-checked before it is written (adjoint vs finite
    differences ≤ 1e-5; closed form vs re-solved finite differences ≤ 1e-6 where a root is claimed).
    Cost: a few seconds for the whole suite.
    """
    progress = check_progress(progress)
    specs = select_specs(cases)
    check_parallel(executor, n_jobs)
    if directory is None or (isinstance(directory, str) and not directory.strip()):
        raise CaseFileError(f"`directory` must be a folder name, got {directory!r}")
    try:
        directory = os.fspath(directory)
    except TypeError:
        raise CaseFileError(f"`directory` must be a path (str or os.PathLike), got "
                            f"{type(directory).__name__}") from None
    if os.path.islink(directory) and not force:
        raise CaseFileError(f"refusing to export into {directory!r}: it is a symbolic link; give the folder "
                            f"itself, or pass --force / force=True")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise CaseFileError(f"cannot create the case directory {directory!r}: {exc.strerror or exc}") from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CaseFileError(f"cannot write into the case directory {directory!r}: permission denied; choose "
                            f"a writable folder")
    with _export_lock(directory):
        previous = set() if force else _check_replaceable(directory, {s.case_id for s in specs})
        targets = {}  # refused before any work: a link, a FIFO, or a file refsam did not write
        for spec in specs:
            path = os.path.join(directory, f"{spec.case_id}.npz")
            try:
                targets[spec.case_id] = check_target(path, force, lambda p: os.path.basename(p) in previous
                                                     or _is_case_file(p), "directory")
            except InvalidInputError as exc:
                raise CaseFileError(str(exc)) from None
        try:
            manifest_path = check_target(os.path.join(directory, MANIFEST_NAME), force, None, "directory")
        except InvalidInputError as exc:
            raise CaseFileError(str(exc)) from None
        entries = []
        with shared_executor(executor, n_jobs) as pool:
            for spec in specs:
                arrays, entry = build_case(spec, pool)
                remember_case(spec.case_id, arrays, entry)  # refsam's own result: what check grades by
                path = targets[spec.case_id]
                _write(path, lambda fh, arrays=arrays: np.savez(fh, **arrays))
                entry = {"id": entry.pop("id"), "file": os.path.basename(path), "sha256": _sha256(path),
                         **entry}
                entries.append(entry)
                if progress:
                    status = entry["closed_form_status"].split(":")[0]
                    print(f"  {spec.case_id:<34} {status}", file=sys.stderr, flush=True)
        manifest = {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "generator": f"refsam {__version__}",
            "influence_convention": ("scores[j, k] = I_j(f_k) = d f_k(theta_T(w)) / d w_j at w = 1; f_k is "
                                     "the loss of test point k; removing j is dw_j = -1"),
            "comparison": ("pass iff max|S - R| <= atol + rtol * max|R| over all entries, with the "
                           "output's rtol and atol"),
            "cases": entries,
        }
        manifest["manifest_sha256"] = manifest_digest(manifest)
        text = json.dumps(manifest, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
        _write(manifest_path, lambda fh: fh.write(text.encode("utf-8")))
    return manifest


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 (hex) of the manifest without its ``manifest_sha256`` field, as sorted compact JSON."""
    body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False,
                                     separators=(",", ":")).encode("utf-8")).hexdigest()


def _write(path: str, write: Any) -> None:
    try:
        write_atomically(path, write)
    except OSError as exc:
        raise CaseFileError(f"cannot write {path}: {exc.strerror or exc}") from None


def _is_case_file(path: str) -> bool:
    """True if ``path`` is a case file (an .npz holding a case's arrays): one refsam wrote."""
    try:
        arrays = read_npz(path)
    except InvalidInputError:
        return False
    return {"thetas", "influence_trajectory", "batch_offsets"} <= set(arrays)


@contextlib.contextmanager
def _export_lock(directory: str) -> Iterator[None]:
    """Hold ``directory/.refsam-export.lock`` (created exclusively, holding this process id) while an
    export writes: a second export into the same directory stops with a clear error instead of
    interleaving its files and manifest with the first one's. A lock left by a process that no longer
    runs (on this machine) is taken over."""
    path = os.path.join(directory, LOCK_NAME)
    for attempt in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            holder = _lock_holder(path)
            if attempt == 0 and holder is not None and not _process_alive(holder):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # stale: its export died
                continue
            raise CaseFileError(
                f"another export is writing into {directory!r} (lock file {path}, process "
                f"{holder if holder is not None else '?'}); wait for it to finish, or delete the lock file "
                f"if no export is running") from None
        except OSError as exc:
            raise CaseFileError(f"cannot write into the case directory {directory!r}: "
                                f"{exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _lock_holder(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            return int(fh.read().strip() or "x")
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


# -- reading and verifying a case directory -------------------------------------------------------------
_CASE_FIELDS = {
    "id": str, "file": str, "sha256": str, "model": dict, "rule": str, "rho": (int, float, list),
    "kappa": (int, float), "l2": (int, float), "optimizer": dict, "penalty": str, "batching": str,
    "steps": int, "n_train": int, "n_test": int, "n_features": int, "n_params": int, "outputs": dict,
}
_OUTPUT_FIELDS = {"array": str, "shape": list, "rtol": (int, float), "atol": (int, float), "exact": bool}


def _manifest_error(directory: str | os.PathLike[str], message: str) -> CaseFileError:
    return CaseFileError(f"{os.path.join(os.fspath(directory), MANIFEST_NAME)}: {message}")


def read_manifest(directory: str | os.PathLike[str], verify: bool = True) -> dict[str, Any]:
    """Read and validate ``directory/manifest.json``; with ``verify`` also check every file's sha256.

    Raises
    ------
    CaseFileError (a ValueError)
        Missing directory or manifest, invalid JSON, unknown format or schema version, missing or
        mistyped fields, a missing case file, or a sha256 mismatch (tampered or corrupted file).
    """
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
        raise CaseFileError(f"`directory` must be a case directory path, got {directory!r:.60}")
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
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _manifest_error(directory, f"not valid JSON ({reason}); re-export the cases") from exc
    except RecursionError:
        raise _manifest_error(directory, "not a manifest (JSON nested too deeply); re-export the "
                                         "cases") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise _manifest_error(directory, f"`format` must be {FORMAT_NAME!r}, got {got!r}")
    version = manifest.get("schema_version")
    if version == 1:
        raise _manifest_error(directory, "`schema_version` 1 is refsam 0.1's (weight decay as "
                                         "`weight_decay` + `regularization`, momentum as loose fields); "
                                         f"this refsam reads schema_version {SCHEMA_VERSION} (`l2` and an "
                                         "`optimizer` object): re-export the cases with "
                                         "`refsam export-cases`")
    if version != SCHEMA_VERSION:
        raise _manifest_error(directory, f"`schema_version` {version!r} is not supported; this refsam "
                                         f"reads schema_version {SCHEMA_VERSION}: re-export the cases")
    stored_digest = manifest.get("manifest_sha256")
    if stored_digest != manifest_digest(manifest):
        raise _manifest_error(directory, "the manifest does not match its own `manifest_sha256`: it was "
                                         "edited or corrupted; re-export the cases")
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
        if spec_of(case["id"]) is None:
            raise _manifest_error(directory, f"{where}: {case['id']!r} is not a case of this suite "
                                             f"(schema_version {SCHEMA_VERSION}); re-export the cases")
        if case["file"] != f"{case['id']}.npz":
            raise _manifest_error(directory, f"{where}: `file` must be {case['id'] + '.npz'!r} (the case "
                                             f"id's file), got {case['file']!r}")
        for name, output in case["outputs"].items():
            if not isinstance(output, dict):
                raise _manifest_error(directory, f"{where}: outputs[{name!r}] must be an object")
            _check_fields(directory, output, _OUTPUT_FIELDS, f"{where}: outputs[{name!r}]")
            if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in output["shape"]):
                raise _manifest_error(directory, f"{where}: outputs[{name!r}]: `shape` must be a list of "
                                                 f"ints >= 0, got {output['shape']!r}")
            _check_tolerances(directory, name, output, f"{where}: outputs[{name!r}]")
        if "trajectory" not in case["outputs"]:
            raise _manifest_error(directory, f"{where}: outputs lacks 'trajectory'")
    if verify:
        for case in cases:
            _verify_file(directory, case)
    return manifest


def _check_replaceable(directory: str, new_ids: set[str]) -> set[str]:
    """Refuse to overwrite a manifest refsam did not write, or to shrink a suite silently; return the
    file names the existing manifest lists (files refsam wrote, which the export may replace)."""
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.lexists(path):
        return set()
    files: set[str] = set()
    try:
        if os.path.islink(path) or not os.path.isfile(path):
            raise TypeError
        with open(path, encoding="utf-8") as f:
            existing = json.load(f)
        ids = {c["id"] for c in existing["cases"]} if existing.get("format") == FORMAT_NAME else None
        files = {str(c["file"]) for c in existing["cases"]} if ids is not None else set()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError, AttributeError,
            RecursionError):
        ids = None
    if ids is None:
        raise CaseFileError(f"{path} exists and was not written by refsam export-cases; refusing to "
                            f"overwrite it (choose another directory, or pass --force / force=True)")
    dropped = sorted(ids - new_ids)
    if dropped:
        raise CaseFileError(f"{path} lists {len(dropped)} cases this export would drop "
                            f"({preview(dropped)}); export them too, use another directory, or pass "
                            f"--force / force=True to replace the suite")
    return files


def _check_tolerances(directory: str, name: str, output: dict[str, Any], where: str) -> None:
    """Every stored output is a known one, and its (rtol, atol) are finite, >= 0 and no looser than the
    suite's: the verdict of `refsam check` cannot be loosened by editing the manifest."""
    if name not in OUTPUT_RTOL:
        raise _manifest_error(directory, f"{where}: unknown output {name!r}; outputs are "
                                         f"{sorted(OUTPUT_RTOL)}")
    rtol, atol = float(output["rtol"]), float(output["atol"])
    if not (np.isfinite(rtol) and 0.0 <= rtol <= OUTPUT_RTOL[name]):
        raise _manifest_error(directory, f"{where}: `rtol` must lie in [0, {OUTPUT_RTOL[name]:g}] (the "
                                         f"suite's tolerance for {name!r}), got {rtol!r}: the manifest was "
                                         f"edited or corrupted; re-export the cases")
    if not (np.isfinite(atol) and 0.0 <= atol <= ATOL):
        raise _manifest_error(directory, f"{where}: `atol` must be {ATOL:g} (the suite compares relative "
                                         f"to ‖reference‖_∞), got {atol!r}: the manifest was edited or "
                                         f"corrupted; re-export the cases")


def _check_fields(directory: str, mapping: dict[str, Any], fields: dict[str, Any], where: str) -> None:
    for key, kind in fields.items():
        if key not in mapping:
            raise _manifest_error(directory, f"{where}: missing field `{key}`")
        value = mapping[key]
        if isinstance(value, bool) and kind is not bool:
            raise _manifest_error(directory, f"{where}: field `{key}` has type bool")
        if not isinstance(value, kind):
            raise _manifest_error(directory, f"{where}: field `{key}` has type {type(value).__name__}")


def _verify_file(directory: str, case: dict[str, Any]) -> str:
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


def load_case(directory: str | os.PathLike[str], case_id: str, verify: bool = True) -> ReferenceCase:
    """Read one case (its manifest entry and every array), checking hash, keys and shapes."""
    manifest = read_manifest(directory, verify=False)
    entries = {c["id"]: c for c in manifest["cases"]}
    if case_id not in entries:
        raise CaseFileError(f"no case {case_id!r} in {os.fspath(directory)!r}; it holds "
                            f"{preview(sorted(entries))}")
    return load_entry(os.fspath(directory), entries[case_id], verify)


def load_cases(directory: str | os.PathLike[str], cases: str | None = None) -> list[ReferenceCase]:
    """All cases of a directory (optionally those whose id matches ``cases``), verified."""
    manifest = read_manifest(directory, verify=True)
    entries = [c for c in manifest["cases"] if cases is None or fnmatch.fnmatchcase(c["id"], cases)]
    return [load_entry(os.fspath(directory), c, verify=False) for c in entries]


def load_entry(directory: str, entry: dict[str, Any], verify: bool) -> ReferenceCase:
    """One manifest entry's case file, read and checked against the manifest (hash, keys, shapes)."""
    path = _verify_file(directory, entry) if verify else os.path.join(directory, entry["file"])
    try:
        arrays = read_npz(path)
    except InvalidInputError as exc:
        raise CaseFileError(f"case file {path}: unreadable .npz ({exc}); re-export the cases") from exc
    n, m, p, d, T = (entry["n_train"], entry["n_test"], entry["n_features"], entry["n_params"],
                     entry["steps"])
    shapes = {"X": (n, p), "y": (n,), "X_test": (m, p), "y_test": (m,), "weights": (n,), "theta0": (d,),
              "thetas": (T + 1, d), "epsilons": (T, d), "lrs": (T,), "batch_offsets": (T + 1,),
              "test_losses": (m,)}
    for name in _state_names(entry):  # the optimizer's states after each step, by name
        shapes[f"state_{name}"] = (T, d)
    for output in entry["outputs"].values():
        shapes[output["array"]] = tuple(output["shape"])
        root = output.get("root")
        if isinstance(root, dict) and isinstance(root.get("array"), str):
            shapes[root["array"]] = (d,)
        probe = output.get("probe")  # the vectors v of a stored product (J v): the output's shape
        if isinstance(probe, dict) and isinstance(probe.get("array"), str):
            shapes[probe["array"]] = tuple(output["shape"])
    missing = sorted((set(shapes) | {"batch_indices"}) - set(arrays))
    if missing:
        raise CaseFileError(f"case file {path}: missing arrays {missing}; re-export the cases")
    for key, shape in shapes.items():
        if arrays[key].shape != shape:
            raise CaseFileError(f"case file {path}: array {key!r} has shape {arrays[key].shape}, the "
                                f"manifest implies {shape}")
    return ReferenceCase(entry, arrays, path)


def _state_names(entry: dict[str, Any]) -> tuple[str, ...]:
    """The state arrays a case's optimizer keeps (from its manifest entry's ``optimizer``)."""
    try:
        return optimizer_from_config(entry["optimizer"], 1.0).state_names + SAM.from_config(entry).state_names
    except (InvalidInputError, TypeError, KeyError):
        return ()  # an unreadable optimizer is refused by the recipe's binding check


# The manifest fields that define a case (compared with the recipe's); the rest are measurements.
_BOUND_FIELDS = ("id", "model", "rule", "rho", "kappa", "l2", "optimizer", "clip_grad_norm", "penalty",
                 "batching", "batch_size", "steps", "norm_eps", "preset", "t_mask", "n_train", "n_test",
                 "n_features", "n_params", "n_classes", "fisher_eta", "sigma", "ema", "direction", "alpha",
                 "unit_gradient", "perturb_mask", "every")
_BOUND_OUTPUT_FIELDS = ("array", "shape", "exact", "rtol", "atol")


def verify_against_recipe(case: ReferenceCase) -> tuple[dict[str, Any], dict[str, Any]]:
    """Bind a loaded case to refsam's recipe for its id and return the recipe's (arrays, entry).

    The case's manifest entry must define the same case (model, rule, ρ, κ, the loss's l2, the optimizer,
    batching, steps, preset, sizes; the same outputs, each naming the same array with the same shape and
    tolerance) and its file must hold the same arrays, equal to what `recompute_case()` computes
    (integers exactly, floats to ``RTOL_CASE_RECOMPUTE`` relative: bit for bit on the exporting
    machine). Raises CaseFileError naming the file and the first disagreement: the directory was edited,
    or written by a different refsam (re-export it with this one).
    """
    from .suite import recompute_case

    arrays, entry = recompute_case(case.case_id)
    meta, where = case.meta, f"case file {case.path}"
    remedy = "the case directory was edited or written by another refsam; re-export the cases"
    for key in _BOUND_FIELDS:
        if meta.get(key) != entry.get(key):
            raise CaseFileError(f"{where}: manifest field `{key}` is {meta.get(key)!r}, but case "
                                f"{case.case_id!r} has {entry.get(key)!r}: {remedy}")
    if set(meta["outputs"]) != set(entry["outputs"]):
        raise CaseFileError(f"{where}: the manifest lists outputs {sorted(meta['outputs'])}, case "
                            f"{case.case_id!r} has {sorted(entry['outputs'])}: {remedy}")
    for name, output in entry["outputs"].items():
        for key in _BOUND_OUTPUT_FIELDS:
            if meta["outputs"][name].get(key) != output[key]:
                got = meta["outputs"][name].get(key)
                raise CaseFileError(f"{where}: outputs[{name!r}].{key} is {got!r}, "
                                    f"case {case.case_id!r} has {output[key]!r}: {remedy}")
    if set(case.arrays) != set(arrays):
        extra, lacking = sorted(set(case.arrays) - set(arrays)), sorted(set(arrays) - set(case.arrays))
        raise CaseFileError(f"{where}: arrays differ from case {case.case_id!r}'s (unexpected {extra}, "
                            f"missing {lacking}): {remedy}")
    for key, expected in arrays.items():
        stored = case.arrays[key]
        if stored.shape != expected.shape or stored.dtype.kind not in ("iu" if expected.dtype.kind in "iu"
                                                                       else "f"):
            raise CaseFileError(f"{where}: array {key!r} has shape {stored.shape} and dtype {stored.dtype}, "
                                f"case {case.case_id!r} has {expected.shape} and {expected.dtype}: {remedy}")
        if expected.dtype.kind in "iu":
            same = bool(np.array_equal(stored, expected))
            err = 0.0 if same else float("inf")
        else:
            finite = bool(np.all(np.isfinite(stored)))
            err = rel_err(stored, expected) if finite else float("inf")
            same = finite and err <= RTOL_CASE_RECOMPUTE
        if not same:
            raise CaseFileError(f"{where}: array {key!r} is not what refsam computes for case "
                                f"{case.case_id!r} (rel. err {err:.1e} > {RTOL_CASE_RECOMPUTE:.0e}): "
                                f"{remedy}")
    return arrays, entry


class ReferenceCase:
    """One loaded case: ``meta`` (its manifest entry) and ``arrays`` (name -> array).

    ``problem()``, ``sam()`` and ``trajectory()`` rebuild the refsam objects of the recorded run, for
    refsam's own tests and for users who want to compute with refsam on a case.
    """

    def __init__(self, meta: dict[str, Any], arrays: dict[str, Any], path: str) -> None:
        self.meta = meta
        self.arrays = arrays
        self.path = path

    @property
    def case_id(self) -> str:
        return str(self.meta["id"])

    @property
    def batches(self) -> list[NDArray[np.int64]]:
        """B_t as a list of T int arrays."""
        offsets, flat = self.arrays["batch_offsets"], self.arrays["batch_indices"]
        return [flat[offsets[t]:offsets[t + 1]] for t in range(len(offsets) - 1)]

    def reference(self, target: str = "trajectory") -> NDArray[np.float64]:
        """The stored output ``target`` (see `TARGETS`), shape (n_train, n_test)."""
        if target not in self.meta["outputs"]:
            raise InvalidInputError(f"case {self.case_id!r} has no output {target!r}; it has "
                             f"{sorted(self.meta['outputs'])} ({self.meta.get('closed_form_status', '')})")
        return np.asarray(self.arrays[self.meta["outputs"][target]["array"]], dtype=np.float64)

    def probe_vectors(self) -> NDArray[np.float64]:
        """The vectors v (columns, (d, 2)) of the stored products J v and Jᵀ v (cases with a root)."""
        self.reference("jacobian_T_products")  # a clear error for a case without a closed form
        return np.asarray(self.arrays["probe_vectors"], dtype=np.float64)

    def problem(self) -> Problem:
        m = self.meta
        a = self.arrays
        return Problem(model_from_spec(m["model"]), a["X"], a["y"], a["weights"], l2=m["l2"])

    def optimizer(self) -> Optimizer:
        """The run's base optimizer, with its per-step rates ``lrs``."""
        return optimizer_from_config(self.meta["optimizer"], self.arrays["lrs"])

    def clipping(self) -> GradientClipping | None:
        """The run's gradient clipping (None: the run does not clip)."""
        return clipping_from_config(self.meta.get("clip_grad_norm"))

    def sam(self) -> SAM:
        return SAM.from_config(self.meta)

    def trajectory(self) -> Trajectory:
        m, a = self.meta, self.arrays
        problem = self.problem()
        config = {"model": m["model"], **self.sam().config(), "l2": m["l2"], "optimizer": m["optimizer"],
                  "clip_grad_norm": m.get("clip_grad_norm"), "batch_size": m["batch_size"], "seed": None,
                  "steps": m["steps"], "n": m["n_train"],
                  "d": m["n_params"], "data_sha256": problem.data_fingerprint()}
        states = {k[len("state_"):]: v for k, v in a.items() if k.startswith("state_")}
        return Trajectory(a["thetas"], a["epsilons"], self.batches, a["lrs"], a["weights"], config,
                          states=states)

    def __repr__(self) -> str:
        return f"ReferenceCase({self.case_id!r}, outputs={sorted(self.meta['outputs'])})"


