"""``refsam bank``, ``refsam bank merge`` and ``refsam lds``: shards built as array jobs merge into the
serial bank file for file, the LDS table shows the scores' LDS beside the exact influence's (computed
independently here with scipy), and mistakes end with one line and exit status 2; benchmarks/banks.py
runs and writes its keys."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

import refsam
from refsam.apps.banks import BankRecipe, build_target
from refsam.cli import main

ROOT = Path(__file__).resolve().parents[2]
BUILD = ["bank", "--n", "60", "--subsets", "40", "--steps", "200"]


def run(capsys, argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def fitted():
    return build_target(BankRecipe(n=60, steps=200))


def test_shards_merge_to_the_serial_bank_file_for_file(capsys, tmp_path):
    assert run(capsys, BUILD + ["--out", tmp_path / "serial"])[0] == 0
    for i in range(2):
        status, out, _ = run(capsys, BUILD + ["--out", tmp_path / "sharded", "--shard", f"{i}/2"])
        assert status == 0 and f"shard {i}/2" in out
    status, out, _ = run(capsys, ["bank", "merge", tmp_path / "sharded", "--export", "dattri"])
    assert status == 0 and "merged 2 shards: 40 subsets" in out
    for name in ("bank.npz", "bank.json"):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "sharded" / name).read_bytes()
    gt = np.load(tmp_path / "sharded" / "dattri" / "gt_values.npy")
    assert np.array_equal(gt, -refsam.load_bank(tmp_path / "serial").outputs)


def test_a_retrain_bank_of_a_run_averages_the_seeds(capsys, tmp_path):
    argv = ["bank", "--n", "50", "--steps", "20", "--target", "run", "--batch-size", "8", "--kind", "retrain",
            "--seeds", "0,5", "--subsets", "2", "--subset-ratio", "0.8", "--out", tmp_path]
    assert run(capsys, argv)[0] == 0
    bank = refsam.load_bank(tmp_path)
    fit_, _, X_test, y_test = build_target(BankRecipe(n=50, steps=20, target="run", batch_size=8))
    mask = bank.masks[1]
    alone = refsam.Problem(fit_.problem.model, fit_.problem.X[mask], fit_.problem.y[mask])
    optimizer = refsam.SGD(0.5, weight_decay=1e-2)
    losses = [alone.model.losses(
        refsam.train(alone, fit_.sam, optimizer, 20, batch_size=8, seed=s).theta_final, X_test, y_test)
        for s in (0, 5)]
    np.testing.assert_allclose(bank.outputs[1], np.mean(losses, axis=0), rtol=1e-12)
    assert bank.meta["seeds"] == [0, 5]


def test_lds_table_grades_scores_beside_the_exact_influence(capsys, tmp_path, fitted):
    fit_, root, X_test, y_test = fitted
    assert run(capsys, BUILD + ["--out", tmp_path / "b"])[0] == 0
    erm = refsam.hessian_influence(fit_.problem, fit_.sam, root, X_test, y_test, variant="erm")
    np.save(tmp_path / "erm.npy", erm)
    status, out, err = run(capsys, ["lds", "--bank", tmp_path / "b", "--scores", tmp_path / "erm.npy"])
    assert status == 0 and err == ""
    bank = refsam.load_bank(tmp_path / "b")
    exact = refsam.hessian_influence(fit_.problem, fit_.sam, root, X_test, y_test)
    for name, scores in (("erm.npy", erm), (r"exact \(closed_form\)", exact)):
        expected = np.mean([scipy.stats.spearmanr(bank.masks @ scores[:, q], bank.outputs[:, q])[0]
                            for q in range(bank.outputs.shape[1])])
        line = next(li for li in out.splitlines() if re.match(name, li))
        assert float(line.split()[-4]) == pytest.approx(expected, abs=6e-5)  # printed to 4 decimals
    np.savez(tmp_path / "dattri_sign.npz", helpfulness=-erm)  # a peer's sign: --negate restores ours
    status, out2, _ = run(capsys, ["lds", "--bank", tmp_path / "b", "--scores", tmp_path / "dattri_sign.npz",
                                   "--negate", "--no-exact"])
    assert status == 0 and out2.splitlines()[2].split()[-4] == out.splitlines()[2].split()[-4]


def test_bank_and_lds_mistakes_end_with_one_line_and_status_2(capsys, tmp_path, fitted):
    assert run(capsys, BUILD + ["--out", tmp_path / "b"])[0] == 0
    np.save(tmp_path / "wrong.npy", np.zeros((3, 4)))
    for shard in ("0/3", "2/3"):  # 70 subsets: three blocks, shard 1 never built
        argv = BUILD + ["--subsets", "70", "--out", tmp_path / "missing", "--shard", shard]
        assert run(capsys, argv)[0] == 0
    (tmp_path / "notes.txt").write_text("mine")
    recipe = json.loads((tmp_path / "b" / "bank.json").read_text())
    recipe["recipe"]["rho"] = 0.1  # the recipe now describes another problem than the bank's numbers
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "bank.json").write_text(json.dumps(recipe))
    (tmp_path / "other" / "bank.npz").write_bytes((tmp_path / "b" / "bank.npz").read_bytes())
    cases = [
        (["lds", "--bank", tmp_path / "b", "--scores", tmp_path / "wrong.npy"],
         r"`scores` must have shape \(n_train, n_queries\) = \(48, 12\) like the bank, got \(3, 4\)"),
        (["lds", "--bank", tmp_path / "other", "--scores", tmp_path / "wrong.npy", "--no-exact"],
         r"`scores` must have shape"),
        (["lds", "--bank", tmp_path / "nothing", "--scores", tmp_path / "wrong.npy"],
         r"holds no bank|not exist"),
        (["lds", "--bank", tmp_path / "b", "--scores", tmp_path / "none.npy"],
         r"scores file .* does not exist"),
        (["bank", "merge", tmp_path / "missing"], r"missing shards: \[1\] of 3"),
        (BUILD + ["--out", tmp_path / "x", "--shard", "3/2"], r"--shard I/N needs 0 <= I < N"),
        (BUILD + ["--out", tmp_path / "x", "--subset-ratio", "1.5"],
         r"--subset-ratio must lie in \(0, 1\], got 1.5"),
        (BUILD + ["--out", tmp_path / "notes.txt"], r"--out .* is a file"),
        (BUILD + ["--out", tmp_path / "x", "--target", "root", "--batch-size", "8"],
         r"a root target needs a full-batch run"),
        (["bank", "build", "--out", tmp_path / "x"], r"takes `merge DIR"),
        (BUILD + ["--out", tmp_path / "x", "--seeds", "a,b"],
         r"--seeds must be a comma-separated list of ints"),
        (BUILD + ["--out", tmp_path / "x", "--seeds", "1"],
         r"`seeds` applies to kind='retrain' of a run only"),
    ]
    for argv, message in cases:
        status, out, err = run(capsys, argv)
        assert status == 2, (argv, out, err)
        assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
    # another problem: the bank's fingerprint refuses the rebuilt one
    np.save(tmp_path / "fine.npy", np.zeros((48, 12)))
    status, _, err = run(capsys, ["lds", "--bank", tmp_path / "other", "--scores", tmp_path / "fine.npy"])
    assert status == 2 and "another problem (fingerprint differs)" in err


def test_the_bank_benchmark_runs_and_writes_its_keys(tmp_path):
    out = tmp_path / "banks.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "banks.py"), "--tiny", "--json", str(out)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert completed.returncode == 0, completed.stderr
    results = json.loads(out.read_text())
    for key in ("lds_bank_block_speedup", "bank_over_training_run", "bank_over_training_root"):
        assert math.isfinite(results[key]) and results[key] > 0, key
    for row in results["bank_block_speedups"].values():
        assert row["rel_diff_bank_vs_single"] <= 1e-9  # the block re-solves are the single ones
