"""Remember Telegram ``file_id``s of catalogue photos already uploaded, across restarts.

Re-sending by ``file_id`` costs Telegram a lookup instead of an upload: faster albums, less
bandwidth. ``file_id``s belong to one bot, so the cache records the bot id and starts empty for
another. Keys are product id plus the photo's size and mtime, so a replaced photo is uploaded
afresh, and the cache keeps one entry per product: the replaced photo's entry is dropped.

On disk: a snapshot (``{"bot_id": ..., "files": {key: file_id}}``, the format earlier versions
wrote and read) plus a journal next to it (``<name>.journal``, JSON lines: a ``{"bot_id": ...}``
header, then ``{"put": key, "file_id": ...}`` or ``{"forget": key}``). A save appends the album's
few changes to the journal; now and then (journal longer than half the entries, or the snapshot
missing, foreign or damaged) the snapshot is rewritten atomically and the journal removed. All
file work runs in a worker thread, one save at a time, so the event loop only queues changes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import aiofiles.os

from recommender.fileio import atomic_file

log = logging.getLogger(__name__)

#: The journal is folded into the snapshot once it holds more lines than this or half the entries.
COMPACT_MIN_LINES = 1024
#: Entries encoded per json call when the snapshot is rewritten.
SNAPSHOT_SLICE = 500

# product id -> (photo stamp "size:mtime_ns", file_id)
_Entries = dict[str, tuple[str, str]]


def _split(key: str) -> tuple[str, str]:
    """``"<product>:<size>:<mtime_ns>"`` -> (product, "size:mtime_ns")."""
    parts = key.rsplit(":", 2)
    return (parts[0], f"{parts[1]}:{parts[2]}") if len(parts) == 3 else (key, "")


def _key(product: str, stamp: str) -> str:
    return f"{product}:{stamp}" if stamp else product


def _put(entries: _Entries, key: str, file_id: str) -> bool:
    product, stamp = _split(key)
    if entries.get(product) == (stamp, file_id):
        return False
    entries[product] = (stamp, file_id)  # replaces the entry of an earlier version of the photo
    return True


def _forget(entries: _Entries, key: str) -> bool:
    product, stamp = _split(key)
    current = entries.get(product)
    if current is None or current[0] != stamp:
        return False
    del entries[product]
    return True


@dataclass
class _Loaded:
    entries: _Entries = field(default_factory=dict)
    journal_lines: int = 0
    needs_compaction: bool = False


class FileIdCache:
    def __init__(self, path: Path, bot_id: int) -> None:
        self.path = path
        self.journal = path.with_name(path.name + ".journal")
        self.bot_id = bot_id
        self._entries: _Entries = {}
        #: lookups that found a usable file_id, and those that did not (an upload follows), for /metrics
        self.hits = 0
        self.misses = 0
        self._pending: list[str] = []  # journal lines not yet written
        self._journal_lines = 0
        self._needs_compaction = True  # until a snapshot of this bot is known to exist
        self._lock = asyncio.Lock()
        self._io_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    async def load(self) -> None:
        """Read snapshot and journal (in a worker thread); unreadable parts are ignored, never fatal."""
        loaded = await asyncio.to_thread(self._read)
        self._entries = loaded.entries
        self._journal_lines = loaded.journal_lines
        self._needs_compaction = loaded.needs_compaction
        self._pending.clear()

    @staticmethod
    async def key_for(product_id: str, image_path: Path) -> str:
        stat = await aiofiles.os.stat(image_path)
        return f"{product_id}:{stat.st_size}:{stat.st_mtime_ns}"

    def get(self, key: str) -> str | None:
        product, stamp = _split(key)
        entry = self._entries.get(product)
        found = entry[1] if entry is not None and entry[0] == stamp else None
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: str, file_id: str) -> None:
        if _put(self._entries, key, file_id):
            self._pending.append(json.dumps({"put": key, "file_id": file_id}, ensure_ascii=False))

    def forget(self, key: str) -> None:
        if _forget(self._entries, key):
            self._pending.append(json.dumps({"forget": key}, ensure_ascii=False))

    async def save(self) -> None:
        """Write what changed (appended to the journal, or a fresh snapshot now and then), off the loop."""
        async with self._lock:
            if not self._pending and not (self._needs_compaction and self._entries):
                return
            lines, self._pending = self._pending, []
            compact = self._needs_compaction or self._journal_lines + len(lines) > max(COMPACT_MIN_LINES, len(self._entries) // 2)
            try:
                if compact:
                    snapshot = dict(self._entries)  # tuples are shared: a cheap copy for the thread
                    await asyncio.to_thread(self._write_snapshot, snapshot)
                    self._journal_lines = 0
                    self._needs_compaction = False
                else:
                    await asyncio.to_thread(self._append, lines)
                    self._journal_lines += len(lines)
            except OSError as exc:
                self._needs_compaction = True  # the entries in memory are right: rewrite them next time
                log.warning("Could not save the file_id cache to %s: %s", self.path, exc)

    # ---------------------------------------------------------------- worker-thread side
    def _read(self) -> _Loaded:
        loaded = _Loaded()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = None
            loaded.needs_compaction = True
        except (OSError, ValueError) as exc:
            log.warning("Ignoring unreadable file_id cache %s (%s); photos will be uploaded again.", self.path, exc)
            data = None
            loaded.needs_compaction = True
        if isinstance(data, dict) and data.get("bot_id") == self.bot_id and isinstance(data.get("files"), dict):
            for key, file_id in data["files"].items():
                _put(loaded.entries, str(key), str(file_id))
            # Files of earlier versions kept one entry per photo version: keep only the last of each product.
            loaded.needs_compaction |= len(loaded.entries) != len(data["files"])
        elif data is not None:
            loaded.needs_compaction = True  # another bot's cache (or not a cache): replace it
        self._replay(loaded)
        return loaded

    def _replay(self, loaded: _Loaded) -> None:
        try:
            text = self.journal.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("Ignoring unreadable file_id journal %s (%s).", self.journal, exc)
            loaded.needs_compaction = True
            return
        lines = text.splitlines()
        if text and not text.endswith("\n"):
            loaded.needs_compaction = True  # a torn last write: fold what is readable into a snapshot
        for n, line in enumerate(lines):
            try:
                record = json.loads(line)
            except ValueError:
                loaded.needs_compaction = True
                continue
            if not isinstance(record, dict):
                continue
            if n == 0:
                if record.get("bot_id") != self.bot_id:
                    loaded.needs_compaction = True
                    return
                continue
            if isinstance(record.get("put"), str) and isinstance(record.get("file_id"), str):
                _put(loaded.entries, record["put"], record["file_id"])
            elif isinstance(record.get("forget"), str):
                _forget(loaded.entries, record["forget"])
        loaded.journal_lines = max(0, len(lines) - 1)

    def _write_snapshot(self, entries: _Entries) -> None:
        with self._io_lock:
            self._write_snapshot_locked(entries)

    def _write_snapshot_locked(self, entries: _Entries) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.path) as handle:
            handle.write(f'{{"bot_id":{json.dumps(self.bot_id)},"files":{{'.encode())
            # Encoded in slices: json's C encoder holds the GIL for a whole call, and one call over
            # a large cache would stall the event loop's thread.
            items = list(entries.items())
            for start in range(0, len(items), SNAPSHOT_SLICE):
                files = {_key(product, stamp): file_id for product, (stamp, file_id) in items[start : start + SNAPSHOT_SLICE]}
                handle.write((("," if start else "") + json.dumps(files, ensure_ascii=False, separators=(",", ":"))[1:-1]).encode())
            handle.write(b"}}")
        # The snapshot holds everything the journal said; a crash before this unlink only replays it again.
        self.journal.unlink(missing_ok=True)

    def _append(self, lines: list[str]) -> None:
        with self._io_lock:  # a save cancelled mid-write may leave its thread running: never two writers
            self.path.parent.mkdir(parents=True, exist_ok=True)
            header = [] if self.journal.exists() else [json.dumps({"bot_id": self.bot_id})]
            with open(self.journal, "a", encoding="utf-8") as handle:
                handle.write("".join(f"{line}\n" for line in header + lines))
