"""Issue 25's findings that end in correct behaviour rather than an error (the errors are rows of
tests/7_cli_docs/test_bad_input_matrix.py): runs that own their arrays and prove themselves, files
written whole and never over what refsam did not write, one export per directory, capped worker counts,
a dataset's own flipped mask, progress on long loops, docs without control characters."""

from __future__ import annotations

import json
import os
import re
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import refsam
from refsam.apps.demo import prepare_data
from refsam.cli import main
from refsam.ground_truth import parallel
from refsam.kit import CaseFileError, export_cases
from refsam.kit.files import LOCK_NAME
from refsam.training.trajectory import TRAJECTORY_FORMAT_VERSION

ROOT = Path(__file__).resolve().parents[2]
X, Y, _ = refsam.make_gaussian_classification(n=20, n_features=3, seed=0)
P = refsam.Problem(refsam.LogisticRegression(), X, Y)
S = refsam.SAM(0.05)


def _run(steps=10, **kwargs):
    optimizer = refsam.SGD(kwargs.pop("lr", 0.5), weight_decay=0.05)
    return refsam.train(P, S, optimizer, steps, seed=0, **kwargs)


# -- runs own their arrays and prove themselves --------------------------------------------------------------
def test_a_recorded_run_owns_its_arrays():
    lr = np.full(10, 0.5)
    run = _run(lr=lr)
    lr[:] = 5.0  # the caller edits its schedule afterwards
    assert np.all(run.lrs == 0.5)
    thetas, epsilons, weights = run.thetas.copy(), run.epsilons.copy(), run.weights.copy()
    config = json.loads(json.dumps(run.config))
    copy = refsam.Trajectory(thetas, epsilons, run.batches, run.lrs, weights, config,
                             grad_norms=run.grad_norms)
    thetas[-1] += 1.0
    epsilons[0] += 1.0
    weights[0] = 0.0
    config["rho"] = 9.0
    assert np.array_equal(copy.thetas, run.thetas) and np.array_equal(copy.epsilons, run.epsilons)
    assert copy.weights[0] == 1.0 and copy.config["rho"] == run.config["rho"]
    influence = refsam.trajectory_influence(P, copy, X[:2], Y[:2])
    np.testing.assert_array_equal(influence, refsam.trajectory_influence(P, run, X[:2], Y[:2]))


def test_verify_reports_the_largest_step_residual_and_the_influence_functions_refuse_an_edited_run():
    run = _run()
    check = run.verify(P)
    assert check.ok and check.max_residual == 0.0 and "bit for bit" in str(check)
    for t, edit in ((10, "thetas"), (4, "epsilons")):
        edited = refsam.Trajectory(run.thetas, run.epsilons, run.batches, run.lrs, run.weights, run.config)
        getattr(edited, edit)[t - (edit == "thetas") if edit == "epsilons" else t, 1] += 1e-4
        check = edited.verify(P)
        assert not check.ok and check.max_residual > 1e-6 and check.array == edit, check
        with pytest.raises(refsam.UnverifiedRunError, match="pass verify=False"):
            refsam.trajectory_influence(P, edited, X[:2], Y[:2])
        wrong = refsam.trajectory_influence(P, edited, X[:2], Y[:2], verify=False)  # the override
        assert wrong.shape == (20, 2)


def test_a_run_is_verified_again_after_an_in_place_edit():
    run = _run()
    assert run.verify(P).ok
    run.thetas[5, 0] += 1e-3  # the remembered verdict belongs to the old content
    assert not run.verify(P).ok
    with pytest.raises(refsam.UnverifiedRunError):
        refsam.trajectory_parameter_influence(P, run)


def test_a_saved_run_carries_its_digest_and_data_and_verifies_on_its_own(tmp_path):
    run = _run()
    path = tmp_path / "run.npz"
    run.save(path, problem=P)
    loaded = refsam.Trajectory.load(path)
    assert loaded.digest() == run.digest() and loaded.verify().ok
    with np.load(path) as f:
        assert int(f["format_version"]) == TRAJECTORY_FORMAT_VERSION == 4
        assert str(f["content_sha256"]) == run.digest()
    assert main(["verify", str(path)]) == 0


def test_files_of_earlier_formats_still_load(tmp_path):
    run = _run()
    path = tmp_path / "run.npz"
    run.save(path)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != "content_sha256"}
    config = json.loads(str(arrays["config_json"]))  # written as refsam 0.1.x wrote format 3: no digest,
    optimizer = config.pop("optimizer")  # λ as "weight_decay" + "regularization", momentum as loose keys
    config.pop("l2"), config.pop("clip_grad_norm")
    config.update(weight_decay=optimizer["weight_decay"], regularization="decoupled", momentum=0.0,
                  dampening=0.0, nesterov=False)
    arrays.update(format_version=np.array(3), config_json=np.array(json.dumps(config)),
                  buffers=np.zeros((0, run.thetas.shape[1])))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    loaded = refsam.Trajectory.load(path)
    assert np.array_equal(loaded.thetas, run.thetas) and loaded.optimizer().weight_decay == 0.05


