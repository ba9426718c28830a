"""Reading an .npz archive without pickle: the one place that knows how a renamed .npy, a truncated or
bit-flipped zip, or an object array shows up (datasets, trajectories, reference cases and score files
all read through here)."""

from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np

from ..errors import InvalidInputError

__all__ = ["SingleArrayError", "read_npz"]

# what np.load and zipfile raise for a damaged or foreign archive: a truncated zip (BadZipFile,
# EOFError), an unknown compression method (NotImplementedError), an "encrypted" flag (RuntimeError),
# a corrupted member (ValueError, KeyError, OSError), an object array (ValueError: allow_pickle=False)
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, NotImplementedError,
                RuntimeError)


class SingleArrayError(InvalidInputError):
    """The file holds one array (an .npy file, whatever its name), not an .npz archive."""


def read_npz(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Every array of the .npz archive at ``path``, read without pickle.

    Raises InvalidInputError whose message is the reason alone (one line, no path): callers put it in
    their own sentence. A single array (an .npy file, whatever its name) is refused, not returned.
    """
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise SingleArrayError("it holds a single array (an .npy file), not an .npz archive")
        with loaded as archive:
            return {key: archive[key] for key in archive.files}
    except InvalidInputError:
        raise
    except _READ_ERRORS as exc:
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise InvalidInputError(reason) from exc
