"""The reference suite on disk: export, the manifest (schema, sha256 of every file), and reading a case.

A directory holds ``manifest.json`` and one ``<case id>.npz`` per case. The manifest carries the schema
version, every case's configuration, the sha256 of every case file, and for every stored output the
tolerance a comparison against it should use. ``.npz`` files load with ``allow_pickle=False``.
The full schema is documented in docs/validating.md.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import Executor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..data.archive import read_npz
from ..errors import InvalidInputError
from ..ground_truth.parallel import check_parallel, shared_executor
from ..models import model_from_spec
from ..objective import Problem
from ..sam import SAM
from ..training import Trajectory
from ..version import __version__
from .suite import ATOL, OUTPUT_RTOL, build_case, select_specs

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
]

SCHEMA_VERSION = 1
FORMAT_NAME = "refsam-reference-cases"
MANIFEST_NAME = "manifest.json"

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
                 progress: bool = False, force: bool = False, *, executor: Executor | None = None,
                 n_jobs: int = 1) -> dict[str, Any]:
    """Write the reference suite to ``directory`` (created if needed) and return its manifest.

    Parameters
    ----------
    directory : path
        Receives ``manifest.json`` and one ``<case id>.npz`` per case. Files of other names are left
        alone. A ``manifest.json`` already there is replaced only if refsam wrote it and the new export
        keeps every case it lists (or with ``force``).
    cases : str, optional
        Shell-style pattern selecting case ids (``"logistic-*"``); default all 51.
    progress : bool
        Print one line per case to stdout.
    force : bool
        Replace a manifest refsam did not write, or one listing cases this export would drop.
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
    specs = select_specs(cases)
    check_parallel(executor, n_jobs)
    directory = os.fspath(directory)
    if not force:
        _check_replaceable(directory, {s.case_id for s in specs})
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise CaseFileError(f"cannot create the case directory {directory!r}: {exc.strerror or exc}") from exc
    entries = []
    with shared_executor(executor, n_jobs) as pool:
        for spec in specs:
            arrays, entry = build_case(spec, pool)
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
                                 "loss of test point k; removing j is dw_j = -1"),
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
            _check_tolerances(directory, name, output, f"{where}: outputs[{name!r}]")
        if "trajectory" not in case["outputs"]:
            raise _manifest_error(directory, f"{where}: outputs lacks 'trajectory'")
    if verify:
        for case in cases:
            _verify_file(directory, case)
    return manifest


def _check_replaceable(directory: str, new_ids: set[str]) -> None:
    """Refuse to overwrite a manifest refsam did not write, or to shrink a suite silently."""
    path = os.path.join(directory, MANIFEST_NAME)
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            existing = json.load(f)
        ids = {c["id"] for c in existing["cases"]} if existing.get("format") == FORMAT_NAME else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError, AttributeError):
        ids = None
    if ids is None:
        raise CaseFileError(f"{path} exists and was not written by refsam export-cases; refusing to "
                            f"overwrite it (choose another directory, or pass --force / force=True)")
    dropped = sorted(ids - new_ids)
    if dropped:
        raise CaseFileError(f"{path} lists {len(dropped)} cases this export would drop "
                            f"({preview(dropped)}); export them too, use another directory, or pass "
                            f"--force / force=True to replace the suite")


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
    if entry.get("momentum"):
        shapes["buffers"] = (T, d)
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
        return self.meta["id"]

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
        return self.arrays[self.meta["outputs"][target]["array"]]

    def probe_vectors(self) -> NDArray[np.float64]:
        """The vectors v (columns, (d, 2)) of the stored products J v and Jᵀ v (cases with a root)."""
        self.reference("jacobian_T_products")  # a clear error for a case without a closed form
        return self.arrays["probe_vectors"]

    def problem(self) -> Problem:
        m = self.meta
        return Problem(model_from_spec(m["model"]), self.arrays["X"], self.arrays["y"], m["weight_decay"],
                       self.arrays["weights"], m["regularization"])

    def sam(self) -> SAM:
        return SAM.from_config(self.meta)

    def trajectory(self) -> Trajectory:
        m, a = self.meta, self.arrays
        problem = self.problem()
        config = {"model": m["model"], **self.sam().config(), "weight_decay": m["weight_decay"],
                  "regularization": m["regularization"], "batch_size": m["batch_size"], "seed": None,
                  "steps": m["steps"], "n": m["n_train"], "d": m["n_params"],
                  "data_sha256": problem.data_fingerprint(), "momentum": m.get("momentum", 0.0),
                  "dampening": m.get("dampening", 0.0), "nesterov": m.get("nesterov", False)}
        return Trajectory(a["thetas"], a["epsilons"], self.batches, a["lrs"], a["weights"], config,
                          buffers=a.get("buffers"))

    def __repr__(self) -> str:
        return f"ReferenceCase({self.case_id!r}, outputs={sorted(self.meta['outputs'])})"


