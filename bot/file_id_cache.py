"""Remember Telegram ``file_id``s of catalogue photos already uploaded, across restarts.

Re-sending by ``file_id`` costs Telegram a lookup instead of an upload: faster albums, less
bandwidth. ``file_id``s belong to one bot, so the cache records the bot id and starts empty for
another. Entries are keyed by product id plus the photo's size and mtime, so a replaced photo is
uploaded afresh. Disk I/O goes through aiofiles and writes are atomic (temp file + rename).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import aiofiles
import aiofiles.os

log = logging.getLogger(__name__)


class FileIdCache:
    def __init__(self, path: Path, bot_id: int) -> None:
        self.path = path
        self.bot_id = bot_id
        self._files: dict[str, str] = {}
        self._dirty = False
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._files)

    async def load(self) -> None:
        try:
            async with aiofiles.open(self.path, encoding="utf-8") as handle:
                data = json.loads(await handle.read())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("Ignoring unreadable file_id cache %s (%s); photos will be uploaded again.", self.path, exc)
            return
        if isinstance(data, dict) and data.get("bot_id") == self.bot_id and isinstance(data.get("files"), dict):
            self._files = {str(k): str(v) for k, v in data["files"].items()}

    @staticmethod
    async def key_for(product_id: str, image_path: Path) -> str:
        stat = await aiofiles.os.stat(image_path)
        return f"{product_id}:{stat.st_size}:{stat.st_mtime_ns}"

    def get(self, key: str) -> str | None:
        return self._files.get(key)

    def put(self, key: str, file_id: str) -> None:
        if self._files.get(key) != file_id:
            self._files[key] = file_id
            self._dirty = True

    def forget(self, key: str) -> None:
        if self._files.pop(key, None) is not None:
            self._dirty = True

    async def save(self) -> None:
        """Write the cache if it changed (one writer at a time, atomically)."""
        async with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            payload = json.dumps({"bot_id": self.bot_id, "files": dict(self._files)}, indent=0)
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            try:
                await aiofiles.os.makedirs(self.path.parent, exist_ok=True)
                async with aiofiles.open(tmp, "w", encoding="utf-8") as handle:
                    await handle.write(payload)
                    await handle.flush()
                await aiofiles.os.replace(tmp, self.path)
            except OSError as exc:
                self._dirty = True
                log.warning("Could not save the file_id cache to %s: %s", self.path, exc)
