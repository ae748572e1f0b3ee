"""Approximate nearest-neighbour search with faiss, for catalogues too large to scan (``--backend ann``).

An inverted-file index (IVF) splits the catalogue into ``nlist`` clusters of similar vectors; a
query scans only the ``nprobe`` clusters nearest to it, over 8-bit scalar-quantised codes (a
quarter of the vectors' memory). The best ``rerank`` candidates are then re-scored exactly from
``vectors.npy`` (memory-mapped: only those rows are read), which lifts recall above the
quantisation's cap and gives the same similarities as the exact search.

Files in the index directory (no pickle)::

    ann.faiss      the faiss index; its ids stay stable across --update, they are not row numbers
    ann_rows.npy   int64, the product row of each faiss id (-1: a product an update removed)

Filters (``allowed``, a mask over the rows): a narrow filter (at most ``exact_below`` products pass)
is searched exactly over the rows that pass; a wider one goes through faiss with an id selector and
proportionally more clusters probed, and a query it leaves short is answered exactly: a filter
never costs recall.
"""

from __future__ import annotations

import math
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .errors import IndexCorruptError, NotLoadedError
from .filters import CanonicalWhere
from .manifest import ANN_BACKEND
from .search import drop_excluded, no_rows, search_request, top_k

ANN_FILE = "ann.faiss"
ANN_ROWS = "ann_rows.npy"
#: the faiss index family: inverted lists over 8-bit scalar-quantised codes, inner product (cosine on unit vectors)
CODES = "SQ8"
#: vectors added per faiss call, so a huge memory-mapped catalogue is read in bounded steps
_ADD_BLOCK = 65_536
#: k-means wants at least 39 training points per cluster (faiss warns below); we train on up to 64
_TRAIN_PER_LIST = 64
#: a filter that lets at most this many products pass is searched exactly over them (a few ms at most)
EXACT_BELOW = 20_000
#: an update that leaves the catalogue this many times larger or smaller than what trained the clusters trains again
RETRAIN_FACTOR = 4


