"""Writing files into a directory that others may also write to (`generate --out`,
`certs --out`): never through a symlink or into a file this process did not create.

The data goes into a temporary file that mkstemp creates in the target directory
(O_CREAT | O_EXCL | O_NOFOLLOW, a random name, mode 0600 until the final mode is set on
the descriptor), then is renamed over the target. rename() replaces whatever is at the
target name - a symlink included - instead of writing through it, and a reader (a
server hot-reloading its certificate, `kubectl apply`) sees the old file or the new
one, never half of one.
"""
from __future__ import annotations

import os
import stat
import tempfile


def replace_file(path: str, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` with exactly ``mode`` (umask notwithstanding),
    atomically replacing what is there (a file or a symlink, never followed)."""
    directory, name = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=directory or ".", prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def create_file(path: str, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file ``path`` with exactly ``mode``; FileExistsError when
    anything - a file, a directory, a symlink even to nowhere - has that name already.
    The mode is set at creation: the file is never readable by others, not for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def read_own_file(path: str, limit: int) -> bytes | None:
    """The first ``limit`` bytes of a regular file at ``path``; None for a symlink, a FIFO,
    a device or anything unreadable (what we look into must be a file, not a way out)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        return fh.read(limit)


def write_output(path: str, data: bytes, mode: int) -> None:
    """Write a file the user names for a command's output (`simulate --dot FILE`). A pipe or
    a terminal already there (`/dev/stdout`, `>(dot -Tsvg)`) is written to; anything else is
    replaced as replace_file does, so a symlink planted at FILE never leads the write into
    another file. Opened without O_CREAT or O_TRUNC (a regular file is left as it is until
    it is replaced) and non-blocking (a FIFO nobody reads is replaced, not waited on)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        fd = -1
    if fd >= 0:
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
                os.set_blocking(fd, True)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                return
        finally:
            os.close(fd)
    replace_file(path, data, mode)
