"""The oracle kit's reference cases and checker (refsam.kit, ``refsam export-cases`` / ``refsam check``).

Claims, each a test below:
* the suite covers every value of every axis (model × rule × penalty × batching), one case each;
* a case directory is readable with plain numpy + json, and every sha256 in the manifest is right;
* every recorded run replays bit for bit from the stored θ_0, batches and learning rates;
* the stored exact outputs agree with their ground truths (adjoint vs replay finite differences ≤ 1e-5;
  closed form at a verified root vs re-solved finite differences ≤ 1e-6), and are not trivial;
* refsam's own scores by other methods (forward recursion; autodiff through training; the closed form
  recomputed) check green; perturbed, sign-flipped or ablated scores check red;
* export is deterministic (same bytes, same sha256);
* corrupt, truncated, tampered or malformed case and scores files raise one-line errors naming the file
  (exit status 2 from the CLI), and failing cases give exit status 1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile

import numpy as np
import pytest

from refsam import InvalidInputError, replay
from refsam.cli import main
from refsam.influence import residual_map
from refsam.influence.trajectory import trajectory_influence
from refsam.kit import (
    BATCHINGS,
    CASE_SPECS,
    MODELS,
    PENALTIES,
    RULES,
    CaseFileError,
    check_scores,
    export_cases,
    load_case,
    load_cases,
    read_manifest,
)
from refsam.kit.files import manifest_digest
from refsam.sam import BASE_RULES
from refsam.tolerances import ROOT_TOL, RTOL_CHAIN_RULE, RTOL_CLOSED_FORM_FD, RTOL_TRAJECTORY_FD

MIN_ABLATION_GAP = 1e-3  # frozen/erm must differ from full by far more than any tolerance (1e-7)
MIN_SCALE = 1e-3  # a guard against trivially small (or zero) reference influences
PROBE = "logistic-sam-weight_decay-full"  # the case the corruption tests tamper with


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    """The whole suite, exported once per module (a few seconds)."""
    directory = tmp_path_factory.mktemp("cases") / "suite"
    export_cases(directory)
    return directory


@pytest.fixture(scope="module")
def cases(case_dir):
    return load_cases(case_dir)


@pytest.fixture(scope="module")
def exact_scores(cases):
    """refsam's scores by the forward (tangent) recursion: another algorithm than the stored adjoint.
    (Autodiff through training, fully independent of both, is checked on a subset below: it is 10×
    slower; the stored outputs are also checked against replay finite differences.)"""
    return {c.case_id: trajectory_influence(c.problem(), c.trajectory(), c.arrays["X_test"],
                                            c.arrays["y_test"], method="forward") for c in cases}


@pytest.fixture
def scores_path(tmp_path, exact_scores):
    path = tmp_path / "scores.npz"
    np.savez(path, **exact_scores)
    return path


@pytest.fixture
def copy_dir(case_dir, tmp_path):
    """A private copy of the suite to corrupt."""
    target = tmp_path / "copy"
    shutil.copytree(case_dir, target)
    return target


def _rewrite_case(directory, case_id, mutate):
    """Apply ``mutate`` to a case's arrays, re-save it and fix its sha256, so only the content is wrong."""
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    entry = next(c for c in manifest["cases"] if c["id"] == case_id)
    path = directory / entry["file"]
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    mutate(arrays)
    np.savez(path, **arrays)
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest["manifest_sha256"] = manifest_digest(manifest)  # resealed: only the content is wrong
    manifest_path.write_text(json.dumps(manifest))


def _edit_manifest(directory, edit):
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    manifest["manifest_sha256"] = manifest_digest(manifest)  # resealed, as a deliberate edit would be
    path.write_text(json.dumps(manifest))


