"""One builder per index folder: an exclusive lock file beside the output, held for a whole build.

Two builders writing one output (two bot replicas starting on a fresh volume, or ``make run``
beside ``build_index.py``) would share the checkpoint folder and mix each other's chunks. The
lock is ``flock`` on ``.<out>.lock`` in the output's parent folder: the kernel drops it when its
holder exits or is killed, so a crashed build never leaves a stale lock behind. The file is
removed by its holder on release; a waiter that then wins the lock on the removed file notices
(the path no longer names the file it locked) and tries again, so two holders are impossible.
The lock file is opened without following symlinks and must be a plain file with no other hard
links: the holder truncates it and writes its pid, so a planted ``.<out>.lock`` link must never
make it overwrite the file the link points to.

Re-entrant within one thread (the bot holds the lock while it decides, then calls
``build_index``, which takes it again); other threads and processes are excluded alike.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import LockBusyError, LockFileError

_POLL_SECONDS = 0.1


def _open_lock_file(lock_path: Path) -> int:
    """Open (creating) the lock file itself, never what a symlink or hard link at its path leads to."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LockFileError(lock_path, "is a symbolic link") from None
        raise
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a plain file"
    elif info.st_nlink > 1:
        problem = f"is a plain file with {info.st_nlink} hard links"
    if problem:
        os.close(fd)
        raise LockFileError(lock_path, problem)
    return fd


_held: dict[str, tuple[int, int]] = {}  # lock path → (owning thread, depth)
_held_guard = threading.Lock()


def lock_path_for(out_dir: Path) -> Path:
    """``.<out>.lock`` beside ``out_dir`` (inside it would be swapped away with the old index)."""
    return out_dir.with_name(f".{out_dir.name}.lock")


def _holder_pid(lock_path: Path) -> int | None:
    """The pid its holder wrote into the lock file, for the message (None if unknown)."""
    try:
        pid = lock_path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(pid) if pid.isdigit() else None


def _try_lock(fd: int, blocking: bool) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _still_named(fd: int, lock_path: Path) -> bool:
    """Whether ``lock_path`` still names the file we locked (its holder may have removed it)."""
    try:
        named = os.stat(lock_path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)


def _acquire(lock_path: Path, wait: float | None, on_wait: Callable[[], None] | None) -> int:
    deadline = None if wait is None else time.monotonic() + wait
    told = False
    while True:
        fd = _open_lock_file(lock_path)
        try:
            locked = _try_lock(fd, blocking=False)
            while not locked:
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockBusyError(lock_path, _holder_pid(lock_path))
                if on_wait is not None and not told:
                    on_wait()
                told = True
                if deadline is None:
                    locked = _try_lock(fd, blocking=True)
                else:
                    time.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
                    locked = _try_lock(fd, blocking=False)
            if _still_named(fd, lock_path):
                os.ftruncate(fd, 0)
                os.write(fd, str(os.getpid()).encode("ascii"))
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # we locked a file its holder had already removed: try again


@contextmanager
def build_lock(
    out_dir: str | os.PathLike[str],
    *,
    wait: float | None = 0.0,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[Path]:
    """Hold the exclusive build lock of ``out_dir`` (whose parent folder must exist).

    ``wait``: seconds to wait for another holder (``None``: as long as it takes; ``0``: not at
    all); when the time is up, :class:`LockBusyError`. ``on_wait()`` is called once, when
    the lock turns out to be taken, so the caller can say why nothing seems to happen.
    Yields the lock file's path.
    """
    out_dir = Path(out_dir).resolve()
    lock_path = lock_path_for(out_dir)
    key = str(lock_path)
    me = threading.get_ident()
    with _held_guard:
        owner, depth = _held.get(key, (None, 0))
        if owner == me:
            _held[key] = (me, depth + 1)
    if owner == me:
        try:
            yield lock_path
        finally:
            with _held_guard:
                _held[key] = (me, depth)
        return
    fd = _acquire(lock_path, wait, on_wait)
    with _held_guard:
        _held[key] = (me, 1)
    try:
        yield lock_path
    finally:
        with _held_guard:
            _held.pop(key, None)
        try:
            lock_path.unlink()  # while still holding it: see the module docstring
        except OSError:
            pass
        os.close(fd)
