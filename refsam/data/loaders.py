"""File and bundled datasets for the applications: the embedded synthetic default, CSV and NPZ files,
and scikit-learn's bundled breast-cancer and digits sets (the data layer; offline).

Conventions
-----------
* A `Dataset` holds ``X`` (n, p) float64, ``y`` (n,) int64 labels in 0..K−1, ``n_classes`` K,
  ``flipped`` (n,) bool — True where a label was deliberately corrupted (all False for clean data) —
  and ``name``.
* Labels read from files are encoded as 0..K−1 in sorted order of their original values
  (``Dataset.classes`` keeps the original values): integers (as numbers or text) by value, any other
  text (``cat``, ``dog``) by string order.
* ``rows`` (n,) int64 names each sample by its place in the source: the 0-based data row of a CSV file
  (header and blank lines not counted), the index into an NPZ file's arrays, the index into a built-in
  set. Subsets, splits, standardisation and projections keep it, so a result about training point j
  maps back to the file as ``train.rows[j]``.
* Everything is deterministic given ``seed``; randomness goes through ``check_random_state``.

Errors the user can fix (unknown dataset, unreadable or malformed file, labels that do not fit the
model) raise ValueError with a one-line message naming the problem and the remedy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InvalidInputError
from ..validation import check_nonnegative, check_positive_int, check_random_state
from .archive import read_npz
from .synthetic import flip_labels, make_gaussian_classification

BUILTIN_DATASETS = ("synthetic", "synthetic2d", "breast_cancer", "digits")
__all__ = [
    "BUILTIN_DATASETS",
    "Dataset",
    "check_labels_fit",
    "flip_labels",
    "load_csv",
    "load_dataset",
    "load_npz",
    "project_pca",
    "sklearn_available",
    "standardize",
    "train_test_split",
]

SYNTHETIC_SEPARATION = 1.5  # class means ~ 1.5·N(0, I): about 90% clean accuracy, so flipped labels stand out


@dataclass
class Dataset:
    """Features, integer labels and the mask of deliberately flipped labels."""

    X: NDArray[np.float64]  # (n, p) float64
    y: NDArray[np.int64]  # (n,) int64, values 0..n_classes-1
    n_classes: int
    name: str
    flipped: Any = None  # (n,) bool array; all False when no label was flipped
    classes: Any = field(default=None)  # original label values, (n_classes,)
    rows: Any = field(default=None)  # (n,) int64: each sample's row in the source (Conventions)

    def __post_init__(self) -> None:
        if self.flipped is None:
            self.flipped = np.zeros(len(self.y), dtype=bool)
        if self.classes is None:
            self.classes = np.arange(self.n_classes)
        if self.rows is None:
            self.rows = np.arange(len(self.y), dtype=np.int64)

    def with_features(self, X: NDArray[np.float64]) -> Dataset:
        """The same samples (labels, mask, classes, rows) with features ``X`` (n, p')."""
        return Dataset(X, self.y, self.n_classes, self.name, self.flipped, self.classes, self.rows)

    def label_names(self) -> list[str]:
        """The original label of each class id 0..K−1, as text (for reports: ``'cat' → 0``)."""
        return [str(c) for c in self.classes]

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def p(self) -> int:
        return int(self.X.shape[1])

    def subset(self, idx: ArrayLike) -> Dataset:
        """The rows ``idx`` of this dataset (same classes)."""
        idx = np.asarray(idx)
        return Dataset(self.X[idx], self.y[idx], self.n_classes, self.name, self.flipped[idx],
                       self.classes, self.rows[idx])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, n={self.n}, p={self.p}, n_classes={self.n_classes}, "
                f"flipped={int(self.flipped.sum())})")


# -- label noise and splits ------------------------------------------------------------------------

