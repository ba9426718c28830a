"""Datasets for the applications: CSV/NPZ round trips, label encoding, label noise, and one-line errors."""

import numpy as np
import pytest

from refsam.cli import main
from refsam.data.loaders import (
    Dataset,
    check_labels_fit,
    flip_labels,
    load_csv,
    load_dataset,
    load_npz,
    sklearn_available,
    standardize,
    train_test_split,
)


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_csv_round_trip_with_header_and_label_encoding(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, 3))
    labels = np.array([5, 9, 5, 5, 9, 9, 5])  # arbitrary integer ids -> 0..K-1 in sorted order
    rows = [",".join(repr(float(v)) for v in row) + f",{lab}" for row, lab in zip(X, labels)]
    lines = ["a,b,c,label", *rows]
    ds = load_csv(_write(tmp_path, "d.csv", "\n".join(lines) + "\n"))
    np.testing.assert_array_equal(ds.X, X)  # repr of a float64 round-trips exactly
    np.testing.assert_array_equal(ds.y, (labels == 9).astype(int))
    np.testing.assert_array_equal(ds.classes, [5, 9])
    assert ds.n_classes == 2 and not ds.flipped.any()


def test_csv_label_column_can_be_first(tmp_path):
    ds = load_csv(_write(tmp_path, "d.csv", "1,0.5,0.25\n0,1.5,2.5\n"), label_column=0)
    np.testing.assert_array_equal(ds.X, [[0.5, 0.25], [1.5, 2.5]])
    np.testing.assert_array_equal(ds.y, [1, 0])


def test_npz_round_trip_keeps_flipped(tmp_path):
    X = np.arange(12.0).reshape(6, 2)
    y = np.array([0, 1, 2, 0, 1, 2])
    flipped = np.array([True, False, False, False, False, True])
    path = str(tmp_path / "d.npz")
    np.savez(path, X=X, y=y, flipped=flipped)
    ds = load_npz(path)
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    np.testing.assert_array_equal(ds.flipped, flipped)
    assert ds.n_classes == 3


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1,2,0\n3,4\n", "row 2 has 2 fields, expected 3"),
        ("1,2,0\n3,x,1\n", "row 2 has a non-numeric field"),
        ("a,b\n", "header but no data rows"),
        ("", "is empty"),
        ("1\n2\n", "at least 2 columns"),
        ("1,0.5\n2,1.5\n", "labels must be integer class ids"),
    ],
)
def test_malformed_csv_raises_one_line_value_error(tmp_path, text, match):
    with pytest.raises(ValueError, match=match) as info:
        load_dataset(_write(tmp_path, "bad.csv", text))
    assert "\n" not in str(info.value)


def test_unknown_dataset_and_missing_files_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="cannot read CSV file"):
        load_dataset(str(tmp_path / "nope.csv"))
    np.savez(str(tmp_path / "bad.npz"), X=np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"lacks arrays \['y'\]"):
        load_dataset(str(tmp_path / "bad.npz"))


def test_labels_that_do_not_fit_the_model_are_rejected():
    ds = Dataset(np.zeros((3, 2)), np.array([0, 1, 2]), 3, "three")
    with pytest.raises(ValueError, match="model 'logistic' needs 2 classes .* has 3; use --model softmax"):
        check_labels_fit(ds, "logistic")
    check_labels_fit(ds, "softmax")  # no error


def test_flip_labels_flips_exactly_the_requested_fraction_to_other_classes():
    y = np.repeat(np.arange(4), 25)
    y_noisy, flipped = flip_labels(y, 4, 0.1, seed=3)
    assert flipped.sum() == 10
    assert np.all(y_noisy[flipped] != y[flipped])  # a flipped label is a different class
    np.testing.assert_array_equal(y_noisy[~flipped], y[~flipped])
    assert y_noisy.min() >= 0 and y_noisy.max() <= 3
    y_again, flipped_again = flip_labels(y, 4, 0.1, seed=3)  # seeded: reproducible
    np.testing.assert_array_equal(y_again, y_noisy)
    np.testing.assert_array_equal(flipped_again, flipped)


def test_split_and_standardize_use_training_statistics_only():
    ds = load_dataset("synthetic", n=40, seed=1)
    train, test = train_test_split(ds, 0.25, seed=0)
    assert train.n == 30 and test.n == 10
    assert set(map(tuple, train.X)).isdisjoint(map(tuple, test.X))
    train_s, test_s = standardize(train, test)
    np.testing.assert_allclose(train_s.X.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(train_s.X.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(test_s.X, (test.X - train.X.mean(0)) / train.X.std(0), rtol=1e-12)


def test_synthetic_sources_are_seeded_and_subsampling_keeps_rows():
    a, b = load_dataset("synthetic", n=50, seed=2), load_dataset("synthetic", n=50, seed=2)
    np.testing.assert_array_equal(a.X, b.X)
    assert load_dataset("synthetic2d", n=20).p == 2
    assert len(np.unique(a.y)) == 2  # not a trivially constant labelling


@pytest.mark.skipif(not sklearn_available(), reason="scikit-learn not installed")
def test_sklearn_bundled_datasets_load_offline():
    bc = load_dataset("breast_cancer")
    assert (bc.n, bc.p, bc.n_classes) == (569, 30, 2)
    digits = load_dataset("digits", n=100, seed=0)
    assert (digits.n, digits.p, digits.n_classes) == (100, 64, 10)


def test_cli_reports_bad_dataset_in_one_line_with_nonzero_exit(tmp_path, capsys):
    bad = _write(tmp_path, "bad.csv", "1,2,0\n3,4\n")
    status = main(["detect", "--dataset", bad])
    err = capsys.readouterr().err.strip()
    assert status != 0
    assert err.startswith("refsam detect: error:") and "row 2 has 2 fields" in err
    assert len(err.splitlines()) == 1
    assert main(["detect", "--dataset", "nonexistent"]) != 0
    assert "unknown dataset" in capsys.readouterr().err


def test_pca_projection_decorrelates_and_keeps_distances_at_full_rank():
    from refsam.data.loaders import project_pca

    train, test = train_test_split(load_dataset("synthetic", n=60, seed=3), 0.25, seed=0)
    (train_k, test_k) = project_pca(train, test, n_components=3)
    cov = np.cov(train_k.X, rowvar=False)  # (3, 3)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0.0, atol=1e-10)  # principal axes
    assert np.all(np.diff(np.diag(cov)) <= 0) and test_k.X.shape == (15, 3)
    (full,) = project_pca(train, n_components=train.p)  # a rotation: pairwise distances unchanged
    d_before = np.linalg.norm(train.X[:, None] - train.X[None], axis=2)
    d_after = np.linalg.norm(full.X[:, None] - full.X[None], axis=2)
    np.testing.assert_allclose(d_after, d_before, atol=1e-10)
    with pytest.raises(ValueError, match="`n_components` must be <= the number of features 5"):
        project_pca(train, n_components=6)
