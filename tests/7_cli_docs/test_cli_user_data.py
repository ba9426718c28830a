"""A user's own file, end to end (issue 26): no label is flipped unless asked, named labels are mapped and
the mapping printed, every training row keeps its row in the file through the split, `detect` lists the
top suspects by that row and writes every training row's scores to DIR/scores.csv, and a file refsam did
not write is never replaced without --force."""

import csv
import json

import numpy as np
import pytest

from refsam.cli import main
from refsam.data import load_csv, project_pca, standardize, train_test_split

MISLABELED = (3, 41, 57, 70)  # rows of the file whose label is the other cluster's
FAST = ["--quiet", "--no-figures", "--steps", "100"]


@pytest.fixture
def user_csv(tmp_path):
    """Two well separated clusters named cat and dog, a header, and four rows labelled with the wrong name."""
    rng = np.random.default_rng(3)
    X = np.r_[rng.normal(0.0, 0.7, (40, 2)), rng.normal(3.0, 0.7, (40, 2))]  # (80, 2)
    labels = np.array(["cat"] * 40 + ["dog"] * 40)
    for row in MISLABELED:
        labels[row] = "dog" if labels[row] == "cat" else "cat"
    path = tmp_path / "animals.csv"
    path.write_text("width,height,species\n" + "".join(
        f"{a:.5f},{b:.5f},{name}\n" for (a, b), name in zip(X, labels)))
    return path, X, labels


