"""The oracle kit never passes a wrong answer because of an edited manifest, and never overwrites a
suite or a file it did not write: the manifest's tolerances are validated against the suite's, subset
exports do not shrink a suite silently, and a foreign manifest.json is left alone unless forced."""

import json
import subprocess
import sys

import numpy as np
import pytest

from refsam.kit import CaseFileError, check_scores, export_cases
from refsam.kit.files import manifest_digest

PATTERN = "logistic-*-full"  # 6 cases: enough to exercise every output, quick to export


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cases")
    manifest = export_cases(directory, cases=PATTERN)
    zeros = {c["id"]: np.zeros(c["outputs"]["trajectory"]["shape"]) for c in manifest["cases"]}
    return directory, manifest, zeros


def _edited(tmp_path, suite, edit):
    directory, manifest, _ = suite
    for case in manifest["cases"]:  # copy the case files, then write an edited manifest beside them
        (tmp_path / case["file"]).write_bytes((directory / case["file"]).read_bytes())
    edited = json.loads(json.dumps(manifest))
    edit(edited)
    edited["manifest_sha256"] = manifest_digest(edited)  # resealed: what a deliberate edit would do
    (tmp_path / "manifest.json").write_text(json.dumps(edited))
    return tmp_path


def test_all_zero_scores_fail_against_the_intact_manifest(suite):
    directory, _, zeros = suite
    report = check_scores(directory, zeros, cases=PATTERN)
    assert not report.passed and report.n_failed == 6


@pytest.mark.parametrize(("field", "value", "message"), [
    ("rtol", 1e7, r"`rtol` must lie in \[0, 1e-07\]"),  # the one-bit edit 1e-07 -> 1e+07
    ("rtol", float("nan"), r"`rtol` must lie in"),
    ("rtol", -1e-7, r"`rtol` must lie in"),
    ("atol", 8.0, r"`atol` must be 0"),  # the one-bit edit 0.0 -> 8.0
    ("atol", float("inf"), r"`atol` must be 0"),
])
def test_a_loosened_tolerance_in_the_manifest_is_rejected_not_passed(tmp_path, suite, field, value, message):
    _, _, zeros = suite

    def loosen(m):
        m["cases"][0]["outputs"]["trajectory"][field] = value

    with pytest.raises(CaseFileError, match=message):
        check_scores(_edited(tmp_path, suite, loosen), zeros, cases=PATTERN)


def test_an_unknown_output_in_the_manifest_is_rejected(tmp_path, suite):
    def rename(m):
        m["cases"][0]["outputs"]["trajectory_loose"] = m["cases"][0]["outputs"]["trajectory_fd"]

    with pytest.raises(CaseFileError, match=r"unknown output 'trajectory_loose'"):
        check_scores(_edited(tmp_path, suite, rename), suite[2], cases=PATTERN)


def test_a_subset_export_does_not_shrink_an_existing_suite_silently(tmp_path):
    export_cases(tmp_path, cases=PATTERN)
    with pytest.raises(CaseFileError, match=r"lists 5 cases this export would drop"):
        export_cases(tmp_path, cases="logistic-sam-weight_decay-full")
    assert len(json.loads((tmp_path / "manifest.json").read_text())["cases"]) == 6  # untouched
    export_cases(tmp_path, cases=PATTERN)  # the same suite again: fine
    assert len(export_cases(tmp_path, cases="logistic-sam-weight_decay-full", force=True)["cases"]) == 1


def test_a_foreign_manifest_is_not_overwritten_unless_forced(tmp_path):
    (tmp_path / "manifest.json").write_text('{"my": "own file"}')
    command = [sys.executable, "-m", "refsam.cli", "export-cases", str(tmp_path), "--cases",
               "logistic-sam-weight_decay-full"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "was not written by refsam" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"my": "own file"}
    forced = subprocess.run(command + ["--force"], capture_output=True, text=True, timeout=120)
    assert forced.returncode == 0 and "wrote 1 cases" in forced.stdout