# -- the suite ----------------------------------------------------------------------------------------
def test_suite_covers_every_value_of_every_axis(case_dir):
    manifest = read_manifest(case_dir)
    ids = [c["id"] for c in manifest["cases"]]
    grid = len(MODELS) * len(BASE_RULES) * len(PENALTIES) * len(BATCHINGS)
    # the grid, momentum (2), the SAM presets (3), Adam and AdamW (2), the SAM variants' presets (6
    # minibatch runs, and 3 full-batch runs of the variants with a fixed point), per model
    variants = len(MODELS) * (6 + 3)
    assert len(ids) == len(set(ids)) == 84
    assert len(ids) == grid + len(MODELS) * 2 + len(MODELS) * 3 + len(MODELS) * 2 + variants
    variant_cases = [c for c in manifest["cases"] if c["preset"] in ("gsam", "gnp", "friendly-sam", "sam-on",
                                                                       "fisher-sam", "composer-sam")]
    assert {c["rule"] for c in variant_cases} == {"sam", "asam", "fisher", "friendly"}
    assert {c.get("direction") for c in variant_cases} == {None, "gsam", "gnp"}
    assert any(isinstance(c["rho"], list) for c in variant_cases)  # GSAM's ρ schedule
    assert any("perturb_mask" in c for c in variant_cases) and any(c.get("every") == 2 for c in variant_cases)
    momentum = [c for c in manifest["cases"] if c["optimizer"].get("momentum")]
    assert len(momentum) == 15 + 27 and {c["optimizer"]["nesterov"] for c in momentum} == {True, False}
    assert {c["preset"] for c in momentum} == {None, "pytorch-sam", "pytorch-sam-adaptive", "asam-official",
                                               "gsam", "gnp", "friendly-sam", "sam-on", "fisher-sam",
                                               "composer-sam"}
    for entry in manifest["cases"]:
        assert entry["model"]["name"] in MODELS and entry["rule"] in RULES
        assert entry["penalty"] in PENALTIES and entry["batching"] in BATCHINGS
        adam = {"adam": "Adam", "adamw": "AdamW"}.get(entry["id"].rsplit("-", 1)[-1])
        assert entry["optimizer"]["name"] == (adam or "SGD"), entry["id"]  # the id names the optimizer
        assert (entry["clip_grad_norm"] is not None) == (adam is not None or entry["preset"] == "gnp")
        if entry["preset"] is None:  # λ sits where the penalty says, and only there
            in_loss = entry["penalty"] == "l2"
            assert (entry["l2"] > 0) == in_loss and (entry["optimizer"]["weight_decay"] > 0) != in_loss
        assert entry["n_train"] <= 20 and entry["n_params"] <= 20 and entry["steps"] <= 30
        assert {"trajectory", "trajectory_fd", "trajectory_parameters"} <= set(entry["outputs"])
        has_closed_form = "closed_form" in entry["outputs"]
        assert has_closed_form == (entry["penalty"] == "weight_decay" and entry["batching"] == "full"), \
            entry["closed_form_status"]
        for output in entry["outputs"].values():
            assert output["rtol"] > 0 and output["atol"] >= 0