def train_test_split(dataset: Dataset, test_fraction: float = 0.25, seed: object = 0
                     ) -> tuple[Dataset, Dataset]:
    """A seeded split into (train, test) datasets; each part keeps its ``flipped`` mask and its ``rows``
    (the samples' rows in the source), in source order."""
    test_fraction = check_nonnegative("test_fraction", test_fraction)
    if not 0 < test_fraction < 1:
        raise InvalidInputError(f"`test_fraction` must lie in (0, 1), got {test_fraction}")
    rng = check_random_state(seed)
    perm = rng.permutation(dataset.n)
    n_test = max(1, int(round(test_fraction * dataset.n)))
    if n_test >= dataset.n:
        raise InvalidInputError(f"dataset {dataset.name!r} has too few rows ({dataset.n}) to split")
    return dataset.subset(np.sort(perm[n_test:])), dataset.subset(np.sort(perm[:n_test]))


def standardize(train: Dataset, *others: Dataset) -> list[Dataset]:
    """Centre and scale features with the training set's mean and std (constant columns: std 1).

    Returns the standardized ``train`` followed by the standardized ``others``.
    """
    # moments of X/s, s = max|X| per column: no overflow of x² at 1e300-scale features
    scale = np.max(np.abs(train.X), axis=0)
    scale[~(scale > 0)] = 1.0
    unit = train.X / scale
    mean = scale * unit.mean(axis=0)
    std = scale * unit.std(axis=0)
    std[std == 0] = 1.0
    out = []
    for ds in (train, *others):
        out.append(ds.with_features((ds.X - mean) / std))
    return out


def check_labels_fit(dataset: Dataset, model_name: str) -> None:
    """Raise ValueError if the model cannot represent the dataset's classes.

    ``logistic`` needs exactly 2 classes; ``softmax`` and ``mlp`` need at least 2.
    """
    if dataset.n_classes < 2:
        raise InvalidInputError(f"dataset {dataset.name!r} has a single class; classification needs >= 2")
    if model_name == "logistic" and dataset.n_classes != 2:
        raise InvalidInputError(
            f"model 'logistic' needs 2 classes but dataset {dataset.name!r} has {dataset.n_classes}; "
            f"use --model softmax or mlp"
        )


# -- sources ----------------------------------------------------------------------------------------

def _encode_labels(raw: Any, source: str) -> tuple[NDArray[np.int64], NDArray[Any]]:
    """Map label values to 0..K−1 in sorted order: integers (as numbers or text) by value; labels with any
    non-numeric text (``cat``, ``dog``) as strings, in string order. Returns (y, classes)."""
    raw = np.asarray(raw)
    try:
        values = raw.astype(np.float64)
    except ValueError:  # text that is not a number: the labels are names
        names = raw.astype(str)
        classes, y = np.unique(names, return_inverse=True)
        return y.astype(np.int64).reshape(-1), classes
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise InvalidInputError(f"{source}: labels must be integer class ids or names, got non-integer "
                                f"numbers")
    if values.size and np.max(np.abs(values)) >= 2.0**53:  # from 2^53 on, distinct integers share a float
        raise InvalidInputError(
            f"{source}: labels must be integers of magnitude <= 2^53 to be read exactly, got "
            f"{np.max(np.abs(values)):.6g}; re-encode the classes as 0..K-1")
    classes, y = np.unique(values.astype(np.int64), return_inverse=True)
    return y.astype(np.int64).reshape(-1), classes