@dataclass(frozen=True)
class AnnSettings:
    """The index's parameters; :meth:`for_count` picks them from the catalogue size (measured in
    ``benchmarks/scale.py``), and the build's ``--ann-nlist`` / ``--ann-nprobe`` override them."""

    nlist: int
    nprobe: int
    #: candidates per query re-scored exactly from the stored vectors (0: the quantised scores stand)
    rerank: int = 32

    @classmethod
    def for_count(cls, count: int, *, nlist: int | None = None, nprobe: int | None = None, rerank: int | None = None) -> AnnSettings:
        """About 4·sqrt(count) clusters (a power of two, with enough products per cluster to train
        on); probe 1/128 of them, at least 32 (benchmarks/scale.py: 20,000 products, 512 clusters, 8
        probed gave recall@5 0.958, 16 0.982; 1M products, 4096 clusters: see the README)."""
        if nlist is None:
            nlist = 2 ** round(math.log2(max(4 * math.sqrt(max(count, 1)), 1)))
            while nlist > 1 and nlist * 39 > count:
                nlist //= 2
        nlist = max(1, min(nlist, count))
        if nprobe is None:
            nprobe = max(32, nlist // 128)
        settings = cls(nlist=nlist, nprobe=max(1, min(nprobe, nlist)), rerank=cls.rerank if rerank is None else rerank)
        return settings

    def to_json(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self.nprobe, "rerank": self.rerank}

    @classmethod
    def from_json(cls, data: Any) -> AnnSettings:
        return cls(nlist=int(data["nlist"]), nprobe=int(data["nprobe"]), rerank=int(data.get("rerank", cls.rerank)))


@dataclass
class AnnIndex:
    """A faiss index plus the row of each of its ids; what :func:`build` and :func:`update` make."""

    index: faiss.Index
    #: product row of each faiss id, -1 for ids whose product is gone
    rows: np.ndarray
    settings: AnnSettings
    #: how many products trained the clusters (an update that changes the size a lot trains again)
    trained_on: int

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def describe(self) -> dict[str, Any]:
        """The manifest's ``search`` entry."""
        return {
            "backend": ANN_BACKEND, "library": f"faiss {faiss.__version__}", "factory": f"IVF{self.settings.nlist},{CODES}",
            **self.settings.to_json(), "trained_on": self.trained_on, "file": ANN_FILE, "rows_file": ANN_ROWS,
        }  # fmt: skip

    def save(self, directory: Path) -> None:
        faiss.write_index(self.index, str(directory / ANN_FILE))
        np.save(directory / ANN_ROWS, self.rows.astype(np.int64), allow_pickle=False)

    @classmethod
    def load(cls, directory: Path, described: Any, count: int, dim: int, *, mmap: bool = True) -> AnnIndex:
        """Read and check the index files; :class:`IndexCorruptError` says what does not fit.

        ``mmap``: map the inverted lists instead of reading them, so a large index costs memory only
        for the clusters that queries touch (read-only; an update reads the file in full).
        """
        path = directory / ANN_FILE
        try:
            settings = AnnSettings.from_json(described)
            trained_on = int(described.get("trained_on", count))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IndexCorruptError(f"{directory / 'manifest.json'} describes its ann search malformed ({exc}). Rebuild the index.") from exc
        if not path.is_file():
            raise IndexCorruptError(f"The index at {directory} lacks {ANN_FILE}, which its manifest lists. Rebuild it.")
        try:
            flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
            index = faiss.read_index(str(path), flags)
            if mmap:
                # faiss maps the lists as OnDiskInvertedLists, which starts 32 prefetch threads per search
                # (4 ms of a 0.15 ms query): the pages are read when touched instead
                ivf: Any = faiss.extract_index_ivf(index)
                lists = faiss.downcast_InvertedLists(ivf.invlists)
                if hasattr(lists, "prefetch_nthread"):
                    lists.prefetch_nthread = 0
            rows = np.load(directory / ANN_ROWS, allow_pickle=False)
        except (RuntimeError, OSError, ValueError, EOFError) as exc:
            raise IndexCorruptError(f"The ann index at {path} is unreadable ({str(exc).strip().splitlines()[-1]}). Rebuild the index.") from exc
        if index.d != dim or index.ntotal != count or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexCorruptError(
                f"{path} holds {index.ntotal} vectors of {index.d} values; the index has {count} of {dim}. Rebuild the index."
            )
        if rows.dtype != np.int64 or rows.ndim != 1 or not _one_id_per_row(rows, count):
            raise IndexCorruptError(f"{directory / ANN_ROWS} does not map the ann ids onto the {count} products. Rebuild the index.")
        return cls(index=index, rows=rows, settings=settings, trained_on=trained_on)


def _one_id_per_row(rows: np.ndarray, count: int) -> bool:
    live = rows[rows >= 0]
    return len(live) == count and bool((live < count).all()) and bool((np.bincount(live, minlength=count) == 1).all())


def build(vectors: np.ndarray, settings: AnnSettings, *, seed: int = 0) -> AnnIndex:
    """Train the clusters on a seeded sample of ``vectors`` (unit float32 rows) and add them all; id = row."""
    count, dim = vectors.shape
    index = faiss.index_factory(dim, f"IVF{settings.nlist},{CODES}", faiss.METRIC_INNER_PRODUCT)
    sample = np.sort(np.random.default_rng(seed).choice(count, size=min(count, _TRAIN_PER_LIST * settings.nlist), replace=False))
    index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
    _add(index, vectors, np.arange(count, dtype=np.int64))
    return AnnIndex(index=index, rows=np.arange(count, dtype=np.int64), settings=settings, trained_on=count)


def update(
    earlier: AnnIndex, vectors: np.ndarray, earlier_row: np.ndarray, unchanged: bool, settings: AnnSettings | None = None
) -> tuple[AnnIndex, str]:
    """The index of an updated catalogue from the earlier one, and a line saying what was done.

    ``earlier_row[r]`` is the earlier row of new row ``r`` (-1: a new product). ``unchanged``: the
    kept products' vectors are what they were (no refinement or head re-learned them), so only the
    removed products leave and the new ones are added. Otherwise the clusters are kept and every
    vector is encoded again. A catalogue that grew or shrank ``RETRAIN_FACTOR`` times, or ``settings``
    (None: the earlier index's) with another ``nlist``, train the clusters again: a full build; another
    ``nprobe`` or ``rerank`` only changes how the kept clusters are searched.
    """
    count = len(vectors)
    if settings is not None and settings.nlist != earlier.settings.nlist:
        return build(vectors, settings), "clusters trained again (new settings)"
    if not earlier.trained_on / RETRAIN_FACTOR <= count <= earlier.trained_on * RETRAIN_FACTOR:
        return build(vectors, AnnSettings.for_count(count)), f"clusters trained again ({earlier.trained_on} products trained them, now {count})"
    if vectors.shape[1] != earlier.index.d:  # a refinement or head added or dropped: the clusters live in another space
        had = earlier.settings
        return build(vectors, AnnSettings.for_count(count, nlist=had.nlist, nprobe=had.nprobe, rerank=had.rerank)), (
            f"clusters trained again (vectors of {vectors.shape[1]} values, not {earlier.index.d})"
        )
    settings = settings or earlier.settings
    index = earlier.index
    if not unchanged:
        index.reset()  # keeps the trained clusters and quantiser
        _add(index, vectors, np.arange(count, dtype=np.int64))
        return AnnIndex(index, np.arange(count, dtype=np.int64), settings, earlier.trained_on), "clusters kept, every vector encoded again"
    id_of_earlier_row = np.full(len(earlier.rows), -1, dtype=np.int64)
    live = np.flatnonzero(earlier.rows >= 0)
    id_of_earlier_row[earlier.rows[live]] = live
    kept = earlier_row >= 0
    kept_ids = id_of_earlier_row[earlier_row[kept]]
    gone = np.setdiff1d(live, kept_ids, assume_unique=True)
    if len(gone):
        index.remove_ids(faiss.IDSelectorBatch(len(gone), faiss.swig_ptr(np.ascontiguousarray(gone, dtype=np.int64))))
    new_rows = np.flatnonzero(~kept)
    new_ids = np.arange(len(earlier.rows), len(earlier.rows) + len(new_rows), dtype=np.int64)
    rows = np.full(len(earlier.rows) + len(new_rows), -1, dtype=np.int64)
    rows[kept_ids] = np.flatnonzero(kept)
    rows[new_ids] = new_rows
    if len(rows) > 2 * count:  # mostly holes: number the ids afresh
        index.reset()
        _add(index, vectors, np.arange(count, dtype=np.int64))
        return AnnIndex(index, np.arange(count, dtype=np.int64), settings, earlier.trained_on), "clusters kept, every vector encoded again (ids renumbered)"
    _add(index, vectors, new_ids, new_rows)
    return AnnIndex(index, rows, settings, earlier.trained_on), f"clusters kept: {len(new_rows)} added, {len(gone)} removed, {int(kept.sum())} unchanged"


def _add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray, rows: np.ndarray | None = None) -> None:
    """Add ``vectors[rows]`` (all rows when None) under ``ids``, block by block."""
    for start in range(0, len(ids), _ADD_BLOCK):
        part = slice(start, start + _ADD_BLOCK)
        block = vectors[part] if rows is None else vectors[rows[part]]
        index.add_with_ids(np.ascontiguousarray(block, dtype=np.float32), ids[part])


