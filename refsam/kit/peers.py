"""A bank in the file formats of the field's tools, both ways: dattri, TRAK and kronfluence.

Conventions (K subsets, n training points, m queries; masks[k, i] = point i kept in subset k):
* ``"dattri"``       ``gt_values.npy`` (K, m) and ``indices.npy`` (K, ⌊αn⌋), int64: dattri's
                     ``calculate_lds_ground_truth`` pair. dattri negates the target values (its attributors
                     score "helpfulness", the opposite of refsam's ∂f/∂w), so gt_values = −outputs; its
                     ``lds(score, (gt_values, indices))`` then ranks Σ_{i∈S} score_i against −f, and a
                     dattri score array graded in refsam is negated first (``refsam lds --negate``).
* ``"trak"``         ``masks.npy`` (K, n) bool and ``margins.npy`` (K, m): the correct-class margins
                     (a bank built with ``output="margin"``).
* ``"kronfluence"``  ``masks.npy`` (K, n) bool and ``losses.npy`` (K, m): test losses (``output="loss"``);
                     also ``masks.pt`` / ``losses.pt`` (torch tensors) when torch is importable.
Every file is plain ``.npy`` (``np.save``, no pickle) and is read with ``allow_pickle=False``. An imported
bank carries no problem fingerprint (its ``base`` is NaN): it can be graded (`refsam.lds()`), not
checked against a problem.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidInputError
from ..ground_truth.bank import BANK_FORMAT, CounterfactualBank

__all__ = ["PEER_FORMATS", "export_bank", "import_bank", "torch_available"]

PEER_FORMATS = ("dattri", "trak", "kronfluence")
_VALUE_FILE = {"trak": "margins", "kronfluence": "losses"}
_NEEDS_OUTPUT = {"trak": "margin", "kronfluence": "loss"}


def torch_available() -> bool:
    """True if ``import torch`` would succeed (the .pt files are written only then)."""
    return importlib.util.find_spec("torch") is not None


def _check_format(fmt: object) -> str:
    if fmt not in PEER_FORMATS:
        raise InvalidInputError(f"`fmt` must be one of {list(PEER_FORMATS)}, got {fmt!r}")
    return str(fmt)


def export_bank(bank: CounterfactualBank, directory: str | os.PathLike[str], fmt: str) -> list[str]:
    """Write ``bank`` in a peer's format into ``directory`` (created); returns the paths written."""
    fmt = _check_format(fmt)
    if not isinstance(bank, CounterfactualBank):
        raise InvalidInputError(f"`bank` must be a refsam CounterfactualBank, got {type(bank).__name__}")
    folder = os.fspath(directory)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise InvalidInputError(f"cannot export into {folder!r}: it is a file; give a directory")
    os.makedirs(folder, exist_ok=True)
    if fmt == "dattri":
        arrays: dict[str, NDArray[Any]] = {"gt_values": -bank.outputs, "indices": bank.indices}
    else:
        output = bank.meta["output"]
        if output != _NEEDS_OUTPUT[fmt]:
            raise InvalidInputError(f"{fmt}'s bank holds {_VALUE_FILE[fmt]}: build the bank with "
                                    f"output={_NEEDS_OUTPUT[fmt]!r}, got output={output!r}")
        arrays = {"masks": bank.masks, _VALUE_FILE[fmt]: bank.outputs}
    written = []
    for name, array in arrays.items():
        path = os.path.join(folder, name + ".npy")
        np.save(path, array, allow_pickle=False)
        written.append(path)
    if fmt == "kronfluence" and torch_available():  # pragma: no cover - torch is not a dependency
        import torch  # type: ignore[import-not-found, unused-ignore]

        for name, array in arrays.items():
            path = os.path.join(folder, name + ".pt")
            torch.save(torch.from_numpy(np.ascontiguousarray(array)), path)
            written.append(path)
    return written


def _load(folder: str, name: str) -> NDArray[Any]:
    path = os.path.join(folder, name + ".npy")
    if not os.path.isfile(path):
        raise InvalidInputError(f"{path!r} does not exist (expected in a {name!r} file of the peer's bank)")
    try:
        array: NDArray[Any] = np.load(path, allow_pickle=False)
        return array
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"cannot read {path!r} without pickle: {exc}") from exc


def import_bank(directory: str | os.PathLike[str], fmt: str, n: int | None = None) -> CounterfactualBank:
    """A peer's bank as a refsam bank (for `refsam.lds()`). ``n`` (the number of training points) is
    required for dattri, whose ``indices`` do not say it."""
    fmt = _check_format(fmt)
    folder = os.fspath(directory)
    if fmt == "dattri":
        values, indices = -_load(folder, "gt_values"), _load(folder, "indices")
        if n is None:
            raise InvalidInputError("dattri's indices do not record n: pass `n` (the training points)")
        if indices.ndim != 2 or indices.dtype.kind not in "iu" or (indices.size and (
                indices.min() < 0 or indices.max() >= n)):
            raise InvalidInputError(f"dattri indices must be a 2-d int array with entries in 0..{n - 1}, got "
                                    f"{indices.dtype} {indices.shape}")
        masks = np.zeros((indices.shape[0], n), dtype=bool)
        masks[np.arange(indices.shape[0])[:, None], indices] = True
        if np.any(masks.sum(axis=1) != indices.shape[1]):
            raise InvalidInputError("dattri indices repeat a training point within a subset")
    else:
        masks, values = _load(folder, "masks"), _load(folder, _VALUE_FILE[fmt])
        if masks.ndim != 2 or masks.dtype != bool:
            raise InvalidInputError(f"{fmt} masks must be a 2-d bool array, got {masks.dtype} {masks.shape}")
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != masks.shape[0]:
        raise InvalidInputError(f"{fmt}: the values {values.shape} must have one row per subset "
                                f"({masks.shape[0]})")
    sizes = masks.sum(axis=1)
    K, m = values.shape
    meta = {"format": BANK_FORMAT, "format_version": 1, "kind": f"imported:{fmt}",
            "output": "margin" if fmt == "trak" else "loss" if fmt == "kronfluence" else "unknown",
            "subset_ratio": float(sizes.mean()) / masks.shape[1],
            "subset_size": int(sizes[0]) if np.all(sizes == sizes[0]) else None, "n_subsets": K,
            "seed": None, "seeds": None, "block": None, "shard": None, "subsets": [0, K],
            "fingerprint": {"target": f"imported:{fmt}", "n": int(masks.shape[1]), "m": int(m)}}
    return CounterfactualBank(masks, values, np.full(m, np.nan), meta)