def test_case_directory_reads_with_plain_numpy_json_and_hashlib(case_dir):
    with open(case_dir / "manifest.json", encoding="utf-8") as f:
        manifest = json.load(f)
    assert manifest["schema_version"] == 3
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}  # the manifest's own sha256
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert hashlib.sha256(canonical.encode("utf-8")).hexdigest() == manifest["manifest_sha256"]
    for entry in manifest["cases"]:
        path = case_dir / entry["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        assert all(a.dtype != object for a in arrays.values())
        n, m, d = entry["n_train"], entry["n_test"], entry["n_params"]
        for name, output in entry["outputs"].items():
            assert arrays[output["array"]].shape == tuple(output["shape"])
            expected = {"trajectory_parameters": (n, d), "jacobian_products": (d, 2),
                        "jacobian_T_products": (d, 2)}.get(name, (n, m))
            assert tuple(output["shape"]) == expected
        offsets = arrays["batch_offsets"]
        assert offsets[0] == 0 and offsets[-1] == len(arrays["batch_indices"])
        assert len(offsets) == entry["steps"] + 1
        assert arrays["batch_indices"].min() >= 0 and arrays["batch_indices"].max() < n


def test_recorded_runs_replay_bit_for_bit(cases):
    for case in cases:
        problem, trajectory = case.problem(), case.trajectory()
        rerun = replay(problem, trajectory)
        np.testing.assert_array_equal(rerun.thetas, case.arrays["thetas"], err_msg=case.case_id)
        np.testing.assert_array_equal(rerun.epsilons, case.arrays["epsilons"], err_msg=case.case_id)
        losses = problem.model.losses(rerun.theta_final, case.arrays["X_test"], case.arrays["y_test"])
        np.testing.assert_array_equal(losses, case.arrays["test_losses"], err_msg=case.case_id)
        sizes = {len(b) for b in case.batches}
        assert sizes == ({case.meta["n_train"]} if case.meta["batching"] == "full" else {4})


def _rel_err(a, b):
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


def test_stored_trajectory_influence_matches_replay_finite_differences(cases):
    for case in cases:
        exact, fd = case.reference("trajectory"), case.reference("trajectory_fd")
        assert np.max(np.abs(exact)) > MIN_SCALE and np.ptp(exact) > MIN_SCALE, case.case_id
        err = _rel_err(exact, fd)
        assert err <= RTOL_TRAJECTORY_FD, (case.case_id, err)
        recorded = case.meta["outputs"]["trajectory"]["verified_against"]["rel_err"]
        assert recorded == pytest.approx(err, rel=1e-3)


def test_stored_parameter_influence_gives_the_scores_by_the_chain_rule(cases):
    for case in cases:
        problem, theta_T = case.problem(), case.arrays["thetas"][-1]
        test_grads = problem.model.per_sample_grads(theta_T, case.arrays["X_test"], case.arrays["y_test"])
        parameters = case.reference("trajectory_parameters")  # (n, d): row j = dθ_T/dw_j
        assert _rel_err(parameters @ test_grads.T, case.reference("trajectory")) <= RTOL_CHAIN_RULE


def test_stored_closed_form_is_exact_at_a_verified_root(cases):
    with_closed_form = [c for c in cases if "closed_form" in c.meta["outputs"]]
    assert {c.meta["model"]["name"] for c in with_closed_form} == set(MODELS)
    assert {c.meta["rule"] for c in with_closed_form} >= set(BASE_RULES)
    for case in with_closed_form:
        G = residual_map(case.problem(), case.sam(), case.arrays["theta_hat"], optimizer=case.optimizer())
        assert np.linalg.norm(G) <= ROOT_TOL, case.case_id
        full = case.reference("closed_form")
        assert np.max(np.abs(full)) > MIN_SCALE
        assert _rel_err(full, case.reference("closed_form_fd")) <= RTOL_CLOSED_FORM_FD, case.case_id
        for ablation in ("closed_form_frozen", "closed_form_erm"):
            assert _rel_err(case.reference(ablation), full) > MIN_ABLATION_GAP, (case.case_id, ablation)


def test_stored_jacobian_products_equal_an_autograd_jacobian_of_the_residual(cases):
    """J v and Jᵀ v for the stored probes vs autograd's Jacobian of G written with Problem.objective and
    the rule's value functions SAM.perturbation and SAM.descent only (none of refsam's derivative code)."""
    import autograd

    with_closed_form = [c for c in cases if "closed_form" in c.meta["outputs"]]
    assert len(with_closed_form) == 9 + 9  # the grid's full-batch weight-decay runs, and the variants'
    # with a fixed point (Fisher SAM, GSAM at a constant ρ, SAM-ON), for every model
    for case in with_closed_form:
        problem, sam, theta = case.problem(), case.sam(), case.arrays["theta_hat"]
        lam = case.optimizer().weight_decay  # the optimizer's weight decay (scalar in the suite)
        assert isinstance(lam, float) and lam > 0 and problem.l2 == 0.0

        def G(t, problem=problem, sam=sam, lam=lam):  # λ in the optimizer: φ(g, ∇F(θ + ε(θ; g))) + λθ
            grad_F = autograd.grad(problem.objective)
            g = grad_F(t)
            return sam.descent(g, grad_F(t + sam.perturbation(t, g))) + lam * t

        J = autograd.jacobian(G)(theta)
        v = case.probe_vectors()
        assert _rel_err(case.reference("jacobian_products"), J @ v) <= 1e-9, case.case_id
        assert _rel_err(case.reference("jacobian_T_products"), J.T @ v) <= 1e-9, case.case_id
        assert _rel_err(J, J.T) > 1e-6  # not symmetric: a port that confuses J v with Jᵀ v fails


def test_products_target_checks_a_matrix_free_port_and_catches_the_transpose(case_dir, cases):
    from refsam.influence import system_operators

    with_cf = [c for c in cases if "closed_form" in c.meta["outputs"]]
    JTv = {c.case_id: system_operators(c.problem(), c.sam(), c.arrays["theta_hat"],
                                       optimizer=c.optimizer()).jacobian_T.matmat(c.probe_vectors())
           for c in with_cf}
    report = check_scores(case_dir, JTv, target="jacobian_T_products")
    assert report.passed and len(report.results) == 18, report.table()
    Jv = {c.case_id: c.reference("jacobian_products") for c in with_cf}
    assert check_scores(case_dir, Jv, target="jacobian_T_products").n_failed == 18


def test_grading_an_approximation_with_a_user_tolerance_and_ranks(case_dir, cases):
    with_cf = [c for c in cases if "closed_form" in c.meta["outputs"]]
    frozen = {c.case_id: c.reference("closed_form_frozen") for c in with_cf}  # an approximation
    strict = check_scores(case_dir, frozen, target="closed_form")
    assert strict.n_failed == 18
    loose = check_scores(case_dir, frozen, target="closed_form", rtol=0.5)
    assert loose.passed and "graded at the user's rtol=0.5" in loose.table(), loose.table()
    assert all(r.rtol == 0.5 and r.atol == 0.0 for r in loose.results)
    errors = sorted(r.rel_err for r in loose.results)
    between = 0.5 * (errors[3] + errors[4])  # a tolerance that splits the cases: the verdict follows it
    assert check_scores(case_dir, frozen, target="closed_form", rtol=between).n_failed == len(errors) - 4
    assert "Spearman: median" in loose.table() and "top-3 overlap" in loose.table()
    for r in loose.results:
        assert 0.0 <= r.top_k_overlap <= 1.0 and r.spearman > 0.9
    ranked = check_scores(case_dir, frozen, target="closed_form", rtol=0.5, min_spearman=1.0)
    assert ranked.n_failed >= 1 and any("Spearman" in r.note for r in ranked.results)
    shuffled = {k: v[::-1] for k, v in frozen.items()}  # right values, wrong points
    worse = check_scores(case_dir, shuffled, target="closed_form", rtol=10.0, top_k=2)
    assert np.mean([r.top_k_overlap for r in worse.results]) < np.mean([r.top_k_overlap for r in
                                                                         loose.results])
    for bad, match in [({"rtol": -1.0}, "rtol"), ({"top_k": 0}, "top_k"), ({"min_spearman": 2.0},
                                                                               "min_spearman")]:
        with pytest.raises(InvalidInputError, match=match):
            check_scores(case_dir, frozen, target="closed_form", **bad)


def test_top_k_overlap():
    from refsam.kit.check import top_k_overlap

    R = np.array([[5.0, 0.1], [4.0, 0.2], [0.1, 3.0], [0.2, -9.0]])
    assert top_k_overlap(R, R, 2) == 1.0
    S = np.array([[5.0, 9.0], [0.0, 8.0], [4.0, 0.0], [0.2, 0.0]])  # column 0: {0, 2} vs {0, 1}
    assert top_k_overlap(S, R, 2) == pytest.approx((0.5 + 0.0) / 2)


# -- the checker: green and red ------------------------------------------------------------------------
def test_refsam_scores_check_green(case_dir, scores_path):
    report = check_scores(case_dir, scores_path)
    assert report.passed, report.table()
    assert len(report.results) == 84 and not report.skipped
    for r in report.results:
        assert r.rel_err < 1e-9 and r.spearman > 0.999, r


def test_refsam_autodiff_scores_check_green_on_one_case_per_model(case_dir, cases):
    subset = [c for c in cases if c.case_id.endswith("-asam-l2-minibatch")]
    scores = {c.case_id: trajectory_influence(c.problem(), c.trajectory(), c.arrays["X_test"],
                                              c.arrays["y_test"], method="autodiff") for c in subset}
    report = check_scores(case_dir, scores, cases="*-asam-l2-minibatch")
    assert report.passed and len(report.results) == 3, report.table()


def test_parameter_influence_target_checks_green_and_rejects_a_transposed_array(case_dir, cases):
    from refsam.influence.trajectory import trajectory_parameter_influence

    forward = {c.case_id: trajectory_parameter_influence(c.problem(), c.trajectory(), method="forward")
               for c in cases if c.case_id.startswith("mlp-")}
    report = check_scores(case_dir, forward, target="trajectory_parameters", cases="mlp-*")
    assert report.passed and len(report.results) == 28, report.table()  # 12 SGD + 2 momentum + 3 presets
    # + Adam and AdamW + 9 of the variants
    with pytest.raises(CaseFileError, match=r"expected \(n_train, n_params\) = \(12, 20\); transpose it"):
        check_scores(case_dir, {k: v.T for k, v in forward.items()}, target="trajectory_parameters",
                     cases="mlp-*")


def test_perturbed_scores_check_red(case_dir, exact_scores):
    scaled = {k: v * (1 + 1e-5) for k, v in exact_scores.items()}
    report = check_scores(case_dir, scaled)
    assert report.n_failed == 84 and not report.passed
    assert "0/84 cases passed" in report.table()
    one_entry = dict(exact_scores)
    bad = one_entry["mlp-asam-l2-minibatch"].copy()
    bad[3, 1] += 1e-6 * np.max(np.abs(bad))  # a single entry, 10× the tolerance
    one_entry["mlp-asam-l2-minibatch"] = bad
    report = check_scores(case_dir, one_entry)
    assert [r.case_id for r in report.results if not r.passed] == ["mlp-asam-l2-minibatch"]
    report = check_scores(case_dir, {k: -v for k, v in exact_scores.items()}, cases="softmax-*")
    assert len(report.results) == 28 and report.n_failed == 28
    assert all("sign convention" in r.note for r in report.results)


def test_nonfinite_scores_fail_the_case(case_dir, exact_scores):
    scores = dict(exact_scores)
    scores[PROBE] = np.full_like(scores[PROBE], np.nan)
    report = check_scores(case_dir, scores, cases="logistic-sam-*")
    failed = [r for r in report.results if not r.passed]
    assert [r.case_id for r in failed] == [PROBE] and "non-finite" in failed[0].note


def test_closed_form_target_accepts_the_closed_form_and_rejects_its_ablations(case_dir, cases):
    from refsam.influence.closed_form import hessian_influence

    with_cf = [c for c in cases if "closed_form" in c.meta["outputs"]]
    full = {c.case_id: hessian_influence(c.problem(), c.sam(), c.arrays["theta_hat"], c.arrays["X_test"],
                                         c.arrays["y_test"], variant="full", optimizer=c.optimizer())
            for c in with_cf}
    report = check_scores(case_dir, full, target="closed_form")
    assert report.passed and len(report.results) == 18 and len(report.skipped) == 66, report.table()
    frozen = {c.case_id: c.reference("closed_form_frozen") for c in with_cf}
    report = check_scores(case_dir, frozen, target="closed_form")
    assert report.n_failed == 18
    assert check_scores(case_dir, frozen, target="closed_form_frozen").passed


def test_extra_score_keys_are_ignored_and_reported(case_dir, exact_scores):
    scores = {**exact_scores, "not-a-case": np.zeros((2, 2))}
    report = check_scores(case_dir, scores)
    assert report.passed and report.ignored_keys == ("not-a-case",)
    assert "ignored 1 score keys" in report.table()


# -- determinism -------------------------------------------------------------------------------------------
def test_export_is_deterministic(case_dir, tmp_path):
    first = export_cases(tmp_path / "a", cases="softmax-asam-*")
    second = export_cases(tmp_path / "b", cases="softmax-asam-*")
    assert first == second
    suite = {c["id"]: c["sha256"] for c in read_manifest(case_dir)["cases"]}
    for entry in first["cases"]:
        assert (tmp_path / "a" / entry["file"]).read_bytes() == (tmp_path / "b" / entry["file"]).read_bytes()
        with zipfile.ZipFile(tmp_path / "a" / entry["file"]) as archive:  # no clock in the bytes
            assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert entry["sha256"] == suite[entry["id"]]


def test_a_parallel_export_writes_the_same_bytes(case_dir, tmp_path):
    """n_jobs=2 runs the self-checks' finite differences on a process pool: the same files."""
    manifest = export_cases(tmp_path / "p", cases="logistic-*-full", n_jobs=2)
    suite = {c["id"]: c["sha256"] for c in read_manifest(case_dir)["cases"]}
    assert len(manifest["cases"]) >= 3
    assert all(entry["sha256"] == suite[entry["id"]] for entry in manifest["cases"])


# -- corrupt, truncated, tampered and malformed files ------------------------------------------------------
def test_tampered_case_file_is_rejected_naming_the_file(copy_dir, scores_path):
    path = copy_dir / f"{PROBE}.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CaseFileError, match=rf"{PROBE}\.npz: sha256 mismatch .*modified or corrupted"):
        check_scores(copy_dir, scores_path)


def test_truncated_case_file_is_rejected(copy_dir, scores_path):
    path = copy_dir / f"{PROBE}.npz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CaseFileError, match="sha256 mismatch"):
        check_scores(copy_dir, scores_path)
    _edit_manifest(copy_dir, lambda m: m["cases"][0].update(
        sha256=hashlib.sha256(path.read_bytes()).hexdigest()))  # hash updated: content still unreadable
    with pytest.raises(CaseFileError, match=rf"{PROBE}\.npz: unreadable \.npz"):
        check_scores(copy_dir, scores_path)


def test_missing_case_file_and_manifest_are_rejected(copy_dir, scores_path, tmp_path):
    os.remove(copy_dir / f"{PROBE}.npz")
    with pytest.raises(CaseFileError, match=rf"{PROBE}\.npz listed in the manifest is missing"):
        check_scores(copy_dir, scores_path)
    os.remove(copy_dir / "manifest.json")
    with pytest.raises(CaseFileError, match="manifest.json is missing.*refsam export-cases"):
        check_scores(copy_dir, scores_path)
    with pytest.raises(CaseFileError, match="does not exist"):
        check_scores(tmp_path / "nowhere", scores_path)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.update(schema_version=99), r"`schema_version` 99 is not supported"),
    (lambda m: m.update(schema_version=1), r"`schema_version` 1 is refsam 0\.1's.*re-export the cases"),
    (lambda m: m.update(format="other"), r"`format` must be 'refsam-reference-cases'"),
    (lambda m: m.update(cases=[]), r"`cases` must be a non-empty list"),
    (lambda m: m["cases"][0].pop("n_test"),
     r"cases\[0\] \(logistic-sam-weight_decay-full\): missing field `n_test`"),
    (lambda m: m["cases"][0]["outputs"]["trajectory"].pop("rtol"),
     r"outputs\['trajectory'\]: missing field `rtol`"),
    (lambda m: m["cases"][1].update(id=PROBE), r"duplicate case id"),
    (lambda m: m["cases"][0].update(file="../x.npz"), r"`file` must be 'logistic-sam-weight_decay-full.npz'"),
])
def test_malformed_manifest_is_rejected(copy_dir, scores_path, edit, message):
    _edit_manifest(copy_dir, edit)
    with pytest.raises(CaseFileError, match=message):
        check_scores(copy_dir, scores_path)