class _RowReader:
    """Reads single rows of a memory-mapped ``vectors.npy`` with ``pread``, mapping none of it.

    Re-scoring reads 32 scattered rows per query. Through the map, each touch mapped a whole
    page-cache folio around the row (up to 2 MB on this machine's kernel, with an 8 MB read-ahead):
    at 1M products the bot's resident memory grew by 52 MB a query, 1.5 GB after 30 photos, and
    ``MADV_RANDOM`` did not help. Read this way, the rows cost 32 small reads and no memory.
    """

    def __init__(self, path: str, offset: int, dim: int) -> None:
        self.descriptor = os.open(path, os.O_RDONLY)
        self.offset = offset
        self.dim = dim
        weakref.finalize(self, os.close, self.descriptor)

    @classmethod
    def of(cls, vectors: np.ndarray) -> _RowReader | None:
        """A reader for a memory map of a whole float32 .npy file; None for vectors in memory (indexed directly)."""
        if isinstance(vectors, np.memmap) and vectors.filename and vectors.dtype == np.float32 and vectors.flags.c_contiguous:
            return cls(str(vectors.filename), int(vectors.offset), int(vectors.shape[1]))
        return None

    def read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        size = 4 * self.dim
        for position, row in enumerate(rows.tolist()):
            if os.preadv(self.descriptor, [memoryview(out[position]).cast("B")], self.offset + row * size) != size:
                raise IndexCorruptError("vectors.npy is shorter than its header says. Rebuild the index.")
        return out


