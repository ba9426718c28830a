"""Reading an .npz archive without pickle: the one place that knows how a renamed .npy, a truncated or
bit-flipped zip, or an object array shows up (datasets, trajectories, reference cases and score files
all read through here), and writing a file whole or not at all (`write_atomically()`, after
`check_target()`): trajectories, case directories and figures are written through there."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from ..errors import InvalidInputError

__all__ = ["SingleArrayError", "check_target", "read_npz", "write_atomically"]

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
        where = os.fspath(path)
    except TypeError:
        raise InvalidInputError(f"a path must be a str or os.PathLike, got {type(path).__name__}") from None
    try:
        info = os.stat(where)
    except OSError as exc:
        raise InvalidInputError(f"{type(exc).__name__}: {exc.strerror or exc}") from exc
    if stat.S_ISDIR(info.st_mode):
        raise InvalidInputError("it is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInputError("it is not a regular file (a FIFO, socket or device)")
    try:
        loaded = np.load(where, allow_pickle=False)
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


# -- writing: whole files or nothing, never through a link, never over what refsam did not write ---------
def check_target(path: str | os.PathLike[str], force: bool, ours: Callable[[str], bool] | None,
                 argument: str = "path") -> str:
    """Raise InvalidInputError (naming ``argument`` and the path) unless a file may be written at ``path``.

    Refused: an empty or None path, a directory, a missing or unwritable folder, anything that is not a
    regular file (a FIFO, a device: writing would block or leak), a symbolic link (writing would go
    through it to a file refsam never saw) and an existing file ``ours`` does not recognise as one refsam
    wrote. ``force`` lifts the last two refusals only: the link itself (not its target) is then replaced.
    Called before the work, not after. Returns the path as a str.
    """
    if path is None or (isinstance(path, str) and not path.strip()):
        raise InvalidInputError(f"`{argument}` must be a file name, got {path!r}")
    try:
        where = os.fspath(path)
    except TypeError:
        raise InvalidInputError(f"`{argument}` must be a path (str or os.PathLike), got "
                                f"{type(path).__name__}") from None
    if isinstance(where, bytes):
        where = os.fsdecode(where)
    if os.path.isdir(where) and not os.path.islink(where):
        raise InvalidInputError(f"cannot write {where!r}: it is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(where))
    if not os.path.isdir(folder):
        raise InvalidInputError(f"cannot write {where!r}: the folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise InvalidInputError(f"cannot write {where!r}: the folder {folder!r} is not writable")
    try:
        info = os.lstat(where)
    except FileNotFoundError:
        return where
    except OSError as exc:
        raise InvalidInputError(f"cannot write {where!r}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode):
        if not force:
            raise InvalidInputError(f"refusing to write {where!r}: it is a symbolic link (writing would go "
                                    f"through it); remove it, choose another name, or pass --force / "
                                    f"force=True to replace the link itself")
        return where
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInputError(f"cannot write {where!r}: it is not a regular file (a FIFO, socket or "
                                f"device); choose another name")
    if not force and ours is not None and not ours(where):
        raise InvalidInputError(f"refusing to overwrite {where!r}: refsam did not write it; choose "
                                f"another name, or pass --force / force=True")
    return where


def write_atomically(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Write a file whole or not at all: ``write(fh)`` fills a temporary file beside ``path``, which is
    flushed to disk and then renamed onto ``path`` (``os.replace``, atomic on POSIX and Windows).

    Two processes writing one path leave one complete file (the last rename wins), never a mixture; a
    crash or an exception leaves the old file (or none) and no temporary file. A symbolic link at
    ``path`` is replaced, never written through. Check the target first with `check_target()`.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; a normal file follows the umask
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
