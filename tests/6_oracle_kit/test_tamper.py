"""No edit of a case directory turns wrong scores into a pass (issue 25).

`refsam check` grades against references it recomputes from the suite's recipe, takes the suite's case
ids from its own code, hashes the manifest, and binds every case's id, file, arrays and manifest entry to
the recipe. Each test below makes one of the edits a hostile tryout of 0.1.x used to get wrong scores
passed — done carefully, the way a deliberate edit would be: every sha256 recomputed, the manifest
resealed — and asserts the verdict is an error or a failure, never a pass. The last test draws random
combinations of such edits.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refsam.errors import InvalidInputError
from refsam.kit import CASE_SPECS, check_scores, export_cases, load_case
from refsam.kit.files import manifest_digest

FAILING = "logistic-sam-weight_decay-full"  # the case whose scores are wrong (0.1% off)
OTHER = "logistic-usam-weight_decay-full"  # a case of the same shapes, for swaps
SUBSET = "logistic-*-full"  # 6 cases: the directory of the property test


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The whole suite, its exact scores, and wrong scores: exact except one case, 0.1% off."""
    directory = tmp_path_factory.mktemp("tamper") / "suite"
    export_cases(directory)
    exact = {spec.case_id: load_case(directory, spec.case_id).reference("trajectory") for spec in CASE_SPECS}
    wrong = {**exact, FAILING: exact[FAILING] * 1.001}
    return directory, exact, wrong


def _copy(directory: Path, into: Path) -> Path:
    target = into / "copy"
    shutil.copytree(directory, target)
    return target