class AnnSearcher:
    """Searches an :class:`AnnIndex`, re-scoring its candidates from the stored vectors.

    Same surface as :class:`recommender.search.ExactSearcher`: ``fit(vectors)`` (kept as given, a
    memory map stays one), then ``search`` and ``candidates`` return ``(rows, similarities)``.
    """

    def __init__(self, ann: AnnIndex, exact_below: int = EXACT_BELOW) -> None:
        self.ann = ann
        self.exact_below = exact_below
        self._vectors: np.ndarray | None = None
        self._rows: _RowReader | None = None
        self._lists: np.ndarray | None = None
        self._filter_cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def fit(self, vectors: np.ndarray) -> AnnSearcher:
        if len(vectors) != self.ann.count:
            raise ValueError(f"{len(vectors)} vectors for an ann index of {self.ann.count}")
        self._vectors = vectors
        self._rows = _RowReader.of(vectors)
        return self

    @property
    def size(self) -> int:
        return 0 if self._vectors is None else len(self._vectors)

    @property
    def projected(self) -> bool:
        return False

    def prepare_projection(self) -> bool:
        """Nothing to prepare: the clusters are the short first pass."""
        return False

    def search(
        self, queries: np.ndarray, k: int = 5, *, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None,
        where: CanonicalWhere = (),
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Top-``k`` rows and cosine similarities per query, as :meth:`ExactSearcher.search` gives them."""
        if self._vectors is None:
            raise NotLoadedError("AnnSearcher.search called before fit")
        queries, wanted, available = search_request(queries, k, self.size, exclude, allowed)
        if wanted == 0:
            return no_rows(len(queries))
        if allowed is not None and available <= self.exact_below:
            rows, similarities = self._exact(queries, wanted, np.flatnonzero(allowed))
        else:
            rows, similarities = self._approximate(queries, wanted, allowed, available)
        if exclude is not None:
            rows, similarities = drop_excluded(rows, similarities, np.asarray(exclude), k)
        return rows[:, :k], similarities[:, :k]

    def candidates(self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A shortlist for a stage that decides itself (recommender/exact_match.py): the search's own top ``k``."""
        return self.search(queries, k, allowed=allowed)

    def _approximate(self, queries: np.ndarray, wanted: int, allowed: np.ndarray | None, available: int) -> tuple[np.ndarray, np.ndarray]:
        assert self._vectors is not None
        fetch = max(wanted, self.ann.settings.rerank)
        if allowed is None:
            params = faiss.SearchParametersIVF()
            params.nprobe = self.ann.settings.nprobe
            _, ids = self.ann.index.search(queries, fetch, params=params)
        else:
            ids = self._filtered(queries, fetch, allowed, available)
        known = (ids >= 0) & (ids < len(self.ann.rows))
        found = np.where(known, self.ann.rows[np.where(known, ids, 0)], -1)
        out_rows = np.empty((len(queries), wanted), dtype=np.int64)
        out_similarities = np.empty((len(queries), wanted), dtype=np.float32)
        for i, query in enumerate(queries):
            candidates = found[i][found[i] >= 0]
            if len(candidates) < wanted:  # the probed clusters hold too few (that pass): answer this one exactly
                subset = None if allowed is None else np.flatnonzero(allowed)
                rows, similarities = self._exact(query[None], wanted, subset)
            else:
                candidates = np.sort(candidates)  # ascending rows: a memory map reads them in order
                found_vectors = self._rows.read(candidates) if self._rows is not None else self._vectors[candidates]
                scores = np.asarray(found_vectors @ query, dtype=np.float32)
                order = np.argsort(-scores, kind="stable")[:wanted]
                rows, similarities = candidates[order][None], scores[order][None]
            out_rows[i], out_similarities[i] = rows[0], similarities[0]
        return out_rows, out_similarities

    def _filtered(self, queries: np.ndarray, fetch: int, allowed: np.ndarray, available: int) -> np.ndarray:
        """faiss ids of the best ``fetch`` products that pass, per query.

        A filter's products are not spread evenly over the clusters (shoes fill the shoe clusters),
        so probing the ``nprobe`` nearest clusters would miss them. Instead each query probes its
        nearest clusters *that hold products passing the filter*, until they hold as many such
        products as an unfiltered search would scan (``nprobe / nlist`` of the catalogue, and at
        least ``fetch``); a selector skips the others inside them.
        """
        settings = self.ann.settings
        index: Any = self.ann.index  # faiss' typing knows nothing of search_preassigned_c
        by_id, per_list = self._filter_by_id(allowed)
        quantizer_scores, order = faiss.extract_index_ivf(index).quantizer.search(queries, settings.nlist)
        wanted_scanned = max(fetch, math.ceil(self.size * settings.nprobe / settings.nlist))
        lists = np.full((len(queries), settings.nlist), -1, dtype=np.int64)
        scores = np.zeros((len(queries), settings.nlist), dtype=np.float32)  # the scanner adds a cluster's own score
        for i in range(len(queries)):
            holds = per_list[order[i]] > 0
            holding = order[i][holds]
            enough = int(np.searchsorted(np.cumsum(per_list[holding]), min(wanted_scanned, available))) + 1
            lists[i, :enough] = holding[:enough]
            scores[i, :enough] = quantizer_scores[i][holds][:enough]
        width = max(1, int((lists >= 0).sum(axis=1).max()))
        lists, scores = np.ascontiguousarray(lists[:, :width]), np.ascontiguousarray(scores[:, :width])
        bitmap = np.packbits(by_id, bitorder="little")
        params = faiss.SearchParametersIVF()
        params.nprobe = width
        params.sel = selector = faiss.IDSelectorBitmap(len(by_id), faiss.swig_ptr(bitmap))
        distances = np.empty((len(queries), fetch), dtype=np.float32)
        ids = np.empty((len(queries), fetch), dtype=np.int64)
        index.search_preassigned_c(
            len(queries), faiss.swig_ptr(queries), fetch, faiss.swig_ptr(lists), faiss.swig_ptr(scores),
            faiss.swig_ptr(distances), faiss.swig_ptr(ids), False, params,
        )  # fmt: skip
        del selector, bitmap  # both were read until here
        return ids

    def _filter_by_id(self, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which faiss ids pass, how many pass in each cluster) for a row mask; the last mask's are kept,
        as the recommender hands the same mask object for the same filter."""
        cached = self._filter_cache
        if cached is not None and cached[0] is allowed:
            return cached[1], cached[2]
        by_id = np.zeros(len(self.ann.rows), dtype=bool)
        live = self.ann.rows >= 0
        by_id[live] = allowed[self.ann.rows[live]]
        per_list = np.bincount(self._list_of_id()[by_id], minlength=self.ann.settings.nlist)
        self._filter_cache = (allowed, by_id, per_list)
        return by_id, per_list

    def _list_of_id(self) -> np.ndarray:
        """The cluster each faiss id is stored in (read once from the inverted lists)."""
        if self._lists is None:
            invlists: Any = faiss.extract_index_ivf(self.ann.index).invlists
            lists = np.zeros(len(self.ann.rows), dtype=np.int64)
            for number in range(invlists.nlist):
                size = invlists.list_size(number)
                if size:
                    pointer = invlists.get_ids(number)
                    lists[faiss.rev_swig_ptr(pointer, size)] = number
                    invlists.release_ids(number, pointer)
            self._lists = lists
        return self._lists

    def _exact(self, queries: np.ndarray, wanted: int, subset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The exact top ``wanted`` among ``subset`` (all rows when None), read from the stored vectors."""
        assert self._vectors is not None
        vectors = self._vectors if subset is None else self._vectors[subset]
        top, scores = top_k(np.asarray(queries @ np.asarray(vectors).T, dtype=np.float32), wanted)
        return (top if subset is None else subset[top]).astype(np.int64), scores