def test_manifest_that_is_not_json_is_rejected(copy_dir, scores_path):
    (copy_dir / "manifest.json").write_text('{"format": "refsam-reference-cases", ')
    with pytest.raises(CaseFileError, match="manifest.json: not valid JSON"):
        check_scores(copy_dir, scores_path)


def test_case_file_with_missing_or_misshapen_arrays_is_rejected(copy_dir, scores_path):
    _rewrite_case(copy_dir, PROBE, lambda a: a.pop("influence_trajectory"))
    with pytest.raises(CaseFileError, match=r"missing arrays \['influence_trajectory'\]"):
        check_scores(copy_dir, scores_path)
    _rewrite_case(copy_dir, PROBE, lambda a: a.update(influence_trajectory=np.zeros((3, 12))))
    with pytest.raises(CaseFileError, match=r"array 'influence_trajectory' has shape \(3, 12\), the manifest "
                                            r"implies \(12, 3\)"):
        check_scores(copy_dir, scores_path)


def test_bad_scores_files_are_rejected(case_dir, tmp_path, exact_scores):
    with pytest.raises(CaseFileError, match="scores file .* does not exist"):
        check_scores(case_dir, tmp_path / "absent.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip file at all")
    with pytest.raises(CaseFileError, match="not a readable .npz without pickle"):
        check_scores(case_dir, garbage)
    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, **exact_scores)
    truncated.write_bytes(truncated.read_bytes()[:-200])
    with pytest.raises(CaseFileError, match=r"truncated.npz' is not a readable .npz without pickle"):
        check_scores(case_dir, truncated)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{k: np.array(list(v), dtype=object) for k, v in exact_scores.items()})
    with pytest.raises(CaseFileError, match="not a readable .npz without pickle"):
        check_scores(case_dir, pickled)
    single = tmp_path / "single.npy"
    np.save(single, exact_scores[PROBE])
    with pytest.raises(CaseFileError, match="holds a single array"):
        check_scores(case_dir, single)