def _reseal(directory: Path, edit) -> None:
    """Apply ``edit`` to the manifest, then recompute every file's sha256 and the manifest's own."""
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    for entry in manifest["cases"]:
        file = directory / entry["file"]
        if file.exists():
            entry["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
    manifest["manifest_sha256"] = manifest_digest(manifest)
    path.write_text(json.dumps(manifest, indent=2))


def _rewrite_array(directory: Path, case_id: str, name: str, value) -> None:
    path = directory / f"{case_id}.npz"
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays[name] = value
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _verdict(directory, scores, **kwargs) -> str:
    """"pass", "fail" or "error" (refused with a one-line message)."""
    try:
        report = check_scores(directory, scores, **kwargs)
    except InvalidInputError as exc:
        assert "\n" not in str(exc).strip()
        return "error"
    return "pass" if report.passed else "fail"


def test_the_wrong_scores_fail_and_the_exact_ones_pass_on_the_intact_suite(suite):
    directory, exact, wrong = suite
    assert _verdict(directory, exact) == "pass"
    report = check_scores(directory, wrong)
    assert not report.passed and [r.case_id for r in report.results if not r.passed] == [FAILING]


def test_deleting_the_failing_case_from_the_manifest_fails(suite, tmp_path):
    directory, _, wrong = suite
    copy = _copy(directory, tmp_path)
    _reseal(copy, lambda m: m.update(cases=[c for c in m["cases"] if c["id"] != FAILING]))
    (copy / f"{FAILING}.npz").unlink()
    report = check_scores(copy, wrong)
    assert not report.passed and report.missing == (FAILING,)
    assert "83/84 cases passed" in report.table() and "1 missing from the case directory" in report.table()


def test_deleting_an_entry_without_resealing_is_refused(suite, tmp_path):
    directory, _, wrong = suite
    copy = _copy(directory, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["cases"] = [c for c in manifest["cases"] if c["id"] != FAILING]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInputError, match=r"does not match its own `manifest_sha256`"):
        check_scores(copy, wrong)


def test_keeping_one_of_84_cases_fails_unless_that_case_is_asked_for_by_name(suite, tmp_path):
    directory, exact, wrong = suite
    copy = _copy(directory, tmp_path)
    _reseal(copy, lambda m: m.update(cases=[c for c in m["cases"] if c["id"] == OTHER]))
    report = check_scores(copy, wrong)
    assert not report.passed and len(report.missing) == 83
    subset = check_scores(copy, wrong, cases=OTHER)  # asked for by name: a pass, and it says of what
    assert subset.passed and f"1 of 84 cases selected by {OTHER!r}" in subset.table()
    assert _verdict(copy, wrong, cases="logistic-*") == "fail"  # the failing case is selected and missing


@pytest.mark.parametrize("array", ["influence_closed_form", "X"])
def test_pointing_the_trajectory_output_at_another_array_is_refused(suite, tmp_path, array):
    directory, exact, wrong = suite
    copy = _copy(directory, tmp_path)

    def repoint(m):
        entry = next(c for c in m["cases"] if c["id"] == FAILING)
        entry["outputs"]["trajectory"]["array"] = array

    _reseal(copy, repoint)
    with np.load(copy / f"{FAILING}.npz") as f:
        pointed = f[array]
    assert pointed.shape == exact[FAILING].shape  # same shape: only the binding tells them apart
    forged = {**wrong, FAILING: pointed}
    with pytest.raises(InvalidInputError, match=rf"outputs\['trajectory'\]\.array is '{array}'"):
        check_scores(copy, forged)


def test_swapping_the_files_of_two_cases_is_refused(suite, tmp_path):
    directory, exact, _ = suite
    copy = _copy(directory, tmp_path)

    def swap(m):
        a = next(c for c in m["cases"] if c["id"] == FAILING)
        b = next(c for c in m["cases"] if c["id"] == OTHER)
        a["file"], b["file"] = b["file"], a["file"]
        a["sha256"], b["sha256"] = b["sha256"], a["sha256"]

    _reseal(copy, swap)
    forged = {**exact, FAILING: exact[OTHER], OTHER: exact[FAILING]}  # each case given the other's scores
    with pytest.raises(InvalidInputError, match=r"`file` must be 'logistic-sam-weight_decay-full.npz'"):
        check_scores(copy, forged)
    # the files renamed too, so that id and file name agree again: the arrays are still the other case's
    (copy / f"{FAILING}.npz").rename(copy / "tmp.npz")
    (copy / f"{OTHER}.npz").rename(copy / f"{FAILING}.npz")
    (copy / "tmp.npz").rename(copy / f"{OTHER}.npz")
    _reseal(copy, swap)  # swap back the names: each entry names its own id's file, which holds the other case
    with pytest.raises(InvalidInputError, match=r"is not what refsam computes for case"):
        check_scores(copy, forged)


def test_rewriting_a_reference_array_and_its_sha256_is_refused(suite, tmp_path):
    directory, _, wrong = suite
    copy = _copy(directory, tmp_path)
    _rewrite_array(copy, FAILING, "influence_trajectory", wrong[FAILING])  # the reference := the wrong scores
    _reseal(copy, lambda m: None)
    with pytest.raises(InvalidInputError, match=r"array 'influence_trajectory' is not what refsam computes"):
        check_scores(copy, wrong)


def test_editing_an_input_or_the_configuration_is_refused(suite, tmp_path):
    directory, _, wrong = suite
    copy = _copy(directory, tmp_path)
    with np.load(copy / f"{FAILING}.npz") as f:
        X = f["X"]
    _rewrite_array(copy, FAILING, "X", X + 1e-6)
    _reseal(copy, lambda m: None)
    with pytest.raises(InvalidInputError, match=r"array 'X' is not what refsam computes"):
        check_scores(copy, wrong)
    copy = _copy(directory, tmp_path / "b")
    _reseal(copy, lambda m: next(c for c in m["cases"] if c["id"] == FAILING).update(rho=0.2))
    with pytest.raises(InvalidInputError, match=r"manifest field `rho` is 0.2"):
        check_scores(copy, wrong)


# -- random edits ------------------------------------------------------------------------------------------
ARRAYS = ("influence_trajectory", "influence_trajectory_fd", "influence_closed_form", "X", "X_test", "thetas")
FIELDS = {"rho": 0.2, "steps": 19, "rule": "usam", "n_train": 11, "weight_decay": 0.0}


@st.composite
def directory_edits(draw):
    """A list of edits of a 6-case directory (ids from SUBSET), each a small tuple."""
    ids = sorted(c.case_id for c in CASE_SPECS if c.case_id.startswith("logistic-")
                 and c.case_id.endswith("-full"))
    kinds = st.sampled_from(["drop", "swap", "repoint", "rewrite", "field", "scale_reference"])
    edits = []
    for kind in draw(st.lists(kinds, min_size=1, max_size=3)):
        a, b = draw(st.sampled_from(ids)), draw(st.sampled_from(ids))
        edits.append((kind, a, b, draw(st.sampled_from(ARRAYS)), draw(st.sampled_from(sorted(FIELDS)))))
    return edits


def _apply(copy: Path, edit, exact) -> None:
    kind, a, b, array, field = edit
    manifest = json.loads((copy / "manifest.json").read_text())
    entries = {c["id"]: c for c in manifest["cases"]}
    if a not in entries:
        return
    if kind == "drop":
        manifest["cases"] = [c for c in manifest["cases"] if c["id"] != a]
    elif kind == "swap" and b in entries:
        entries[a]["file"], entries[b]["file"] = entries[b]["file"], entries[a]["file"]
    elif kind == "repoint":
        entries[a]["outputs"]["trajectory"]["array"] = array
    elif kind == "rewrite" and (copy / entries[a]["file"]).exists():
        _rewrite_array(copy, a, "influence_trajectory", exact[a] * 1.001)
    elif kind == "field":
        entries[a][field] = FIELDS[field]
    elif kind == "scale_reference" and (copy / entries[a]["file"]).exists():
        _rewrite_array(copy, a, array, np.asarray(exact[a]) * 0 + 1.0 if array == "X" else exact[a] * 1.001)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    _reseal(copy, lambda m: None)


@given(edits=directory_edits(), wrong_case=st.integers(0, 5), factor=st.sampled_from([1.001, -1.0, 0.0, 1e3]))
def test_no_random_edit_of_a_case_directory_passes_wrong_scores(suite, edits, wrong_case, factor):
    directory, exact, _ = suite
    ids = sorted(i for i in exact if i.startswith("logistic-") and i.endswith("-full"))
    wrong = {i: exact[i] for i in ids}
    wrong[ids[wrong_case]] = exact[ids[wrong_case]] * factor  # wrong scores for one case
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "copy"
        shutil.copytree(directory, copy)
        for edit in edits:
            _apply(copy, edit, exact)
        assert _verdict(copy, wrong, cases=SUBSET) != "pass", edits


def test_what_the_docs_say_no_case_can_tell_the_denominator_epsilon():
    """docs/validating.md's table: ignoring `norm_eps` moves no preset case's scores by as much as the
    check's tolerance (‖g_t‖ ≥ 0.1 throughout). When a case that can tell is added, this fails: update
    the table."""
    import refsam
    from refsam.kit.suite import make_run
    from refsam.tolerances import RTOL_CASE_EXACT, rel_err

    effects = []
    for spec in (s for s in CASE_SPECS if s.preset):
        problem, sam, run, X_test, y_test = make_run(spec)
        if spec.preset == "gnp":  # its code normalises with no epsilon at all
            assert sam.norm_eps == 0.0
            continue
        assert sam.norm_eps > 0
        without = refsam.SAM.from_config({**sam.config(), "norm_eps": 0.0})
        rerun = refsam.train(problem, without, run.optimizer(), batches=run.batches, theta0=run.theta0,
                             clip_grad_norm=run.clipping())
        effects.append(rel_err(refsam.trajectory_influence(problem, rerun, X_test, y_test),
                               refsam.trajectory_influence(problem, run, X_test, y_test)))
    # 9 SAM presets and 24 variant cases (27, less GNP's three); measured 1e-16 to 6e-12, and 1.7e-10 on
    # the MLP's GSAM minibatch case (its ‖g_t‖ is smallest): at least 500× below the tolerance
    assert len(effects) == 9 + 24 and max(effects) < 2e-3 * RTOL_CASE_EXACT