def _from_arrays(X: Any, y_raw: Any, name: str, flipped: Any = None) -> Dataset:
    if np.iscomplexobj(X):
        raise InvalidInputError(f"{name}: features must be real numbers, got complex values")
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: features must be numbers") from None
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise InvalidInputError(f"{name}: features must form a non-empty 2-D table, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise InvalidInputError(f"{name}: features contain NaN or inf values")
    y_raw = np.asarray(y_raw)
    if y_raw.ndim != 1 or y_raw.shape[0] != X.shape[0]:
        raise InvalidInputError(f"{name}: labels must have shape ({X.shape[0]},), got {y_raw.shape}")
    y, classes = _encode_labels(y_raw, name)
    if flipped is not None:
        flipped = np.asarray(flipped, dtype=bool)
        if flipped.shape != y.shape:
            raise InvalidInputError(f"{name}: `flipped` must have shape {y.shape}, got {flipped.shape}")
    return Dataset(X, y, len(classes), name, flipped, classes)


def load_csv(path: str | os.PathLike[str], label_column: int = -1, header: bool | None = None) -> Dataset:
    """Read a CSV: one row per sample, numeric features and the label in ``label_column`` (default: last).

    Labels are integer class ids or names (``cat``, ``dog``), encoded 0..K−1 in sorted order; the
    original values stay in ``Dataset.classes``, each sample's data row (0-based, header not counted) in
    ``Dataset.rows``.

    ``header=None`` (default) decides from the first line: non-numeric features make it a header; a
    numeric first line whose label occurs in no other row looks like a numeric header (column numbers)
    and is refused with an error rather than read as a class of its own — pass ``header=True`` to skip
    the first line or ``header=False`` to keep it as data. Every data row must have the same number of
    fields, its features numeric.
    """
    if header is not None and not isinstance(header, bool):
        raise InvalidInputError(f"`header` must be None, True or False, got {header!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidInputError(f"`path` of a CSV file must be a str or os.PathLike, got "
                                f"{type(path).__name__}")
    name = os.path.basename(str(path))
    if os.path.isdir(path):
        raise InvalidInputError(f"cannot read CSV file {str(path)!r}: it is a directory, not a file")
    try:
        with open(path, encoding="utf-8-sig") as fh:  # utf-8-sig: a byte-order mark is not data
            lines = [line.strip() for line in fh if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read CSV file {str(path)!r}: {exc.__class__.__name__}") from None
    if not lines:
        raise InvalidInputError(f"CSV file {str(path)!r} is empty")
    rows = [[field.strip() for field in line.split(",")] for line in lines]

    def numeric(row: list[str]) -> bool:
        try:
            [float(v) for v in row]
        except ValueError:
            return False
        return True

    width = len(rows[0])
    if width >= 2 and not -width <= label_column < width:
        raise InvalidInputError(f"`label_column` must lie in {-width}..{width - 1}, got {label_column}")
    col = label_column % max(width, 1)

    def features(row: list[str]) -> list[str]:
        return row[:col] + row[col + 1:]

    if header or (header is None and _looks_like_header(rows, col, numeric)):
        rows = rows[1:]
    elif header is None and len(rows) >= 3 and numeric(rows[0]) and len(rows[0]) >= 2:
        first = _label_field(rows[0], label_column)
        others = {_label_field(row, label_column) for row in rows[1:] if numeric(row) and len(row) >= 2}
        if first is not None and others and first not in others:
            raise InvalidInputError(
                f"CSV file {str(path)!r}: the first line looks like a numeric header (its label "
                f"{rows[0][label_column % len(rows[0])]!r} occurs in no other row); give the columns "
                f"non-numeric names or delete the line (API: load_csv(..., header=True) skips it, "
                f"header=False keeps it as data)")
    if not rows:
        raise InvalidInputError(f"CSV file {str(path)!r} has a header but no data rows")
    width = len(rows[0])
    if width < 2:
        raise InvalidInputError(
            f"CSV file {str(path)!r} needs at least 2 columns (features and a label), got 1")
    for i, row in enumerate(rows):
        if len(row) != width:
            raise InvalidInputError(
                f"CSV file {str(path)!r}: row {i + 1} has {len(row)} fields, expected {width}")
        if not numeric(features(row)):
            raise InvalidInputError(f"CSV file {str(path)!r}: row {i + 1} has a non-numeric field")
    X = np.array([features(row) for row in rows], dtype=np.float64)  # (n, width − 1)
    return _from_arrays(X, np.array([row[col] for row in rows]), name)


def _looks_like_header(rows: list[list[str]], col: int, numeric: Any) -> bool:
    """Whether the first line names the columns: a non-numeric feature field, or a non-numeric label
    above labels that are all numbers (a line of text labels is data: its classes have names)."""
    first = rows[0]
    if not numeric(first[:col] + first[col + 1:]):
        return True
    if col >= len(first) or numeric([first[col]]):
        return False
    return all(numeric([row[col]]) for row in rows[1:] if col < len(row)) and len(rows) > 1


def _label_field(row: list[str], label_column: int) -> float | None:
    """The numeric value of a row's label field (None if ``label_column`` is outside the row)."""
    if not -len(row) <= label_column < len(row):
        return None
    return float(row[label_column])


def load_npz(path: str | os.PathLike[str]) -> Dataset:
    """Read an .npz file with arrays ``X`` (n, p) and ``y`` (n,), and optionally ``flipped`` (n,)."""
    name = os.path.basename(str(path))
    try:
        data = read_npz(path)
    except InvalidInputError as exc:
        raise InvalidInputError(f"cannot read NPZ file {str(path)!r}: {exc}") from None
    missing = {"X", "y"} - set(data)
    if missing:
        raise InvalidInputError(
            f"NPZ file {str(path)!r} lacks arrays {sorted(missing)}; it needs `X` and `y`")
    return _from_arrays(data["X"], data["y"], name, data.get("flipped"))


def _load_sklearn(name: str) -> Dataset:
    try:
        import sklearn.datasets as skd
    except ImportError:
        raise InvalidInputError(
            f"dataset {name!r} needs scikit-learn (pip install scikit-learn); it is not installed"
        ) from None
    loader = {"breast_cancer": skd.load_breast_cancer, "digits": skd.load_digits}[name]
    bunch = loader()  # bundled with scikit-learn: no download
    return _from_arrays(bunch.data, bunch.target, name)


def sklearn_available() -> bool:
    """True if scikit-learn can be imported (needed for 'breast_cancer' and 'digits')."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def load_dataset(source: str | os.PathLike[str] = "synthetic", n: int | None = None,
                 seed: object = 0) -> Dataset:
    """Load a dataset by name or path.

    Parameters
    ----------
    source : str
        ``"synthetic"`` (seeded Gaussian clusters, 2 classes, 5 features; the embedded default),
        ``"synthetic2d"`` (the same with 2 features, for plots), ``"breast_cancer"`` or ``"digits"``
        (scikit-learn's bundled copies; offline), or a path to a ``.csv`` or ``.npz`` file.
    n : int, optional
        Number of rows. Synthetic sets are generated with this size (default 200); other sources are
        subsampled (seeded, without replacement) when they have more rows.
    seed : None, int or np.random.Generator

    Returns
    -------
    Dataset, with clean labels (``flipped`` all False): use `flip_labels()` to add noise.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise InvalidInputError(
            f"`source` must be a dataset name or a file path, got {type(source).__name__}")
    source = str(source)
    if n is not None:
        n = check_positive_int("n", n, minimum=4)
    rng = check_random_state(seed)
    if source in ("synthetic", "synthetic2d"):
        n_features = 5 if source == "synthetic" else 2
        X, y, _ = make_gaussian_classification(n or 200, n_features, 2, separation=SYNTHETIC_SEPARATION,
                                               seed=rng)
        return Dataset(X, y, 2, source)
    if source in ("breast_cancer", "digits"):
        dataset = _load_sklearn(source)
    elif source.lower().endswith(".csv"):
        dataset = load_csv(source)
    elif source.lower().endswith(".npz"):
        dataset = load_npz(source)
    else:
        raise InvalidInputError(
            f"unknown dataset {source!r}: use one of {list(BUILTIN_DATASETS)} or a path ending in .csv/.npz"
        )
    if n is not None and n < dataset.n:
        dataset = dataset.subset(np.sort(rng.choice(dataset.n, size=n, replace=False)))
    return dataset


def project_pca(train: Dataset, *others: Dataset, n_components: int) -> list[Dataset]:
    """Project features onto the training set's top ``n_components`` principal directions (numpy SVD).

    Centres with the training mean; returns the projected ``train`` followed by the projected ``others``.
    Used to keep d small on wide data (digits: 64 features → 16, so softmax has d = 170, not 650).
    """
    n_components = check_positive_int("n_components", n_components)
    if n_components > train.p:
        raise InvalidInputError(
            f"`n_components` must be <= the number of features {train.p}, got {n_components}")
    mean = train.X.mean(axis=0)
    _, _, Vt = np.linalg.svd(train.X - mean, full_matrices=False)  # rows of Vt: principal directions
    W = Vt[:n_components].T  # (p, k)
    return [ds.with_features((ds.X - mean) @ W) for ds in (train, *others)]