def test_scores_with_missing_keys_or_wrong_shapes_are_rejected(case_dir, exact_scores):
    partial = {k: v for k, v in exact_scores.items() if not k.startswith("mlp")}
    with pytest.raises(CaseFileError, match=r"scores lacks 28 case ids: 'mlp-sam-weight_decay-full'"):
        check_scores(case_dir, partial)
    assert check_scores(case_dir, partial, cases="softmax-*").passed  # a subset can be checked alone
    transposed = {**exact_scores, PROBE: exact_scores[PROBE].T}
    with pytest.raises(CaseFileError, match=rf"scores for '{PROBE}' have shape \(3, 12\), expected "
                                            r"\(n_train, n_test\) = \(12, 3\); transpose it"):
        check_scores(case_dir, transposed)
    text = {**exact_scores, PROBE: np.full((12, 3), "x")}
    with pytest.raises(CaseFileError, match="have dtype <U1, expected float64"):
        check_scores(case_dir, text)
    with pytest.raises(ValueError, match="`target` must be one of"):
        check_scores(case_dir, exact_scores, target="tracin")
    with pytest.raises(ValueError, match="matches none of the 84 cases"):
        check_scores(case_dir, exact_scores, cases="resnet-*")


def test_load_case_rebuilds_the_run_and_names_unknown_cases(case_dir):
    case = load_case(case_dir, "mlp-usam-l2-minibatch")
    assert case.meta["penalty"] == "l2" and case.sam().rule == "usam"
    assert case.problem().l2 == case.meta["l2"] > 0 and case.optimizer().weight_decay == 0.0
    assert case.trajectory().steps == case.meta["steps"] == len(case.batches)
    with pytest.raises(ValueError, match="has no output 'closed_form'"):
        case.reference("closed_form")
    with pytest.raises(CaseFileError, match="no case 'mlp-x'"):
        load_case(case_dir, "mlp-x")


