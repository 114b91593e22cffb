"""Files and directories only the broker's user may read: the data directory, the SQLite files.

A directory or file that group or other users can read is tightened when the broker's user
owns it, and refused (:class:`InsecureStorage`) when it does not: the
broker cannot make it private, and running with it readable would expose the store.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from valetkey.errors import ValetkeyError

__all__ = ["InsecureStorage", "ensure_private_dir", "ensure_private_file", "tighten"]


class InsecureStorage(ValetkeyError):
    """A data directory or database file other users can read, which the broker cannot make private."""

    code = "insecure_storage"
    status = 500
    remedy = "Make the data directory 0700 and its files 0600, owned by the broker's user."


_OPEN_TO_OTHERS = 0o077


def tighten(path: Path, mode: int) -> None:
    """Give ``path`` ``mode`` if group or other users have any access to it; refuse if not ours."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        info = path.stat()
    if not info.st_mode & _OPEN_TO_OTHERS:
        return
    what = "directory" if stat.S_ISDIR(info.st_mode) else "file"
    current = f"{stat.S_IMODE(info.st_mode):o}"
    if info.st_uid != os.geteuid():
        raise InsecureStorage(
            f"the {what} {path} has mode {current} and belongs to another user: other users "
            f"can read it and the broker cannot change that; fix it with: chmod {mode:o} {path}",
            path=str(path),
        )
    try:
        os.chmod(path, mode)
    except OSError as exc:
        raise InsecureStorage(
            f"the {what} {path} has mode {current} and could not be made {mode:o} "
            f"({exc.strerror}); fix it with: chmod {mode:o} {path}",
            path=str(path),
        ) from exc


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700), or tighten an existing one to 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    tighten(path, 0o700)


def ensure_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists; tighten an existing one to 0600."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        tighten(path, 0o600)
    else:
        os.close(fd)
