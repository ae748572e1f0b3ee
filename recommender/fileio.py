"""File helpers shared by every writer: atomic files, JSON, directory swaps, timestamps.

Nothing here knows what an index is; the index, the build checkpoint and the bot's caches all
write through these so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` complete (fsync + ``os.replace``) or not at all.

    Each call writes its own temporary file, so threads or processes writing the same path at
    once never write into one another's.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (never half-written)."""
    with atomic_file(path) as handle:
        handle.write(json.dumps(data, indent=2, ensure_ascii=False).encode())


def utc_timestamp() -> str:
    """When something was written, as ISO 8601 UTC."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def os_error_text(exc: OSError) -> str:
    """An OSError for an operator: what went wrong, and on which file."""
    return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")


def temporary_sibling(directory: Path, tag: str) -> Path:
    """A hidden, unused name beside ``directory`` (same filesystem, so renames are atomic)."""
    return directory.with_name(f".{directory.name}.{tag}-{os.getpid()}-{int(time.time() * 1000)}")


def swap_into_place(staging: Path, target: Path) -> None:
    """Replace ``target`` by the fully written ``staging`` directory.

    The old directory is renamed aside first and removed only after the new one is in place, so
    something is always present except for the instant between two renames. When the second
    rename fails (``OSError``, re-raised), the old one is renamed back: a failed swap changes nothing.
    """
    old: Path | None = None
    if target.exists():
        old = temporary_sibling(target, "old")
        os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
