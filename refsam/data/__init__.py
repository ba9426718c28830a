"""The data layer: seeded synthetic data and label noise (`synthetic`), file and bundled datasets
(`loaders`). Nothing here knows about models."""

from .loaders import (
    BUILTIN_DATASETS,
    Dataset,
    check_labels_fit,
    load_csv,
    load_dataset,
    load_npz,
    project_pca,
    sklearn_available,
    standardize,
    train_test_split,
)
from .synthetic import flip_labels, make_gaussian_classification

__all__ = [
    "BUILTIN_DATASETS",
    "Dataset",
    "check_labels_fit",
    "flip_labels",
    "load_csv",
    "load_dataset",
    "load_npz",
    "make_gaussian_classification",
    "project_pca",
    "sklearn_available",
    "standardize",
    "train_test_split",
]