def test_refsam_verify_exits_1_for_a_run_that_does_not_replay(tmp_path, capsys):
    run = refsam.Trajectory(*(lambda r: (r.thetas, r.epsilons, r.batches, r.lrs, r.weights,
                                          {**r.config, "rho": 0.2}))(_run()))
    run.save(tmp_path / "run.npz", problem=P)  # consistent, digest and all: but not a run of its config
    np.savez(tmp_path / "data.npz", X=X, y=Y)
    assert main(["verify", str(tmp_path / "run.npz"), "--data", str(tmp_path / "data.npz")]) == 1
    assert "does NOT replay" in capsys.readouterr().out


# -- files: whole or not at all, never over what refsam did not write ----------------------------------------
def test_two_writers_of_one_path_leave_a_readable_run(tmp_path):
    runs = [_run(steps=30), _run(steps=40)]
    path = tmp_path / "run.npz"
    errors = []

    def save(run):
        try:
            for _ in range(5):
                run.save(path)
        except Exception as exc:  # pragma: no cover - a failure is reported below
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(r,)) for r in runs]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert refsam.Trajectory.load(path).steps in (30, 40)
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]  # no temporary file left behind


def test_a_link_is_replaced_with_force_and_its_target_is_untouched(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("precious\n")
    (tmp_path / "run.npz").symlink_to(target)
    _run().save(tmp_path / "run.npz", overwrite=True)
    assert not (tmp_path / "run.npz").is_symlink() and target.read_text() == "precious\n"


def test_export_refuses_a_users_file_and_a_link_at_a_case_name(tmp_path):
    name = "logistic-sam-weight_decay-full.npz"
    (tmp_path / name).write_text("mine\n")
    with pytest.raises(CaseFileError, match=rf"refusing to overwrite .*{name}': refsam did not write it"):
        export_cases(tmp_path, cases="logistic-sam-weight_decay-full")
    assert (tmp_path / name).read_text() == "mine\n" and not (tmp_path / "manifest.json").exists()
    (tmp_path / name).unlink()
    (tmp_path / "elsewhere.txt").write_text("elsewhere\n")
    (tmp_path / name).symlink_to(tmp_path / "elsewhere.txt")
    with pytest.raises(CaseFileError, match="it is a symbolic link"):
        export_cases(tmp_path, cases="logistic-sam-weight_decay-full")
    export_cases(tmp_path, cases="logistic-sam-weight_decay-full", force=True)
    assert not (tmp_path / name).is_symlink() and (tmp_path / "elsewhere.txt").read_text() == "elsewhere\n"
    export_cases(tmp_path, cases="logistic-sam-weight_decay-full")  # its own files: replaced without force


def test_one_export_into_one_directory_at_a_time(tmp_path):
    (tmp_path / LOCK_NAME).write_text(f"{os.getpid()}\n")  # an export that is running (this process)
    with pytest.raises(CaseFileError, match=r"another export is writing into .*wait for it to finish"):
        export_cases(tmp_path, cases="logistic-sam-weight_decay-full")
    assert sorted(os.listdir(tmp_path)) == [LOCK_NAME]
    with ProcessPoolExecutor(1) as pool:  # a lock left by a process that has ended: taken over
        dead = pool.submit(os.getpid).result()
    (tmp_path / LOCK_NAME).write_text(f"{dead}\n")
    export_cases(tmp_path, cases="logistic-sam-weight_decay-full")
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_failed_write_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    import refsam.data.archive as archive

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(archive.tempfile, "mkstemp", refuse)  # as in a folder that turned read-only
    assert main(["export-cases", str(tmp_path / "c"), "--cases", "logistic-sam-weight_decay-full"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert re.search(r"refsam export-cases: error: cannot write .*Permission denied", err[0])
    assert not (tmp_path / "c" / LOCK_NAME).exists()  # the lock is released


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_export_folder_is_a_clear_error(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(CaseFileError, match="cannot write into the case directory .*permission denied"):
            export_cases(folder, cases="logistic-sam-weight_decay-full")
    finally:
        folder.chmod(0o700)


def test_figures_never_replace_a_users_file_without_force(tmp_path):
    pytest.importorskip("matplotlib")
    from refsam.apps.plotting import is_refsam_figure, removal_bars

    fit = refsam.apps.fit(P, S, refsam.SGD(0.5, weight_decay=0.05), 50)
    results = refsam.apps.remove_harmful(fit, X[:5], Y[:5], 2, methods=["closed_form"], n_random=1)
    (tmp_path / "removal.png").write_text("mine\n")
    with pytest.raises(refsam.InvalidInputError, match="refsam did not write it"):
        removal_bars(results, str(tmp_path))
    assert (tmp_path / "removal.png").read_text() == "mine\n"
    removal_bars(results, str(tmp_path), force=True)
    assert is_refsam_figure(str(tmp_path / "removal.png"))
    removal_bars(results, str(tmp_path))  # refsam's own figure: replaced without force


def test_a_top_k_beyond_the_rows_is_refused_not_clamped(tmp_path, capsys):
    case = "logistic-sam-weight_decay-full"
    export_cases(tmp_path / "c", cases=case)
    scores = {case: refsam.kit.load_case(tmp_path / "c", case).reference()}
    message = r"`top_k` must be at most 12 \(the rows of the compared outputs\), got 1000000000"
    with pytest.raises(refsam.InvalidInputError, match=message):
        refsam.kit.check_scores(tmp_path / "c", scores, cases=case, top_k=10**9)
    assert refsam.kit.check_scores(tmp_path / "c", scores, cases=case, top_k=12).passed
    np.savez(tmp_path / "s.npz", **scores)
    argv = ["check", str(tmp_path / "c"), "--scores", str(tmp_path / "s.npz"), "--cases", case]
    assert main(argv + ["--top-k", "1000000000"]) == 2
    assert "`top_k` must be at most 12" in capsys.readouterr().err
    assert main(argv) == 0 and "1 of 84 cases selected" in capsys.readouterr().out


# -- processes -------------------------------------------------------------------------------------------
def test_worker_counts_are_capped_at_the_cpus_and_the_work(monkeypatch):
    cpus = parallel.available_cpus()
    assert parallel.check_parallel(None, 10**6)[1] == cpus
    assert parallel.check_parallel(None, -1)[1] == cpus
    started = []

    class Recording(ProcessPoolExecutor):
        def __init__(self, max_workers=None, **kwargs):
            started.append(max_workers)
            super().__init__(max_workers=max_workers, **kwargs)

    monkeypatch.setattr(parallel, "ProcessPoolExecutor", Recording)
    monkeypatch.setattr(parallel, "available_cpus", lambda: 64)  # as if on a large machine
    run = _run()
    serial = refsam.leave_one_out_replay(P, run, X[:2], Y[:2], indices=np.arange(8))
    spread = refsam.leave_one_out_replay(P, run, X[:2], Y[:2], indices=np.arange(8), n_jobs=20)
    assert started == [1]  # 8 points are 2 chunks: one worker and this process, not 19
    np.testing.assert_array_equal(spread, serial)


# -- data, progress, docs ---------------------------------------------------------------------------
def test_a_dataset_files_flipped_mask_is_used(tmp_path):
    Xd, yd, _ = refsam.make_gaussian_classification(n=60, n_features=3, seed=1)
    flipped = np.zeros(60, dtype=bool)
    flipped[:6] = True
    yd = np.where(flipped, 1 - yd, yd)
    np.savez(tmp_path / "noisy.npz", X=Xd, y=yd, flipped=flipped)
    train, val = prepare_data(str(tmp_path / "noisy.npz"), None, "logistic", None, 0.2, 0)  # --flip unset
    assert train.flipped.sum() + val.flipped.sum() == 6  # the file's noise, none added
    clean, _ = prepare_data(str(tmp_path / "noisy.npz"), None, "logistic", 0.0, 0.2, 0)
    assert clean.flipped.sum() == train.flipped.sum()
    with pytest.raises(refsam.InvalidInputError, match=r"marks its own flipped labels .*use 0 \(--flip 0\)"):
        prepare_data(str(tmp_path / "noisy.npz"), None, "logistic", 0.1, 0.2, 0)  # no noise on top of it


def test_numbers_given_as_0d_arrays_are_numbers():
    optimizer = refsam.SGD(np.array(0.5), weight_decay=0.05)
    run = refsam.train(P, refsam.SAM(np.array(0.05)), optimizer, np.array(10), seed=0)
    np.testing.assert_array_equal(run.thetas, _run().thetas)


def test_mlp_detect_reports_progress_on_its_long_loop(capsys):
    status = main(["detect", "--model", "mlp", "--n", "40", "--steps", "20", "--methods", "trajectory",
                   "--no-figures", "--progress"])  # captured stderr is no terminal: progress on request
    assert status == 0
    assert re.search(r"adjoint: step \d+/20", capsys.readouterr().err)


def test_the_docs_sources_contain_no_control_characters():
    offenders = []
    for path in sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]:
        text = path.read_bytes().decode("utf-8")  # bytes: no newline translation hides a \r
        for match in re.finditer(r"[\x00-\x08\x0b-\x1f\x7f]", text):
            line = text.count("\n", 0, match.start()) + 1
            context = text[max(0, match.start() - 20):match.end() + 10]
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {context!r}")
    assert not offenders, "control characters (an escape gone wrong?):\n" + "\n".join(offenders)