def test_case_specs_match_the_exported_ids(case_dir):
    assert [s.case_id for s in CASE_SPECS] == [c["id"] for c in read_manifest(case_dir)["cases"]]


# -- the command line -------------------------------------------------------------------------------------
def test_cli_check_green_red_and_corrupt(case_dir, scores_path, exact_scores, copy_dir, tmp_path, capsys):
    assert main(["check", str(case_dir), "--scores", str(scores_path)]) == 0
    out = capsys.readouterr().out
    assert "84/84 cases passed" in out and "max abs err" in out and "spearman" in out
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, **{**exact_scores, PROBE: exact_scores[PROBE] * 1.001})
    assert main(["check", str(case_dir), "--scores", str(wrong)]) == 1
    out = capsys.readouterr().out
    assert "83/84 cases passed" in out and f"{PROBE}" in out and "FAIL" in out
    (copy_dir / f"{PROBE}.npz").write_bytes(b"tampered")
    assert main(["check", str(copy_dir), "--scores", str(scores_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("refsam check: error:") and "sha256 mismatch" in err and "\n" not in err
    assert main(["check", str(case_dir), "--scores", str(tmp_path / "absent.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_export_cases_refuses_a_file_as_directory(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["export-cases", str(tmp_path / "file"), "--cases", "logistic-sam-*-full"]) == 2
    assert "cannot create the case directory" in capsys.readouterr().err
    with pytest.raises(CaseFileError, match="is not a directory"):
        read_manifest(tmp_path / "file")


def test_cli_export_cases_writes_a_subset(tmp_path, capsys):
    assert main(["export-cases", str(tmp_path / "out"), "--cases", "logistic-usam-*-full"]) == 0
    assert "wrote 2 cases (1 with closed-form outputs)" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "out")) == ["logistic-usam-l2-full.npz",
                                                    "logistic-usam-weight_decay-full.npz", "manifest.json"]
    assert main(["export-cases", str(tmp_path / "none"), "--cases", "nothing*"]) == 2
    assert "matches no case" in capsys.readouterr().err
