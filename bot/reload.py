"""Serving a rebuilt catalogue without a restart: the index folder watched, SIGHUP, and ``/reload``.

``lookalike-build-index`` (a full build or ``--update``) swaps a finished index in with renames.
The bot notices (``manifest.json`` is another file; checked every ``INDEX_CHECK_SECONDS``) or is
told (SIGHUP, an admin's ``/reload``), loads the new index beside the old one on a thread, and
swaps it into the inference service between batches: photos already taken finish on the index
that took them, later ones go to the new one, so no answer mixes the two. A "Next 5" button from
before says the search has expired (the new index's rows are other products). An index that
fails to load is logged, and the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from recommender import LookalikeError, Recommender

from .context import BotRuntime

log = logging.getLogger(__name__)

#: Seconds before the replaced index's search backend is closed (answers still using it finish first).
CLOSE_REPLACED_AFTER_S = 60.0


def index_stamp(index_dir: Path) -> tuple[int, int] | None:
    """What changes when a build swaps a new index in: the manifest's inode and modification time."""
    try:
        stat = os.stat(index_dir / "manifest.json")
    except OSError:  # between a swap's two renames, or gone: look again later
        return None
    return stat.st_ino, stat.st_mtime_ns


class IndexReloader:
    """Loads the index again when it changed, or when asked, and swaps it in (one reload at a time)."""

    def __init__(self, index_dir: Path, runtime: BotRuntime, load: Callable[[], Recommender]) -> None:
        self.index_dir = index_dir
        self.runtime = runtime
        self.load = load
        self.stamp = index_stamp(index_dir)
        self._lock = asyncio.Lock()
        self._watching: asyncio.Task[None] | None = None

    def changed(self) -> bool:
        stamp = index_stamp(self.index_dir)
        return stamp is not None and stamp != self.stamp

    async def reload(self, why: str) -> str:
        """Load and serve the index as it is now; returns the line it logged (for ``/reload``)."""
        async with self._lock:
            stamp = index_stamp(self.index_dir)
            loop = asyncio.get_running_loop()
            try:
                fresh = await loop.run_in_executor(None, self.load)
            except LookalikeError as exc:
                line = f"Could not reload the index ({why}): {exc} Still serving the previous one."
                log.error("%s", line)
                return line
            inference = self.runtime.inference
            old = inference.recommender
            before, after = set(old.index.ids() if old.index else ()), set(fresh.index.ids() if fresh.index else ())
            generation = inference.swap(fresh)
            self.runtime.catalogue_size = len(fresh)
            self.runtime.metrics.index_products.set(len(fresh))
            self.stamp = stamp
            line = (
                f"Index reloaded ({why}): {len(fresh)} products, {len(after - before)} added, {len(before - after)} removed "
                f"(generation {generation}, search {fresh.manifest.backend})."
            )
            log.info("%s", line)
            close = getattr(old.searcher, "close", None)
            if callable(close):  # a Milvus connection: closed once answers still using it are done
                loop.call_later(CLOSE_REPLACED_AFTER_S, close)
            return line

    def watch(self, every: float) -> None:
        """Check the index folder every ``every`` seconds (on the running loop) and reload on a change."""

        async def loop_forever() -> None:
            while True:
                await asyncio.sleep(every)
                if self.changed():
                    await self.reload("the index changed")

        self._watching = asyncio.get_running_loop().create_task(loop_forever(), name="index-watch")

    def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            self._watching = None
