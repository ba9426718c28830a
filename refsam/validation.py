"""Input validation at the public boundary, and the one randomness helper.

Every public entry point validates its arguments here, once; private helpers trust their inputs.
Errors follow one pattern: argument, what was expected, what was got, and (where useful) the remedy.
"""

from __future__ import annotations

import numbers
import os
import sys
from collections.abc import Collection, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .errors import InvalidInputError

__all__ = [
    "check_choice",
    "check_finite_array",
    "check_indices",
    "check_nonnegative",
    "check_output_directory",
    "check_positive",
    "check_positive_int",
    "check_progress",
    "check_random_state",
]



def check_random_state(seed: object) -> np.random.Generator:
    """Turn `seed` (None, an int, or a `np.random.Generator`) into a `np.random.Generator`.

    This is the only place refsam creates randomness; there are no global seeds.
    """
    if isinstance(seed, bool):
        raise InvalidInputError(f"`seed` must be None, an int >= 0 or a np.random.Generator, got {seed!r}")
    if seed is None or isinstance(seed, (numbers.Integral, np.integer)):
        if seed is not None and seed < 0:
            raise InvalidInputError(
                f"`seed` must be None, an int >= 0 or a np.random.Generator, got {seed!r}")
        return np.random.default_rng(None if seed is None else int(seed))
    if isinstance(seed, np.random.Generator):
        return seed
    raise InvalidInputError(
        f"`seed` must be None, an int >= 0 or a np.random.Generator, got {type(seed).__name__}"
    )


def describe(value: object, limit: int = 60) -> str:
    """A short one-line description of a value for an error message: an array by its shape and dtype
    (never its entries), anything else by its repr cut to ``limit`` characters."""
    if isinstance(value, np.ndarray) and value.ndim > 0:
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _scalar(value: object) -> object:
    """A 0-d array or a numpy scalar as the Python number it holds (other values unchanged)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def check_nonnegative(name: str, value: object) -> float:
    """Return `value` as a finite float >= 0, or raise naming `name`."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise InvalidInputError(f"`{name}` must be a real number >= 0, got {describe(value)}")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise InvalidInputError(f"`{name}` must be a finite number >= 0, got {value!r}")
    return value


def check_positive(name: str, value: object) -> float:
    """Return `value` as a finite float > 0, or raise naming `name`."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise InvalidInputError(f"`{name}` must be a real number > 0, got {describe(value)}")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise InvalidInputError(f"`{name}` must be a finite number > 0, got {value!r}")
    return value


def check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    """Return `value` as an int >= `minimum`, or raise naming `name`."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise InvalidInputError(f"`{name}` must be an int >= {minimum}, got {describe(value)}")
    if value < minimum:
        raise InvalidInputError(f"`{name}` must be an int >= {minimum}, got {value}")
    return int(value)


def check_finite_array(name: str, value: ArrayLike, ndim: int | None = None,
                       shape: Sequence[int | None] | None = None) -> NDArray[np.float64]:
    """Return `value` as a float64 array with the given ndim/shape and only finite entries.

    `shape` may contain None for "any length" along that axis.
    """
    if value is None:
        raise InvalidInputError(f"`{name}` must be an array of real numbers, got None")
    if np.iscomplexobj(value):
        raise InvalidInputError(
            f"`{name}` must hold real numbers, got complex values (refsam is real float64)")
    if isinstance(value, np.ma.MaskedArray) and np.ma.is_masked(value):
        raise InvalidInputError(
            f"`{name}` must not be a masked array with masked entries; fill or drop them first")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"`{name}` must be an array of real numbers, got {type(value).__name__}") from exc
    if ndim is not None and arr.ndim != ndim:
        raise InvalidInputError(f"`{name}` must be {ndim}-dimensional, got shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise InvalidInputError(f"`{name}` must have shape {want}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise InvalidInputError(f"`{name}` must contain only finite values, got {bad} NaN/inf entries")
    return arr


def check_choice(name: str, value: object, choices: Collection[str]) -> str:
    """Return `value` if it is one of `choices`, or raise listing them."""
    try:
        known = value in choices
    except TypeError:  # an unhashable value (a list, say) is not among hashable choices
        known = False
    if not known:
        raise InvalidInputError(f"`{name}` must be one of {sorted(choices)}, got {describe(value)}")
    return str(value)


def check_indices(name: str, indices: ArrayLike | None, n: int) -> NDArray[np.int64]:
    """Training indices as an int64 array in 0..n−1; None means all n (``np.arange(n)``)."""
    if indices is None:
        return np.arange(n, dtype=np.int64)
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise InvalidInputError(f"`{name}` must be a non-empty 1-d array of ints, got {describe(idx)}")
    if idx.min() < 0 or idx.max() >= n:
        raise InvalidInputError(f"`{name}` must lie in 0..{n - 1}, got values in {idx.min()}..{idx.max()}")
    return idx.astype(np.int64)


def check_output_directory(name: str, path: object) -> str:
    """Validate a directory refsam will write into (created if needed), before any work is done.

    Refused: a path that is an existing file, or whose nearest existing ancestor is a file or is not
    writable. Returns the path as a str.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise InvalidInputError(f"`{name}` must be a directory path, got {path!r}")
    where = str(os.fspath(path))
    if os.path.exists(where) and not os.path.isdir(where):
        raise InvalidInputError(f"`{name}` {where!r} is a file, not a directory; give a directory")
    ancestor = os.path.abspath(where)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise InvalidInputError(f"`{name}` {where!r} cannot be created: {ancestor!r} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InvalidInputError(f"`{name}` {where!r} cannot be written: {ancestor!r} is not writable")
    return where


def check_progress(progress: object) -> bool:
    """``progress``: True or False, or None for "on where stderr is a terminal" (the default of every
    loop that can run for more than a few seconds)."""
    if progress is None:  # sys.stderr is None under pythonw and some service launchers
        stream = sys.stderr
        return bool(stream is not None and getattr(stream, "isatty", lambda: False)())
    if not isinstance(progress, (bool, np.bool_)):
        raise InvalidInputError(f"`progress` must be True, False or None (on at a terminal), got "
                                f"{progress!r}")
    return bool(progress)