def _scores(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_named_labels_are_mapped_and_rows_survive_split_standardisation_and_pca(user_csv):
    path, X, labels = user_csv
    data = load_csv(path)
    assert data.classes.tolist() == ["cat", "dog"] and data.n == 80
    np.testing.assert_array_equal(data.y, (labels == "dog").astype(int))
    np.testing.assert_array_equal(data.rows, np.arange(80))
    train, test = train_test_split(data, 0.25, seed=1)
    assert sorted(np.r_[train.rows, test.rows].tolist()) == list(range(80))  # a partition of the file
    np.testing.assert_allclose(train.X, X[train.rows], atol=1e-5)  # rows name the file's lines
    np.testing.assert_array_equal(test.y, data.y[test.rows])
    for part in (*standardize(train, test), *project_pca(train, test, n_components=1)):
        assert part.rows.tolist() in (train.rows.tolist(), test.rows.tolist())
    assert data.subset([5, 2]).rows.tolist() == [5, 2]


def test_a_line_of_named_labels_is_data_and_a_line_of_column_names_is_a_header(tmp_path):
    bare = tmp_path / "bare.csv"
    bare.write_text("1.0,2.0,cat\n1.5,2.5,dog\n0.5,1.0,cat\n")  # no header: the first line is a sample
    assert load_csv(bare).n == 3
    named = tmp_path / "named.csv"
    named.write_text("1.0,2.0,label\n1.5,2.5,0\n0.5,1.0,1\n")  # numeric labels under a named label column
    assert load_csv(named).n == 2


def test_detect_on_a_users_csv_lists_suspects_by_file_row_and_writes_every_training_rows_scores(
        user_csv, tmp_path, capsys):
    path, _, labels = user_csv
    out_dir = tmp_path / "out"
    assert main(["detect", "--dataset", str(path), "--out", str(out_dir), "--methods", "closed_form",
                 "--top", "5", *FAST]) == 0
    out = capsys.readouterr().out
    assert "labels: 'cat' → 0, 'dog' → 1" in out
    assert "(labels as given)" in out and "Detection of" not in out  # nothing flipped, no recall table
    table = out[out.index("\nrank "):].splitlines()[1:8]
    assert table[0].split() == ["rank", "row", "label", "score", "(closed_form)", "loss"]
    printed = [line.split() for line in table[2:7]]
    rows = _scores(out_dir / "scores.csv")
    assert rows[0][:2] == ["row", "label"] and "closed_form" in rows[0] and "random" not in rows[0]
    file_rows = [int(r[0]) for r in rows[1:]]
    assert sorted(file_rows) == list(range(80))  # every row of the file, once: detect holds none out
    assert all(r[1] == labels[int(r[0])] for r in rows[1:])  # the label as written in the file
    assert [p[1] for p in printed] == [r[0] for r in rows[1:6]]  # the printed top 5 head the file
    assert set(file_rows[:len(MISLABELED)]) == set(MISLABELED)  # the rows labelled wrongly come first
    scores = [float(r[rows[0].index("closed_form")]) for r in rows[1:]]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1  # ranked, not constant


def test_a_scores_file_refsam_did_not_write_is_kept_unless_forced(user_csv, tmp_path, capsys):
    path = user_csv[0]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    mine = out_dir / "scores.csv"
    mine.write_text("my own notes\n")
    argv = ["detect", "--dataset", str(path), "--out", str(out_dir), "--methods", "closed_form",
            "--quiet", "--no-figures", "--steps", "10"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "refusing to overwrite" in captured.err and "--force" in captured.err
    assert mine.read_text() == "my own notes\n"
    assert main([*argv, "--force"]) == 0
    assert mine.read_text().startswith("row,label,")
    assert main(argv) == 0  # its own file: replaced on a re-run without --force


def test_detect_flip_defaults_plant_noise_only_in_built_in_data(capsys):
    assert main(["detect", "--methods", "closed_form", "--n", "80", *FAST]) == 0
    out = capsys.readouterr().out
    assert "(8 labels flipped)" in out and "Detection of 8 flipped labels" in out
    assert main(["detect", "--methods", "closed_form", "--n", "80", "--flip", "0", *FAST]) == 0
    out = capsys.readouterr().out
    assert "(labels as given)" in out and "Most suspicious training rows" in out and "flipped" not in out
    assert "--out DIR writes every row's scores to DIR/scores.csv" in " ".join(out.split())


def test_an_npz_files_own_flipped_mask_is_used_and_not_flipped_again(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(0, 0.7, (30, 2)), rng.normal(3, 0.7, (30, 2))]
    y = np.r_[np.zeros(30, int), np.ones(30, int)]
    flipped = np.zeros(60, bool)
    flipped[[1, 2, 35, 36, 50]] = True
    y[flipped] = 1 - y[flipped]
    path = tmp_path / "noisy.npz"
    np.savez(path, X=X, y=y, flipped=flipped)
    assert main(["detect", "--dataset", str(path), "--methods", "closed_form", *FAST]) == 0
    out = capsys.readouterr().out
    n_train_flipped = int(out.split(" labels flipped)")[0].rsplit("(", 1)[1])
    assert 0 < n_train_flipped <= 5 and f"Detection of {n_train_flipped} flipped labels" in out
    assert main(["detect", "--dataset", str(path), "--flip", "0.1", *FAST]) == 2
    assert "noisy.npz marks its own flipped labels" in capsys.readouterr().err


def test_explain_remove_and_edit_name_rows_of_the_file(user_csv, capsys):
    path, _, labels = user_csv
    assert main(["explain", "--dataset", str(path), "--k", "3", *FAST]) == 0
    out = capsys.readouterr().out
    assert "of the file): label " in out
    section = out[out.index("Proponents"):].splitlines()
    assert section[1].split() == ["row", "label", "I_j"]
    for line in section[3:6]:
        row, label, _ = line.split()
        assert labels[int(row)] == label  # the file's row and its label there
    assert main(["remove", "--dataset", str(path), "--methods", "closed_form", "--k", "3",
                 "--random-trials", "0", *FAST]) == 0
    out = capsys.readouterr().out
    removed = out.split("rows removed by closed_form (0-based data rows of the file): ")[1].splitlines()[0]
    assert len(json.loads(removed)) == 3 and all(0 <= r < 80 for r in json.loads(removed))
    assert main(["edit", "--dataset", str(path), "--index", "0", "--max-remove", "4", *FAST]) == 0
    out = capsys.readouterr().out
    assert "of the file, label " in out and "(cat)" in out and "rows [" in out
