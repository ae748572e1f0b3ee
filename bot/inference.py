"""Run the recommender off the event loop, batching concurrent shoppers into one forward pass.

Decoding runs on a small pool of its own, one thread per core (at most 4): it is CPU-bound, so more
threads would not finish sooner, only hold more large photos in memory at once. The model runs on
one dedicated thread that takes every request waiting at that moment as one batch: a batch of many
shoppers costs far less than as many batches of one, and the event loop never blocks on the model.
The batch's first pages are searched there too, in one call: one pass over the catalogue's vectors
(memory-bound) serves every shopper of the batch. With an index that finds exact items
(recommender/exact_match.py) a photo's crops share that forward pass, its keypoints are found on
the decoding pool meanwhile (the forward pass does not wait for SIFT), and each photo's
verification (its shortlist's keypoints matched against its own) then runs on the decoding pool,
so the model thread goes straight on to the next batch. A verification waits for its photo's
keypoints: they were asked of the pool before the verification was, and the pool starts its work
in order, so they are being found on another of its threads, or are ready.

The search's matrix products run on one BLAS thread: OpenBLAS's own pool spins between calls
and took a core from the model and the decoders (measured: the bot's CPU time for 20 photos one
after another fell from 2.3 s to 1.25 s). A large catalogue's search projection
(:meth:`recommender.search.ExactSearcher.prepare_projection`) is built on a thread of its own
after start-up; searches use it from the moment it is ready.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from threadpoolctl import threadpool_limits

from recommender import ImageDecodeError, Match, Query, QueryPhoto, Recommender, ShortlistQuery
from recommender.errors import ExpiredSearchError, FilterError, SearchUnavailableError
from recommender.filters import CanonicalWhere, Where, canonical

log = logging.getLogger(__name__)


class Answer(NamedTuple):
    """What a photo gets back: its query, its first page when it asked for one, and the generation of
    the index that answered (a "Next 5" button carries it: a reloaded index's rows are other products)."""

    query: Query
    page: list[Match]
    generation: int



@dataclass
class _Request:
    photo: QueryPhoto
    future: asyncio.Future[Answer]
    loop: asyncio.AbstractEventLoop
    #: the index generation that prepared the photo, and must embed and search it
    recommender: Recommender
    generation: int
    #: matches wanted on the first page (0: the vector only)
    page_size: int = 0
    #: the shopper's filter for the first page (the photo's caption words)
    where: Where | None = None


class InferenceService:
    """``await embed_photo(bytes)`` → query; ``await page(query, offset, size)`` → one page of matches."""

    def __init__(self, recommender: Recommender, max_batch: int = 16) -> None:
        #: the index served now and its generation (1, then +1 per reload), swapped together by :meth:`swap`
        self._served: tuple[Recommender, int] = (recommender, 1)
        self.max_batch = max_batch
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._decoders: ThreadPoolExecutor | None = None
        self._projection: threading.Thread | None = None
        self._blas_limit: threadpool_limits | None = None
        #: photos embedded and forward passes run, for the shutdown log (batching at work)
        self.images = 0
        self.batches = 0
        #: called with each forward pass's number of photos (the bot's metrics), on the inference thread
        self.on_batch: Callable[[int], None] | None = None

    @property
    def recommender(self) -> Recommender:
        return self._served[0]

    @property
    def generation(self) -> int:
        return self._served[1]

    def swap(self, recommender: Recommender) -> int:
        """Serve ``recommender`` from now on: photos already taken finish on the index that took them.
        Returns the new generation."""
        generation = self._served[1] + 1
        self._served = (recommender, generation)  # one assignment: readers see the old pair or the new
        if self._thread is not None:
            threading.Thread(target=self._prepare_projection, args=(recommender,), name="search-projection", daemon=True).start()
        return generation

    def start(self) -> None:
        if self._blas_limit is None:  # process-wide: the bot's only BLAS user is the search
            self._blas_limit = threadpool_limits(limits=1, user_api="blas")
        if self._projection is None and self.recommender.searcher is not None:
            self._projection = threading.Thread(target=self._prepare_projection, args=(self.recommender,), name="search-projection", daemon=True)
            self._projection.start()
        if self._decoders is None:
            self._decoders = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="decode")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the batch in progress, drop the photos still waiting (shutdown: nobody awaits them)."""
        if self._thread is not None:
            dropped = 0
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
                dropped += 1
            if dropped:
                log.info("Dropped %d photos waiting for the model at shutdown.", dropped)
            self._queue.put(None)
            self._thread.join(timeout=timeout)
            self._thread = None
        if self._decoders is not None:
            self._decoders.shutdown(wait=False, cancel_futures=True)
            self._decoders = None
        if self._blas_limit is not None:
            self._blas_limit.restore_original_limits()
            self._blas_limit = None

    def _prepare_projection(self, recommender: Recommender) -> None:
        searcher = recommender.searcher
        started = time.perf_counter()
        try:
            if searcher is not None and searcher.prepare_projection():
                log.info("Search projection ready in %.1fs: %d products searched exactly from a short first pass.", time.perf_counter() - started, searcher.size)
        except Exception:  # the full search keeps working; only the speed-up is lost
            log.exception("Could not build the search projection; searching every vector in full.")

    async def embed_photo(self, data: bytes | bytearray) -> Query:
        """The query of one photo's file bytes (``ImageDecodeError`` for unusable images)."""
        return (await self.embed_and_page(data, 0)).query

    async def embed_and_page(self, data: bytes | bytearray, size: int = 5, where: Where | None = None) -> Answer:
        """The query of one photo and its ``size`` best matches among those passing ``where``, searched with its batch."""
        loop = asyncio.get_running_loop()
        recommender, generation = self._served
        photo = await loop.run_in_executor(self._decoders, functools.partial(recommender.prepare, data, keypoints_on=self._decoders))
        future: asyncio.Future[Answer] = loop.create_future()
        self._queue.put(_Request(photo, future, loop, recommender, generation, size, where))
        return await future

    async def page(
        self, query: Query, offset: int = 0, size: int = 5, generation: int | None = None, where: Where | None = None
    ) -> list[Match]:
        """The ``size`` products most similar to ``query`` after the first ``offset`` (fewer at the end) among
        those passing ``where``; :class:`ExpiredSearchError` when ``generation`` (the index that answered the
        photo) is no longer served."""
        recommender, serving = self._served
        if generation is not None and generation != serving:
            raise ExpiredSearchError(f"index generation {generation} was replaced by {serving}")
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(None, recommender.answer, [query], size, offset, where)
        return results[0]

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            photos_per_batch = self._photos_per_batch()
            while len(batch) < photos_per_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(item)
            for group in _by_index(batch):
                self._embed_and_search(group)

    def _embed_and_search(self, batch: list[_Request]) -> None:
        """One forward pass and search for photos that one index generation took."""
        recommender, generation = batch[0].recommender, batch[0].generation
        try:
            embedded, shortlist_queries = recommender.embed_photos([request.photo for request in batch])
            # Copies, not row views: a kept vector must not keep its whole batch alive.
            vectors = [vector.copy() for vector in embedded]
            if recommender.finds_exact_items and self._decoders is not None:
                for request, vector, asked in zip(batch, vectors, shortlist_queries):
                    self._decoders.submit(self._verify_and_deliver, request, vector, asked)
                pages = None
            else:
                pages = self._first_pages(recommender, batch, vectors)
        except SearchUnavailableError as exc:  # a Milvus server away: the shoppers are asked to retry, no traceback
            log.warning("Search unavailable for a batch of %d: %s", len(batch), exc)
            for request in batch:
                _deliver(request, _set_exception, exc)
            return
        except Exception as exc:
            log.exception("inference failed for a batch of %d", len(batch))
            for request in batch:
                _deliver(request, _set_exception, exc)
            return
        self.batches += 1
        self.images += len(batch)
        if self.on_batch is not None:
            self.on_batch(len(batch))
        if pages is not None:
            for request, vector, page in zip(batch, vectors, pages):
                _deliver(request, _set_result, Answer(Query(vector), page, generation))

    @property
    def running(self) -> bool:
        """The inference thread is alive (for /healthz)."""
        return self._thread is not None and self._thread.is_alive()

    def _photos_per_batch(self) -> int:
        """Photos per forward pass: with exact-item search each brings its crops, and the pass stays at
        about ``max_batch`` images (a larger pass grows ONNX Runtime's memory, not its speed)."""
        return max(1, self.max_batch // (1 + self.recommender.crops_per_photo))

    def _verify_and_deliver(self, request: _Request, vector: np.ndarray, shortlist_queries: ShortlistQuery | None) -> None:
        """One photo's exact-item verification and first page, on the decoding pool."""
        try:
            recommender = request.recommender
            query = recommender.verify(request.photo, vector, shortlist_queries)  # the query keeps only its vector (a copy)
            page = recommender.answer([query], request.page_size, 0, request.where)[0] if request.page_size > 0 else []
        except ImageDecodeError as exc:  # its keypoints ran out of memory: the shopper is asked to retry, no traceback
            log.warning("A photo's keypoints failed: %s", exc)
            _deliver(request, _set_exception, exc)
            return
        except SearchUnavailableError as exc:
            log.warning("Search unavailable: %s", exc)
            _deliver(request, _set_exception, exc)
            return
        except Exception as exc:
            log.exception("exact-item verification failed")
            _deliver(request, _set_exception, exc)
            return
        _deliver(request, _set_result, Answer(query, page, request.generation))

    def _first_pages(self, recommender: Recommender, batch: list[_Request], vectors: list[np.ndarray]) -> list[list[Match]]:
        """Every request's first page from one search over the batch's vectors (one per filter in the batch)."""
        by_filter: dict[CanonicalWhere, list[int]] = {}
        for position, request in enumerate(batch):
            if request.page_size > 0:
                by_filter.setdefault(canonical(request.where), []).append(position)
        pages: list[list[Match]] = [[] for _ in batch]
        for wanted in by_filter.values():
            size = max(batch[position].page_size for position in wanted)
            where = batch[wanted[0]].where
            try:
                found = recommender.matches(np.stack([vectors[p] for p in wanted]), size, 0, where)
            except FilterError as exc:  # a column the reloaded catalogue lacks: nothing passes
                log.warning("A shopper's filter does not fit the catalogue: %s", exc)
                continue
            for position, matches in zip(wanted, found):
                pages[position] = matches[: batch[position].page_size]
        return pages


def _by_index(batch: list[_Request]) -> list[list[_Request]]:
    """The batch split by the index generation that took each photo (one group, but around a reload)."""
    groups: dict[int, list[_Request]] = {}
    for request in batch:
        groups.setdefault(request.generation, []).append(request)
    return list(groups.values())


def _deliver(request: _Request, setter: Callable[[asyncio.Future[Answer], Any], None], value: Any) -> None:
    try:
        request.loop.call_soon_threadsafe(setter, request.future, value)
    except RuntimeError:  # the loop closed (shutdown) while this batch ran: nobody is waiting
        pass


def _set_result(future: asyncio.Future[Answer], value: Answer) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Answer], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
