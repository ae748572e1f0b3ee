"""Exact nearest-neighbour search over L2-normalised vectors: vectors → (rows, similarities).

Three paths give the same neighbours. A batch whose score matrix fits in :data:`MATMUL_SCORES`
(the bot's batches, an evaluation of thousands of products) takes a float32 matrix product plus
``argpartition``: measured 2-3x faster than ``kneighbors`` from 8 to 256 queries, at 4k and 44k
products. A larger batch goes through scikit-learn's ``NearestNeighbors``, which bounds its memory by
working in chunks; it is fitted, and scikit-learn imported, on first use only: the import alone costs
a process about 150 MB (scikit-learn pulls in scipy.stats and pandas), which a bot never needs. A catalogue of at least ``project_above`` long
vectors is searched through a short projection with exact re-scoring
(:mod:`recommender.projected_search`): the same top k from a fraction of the memory reads.
``benchmarks/search_speed.py`` times them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .errors import NotLoadedError
from .filters import CanonicalWhere
from .projected_search import ProjectedSearch

if TYPE_CHECKING:
    from sklearn.neighbors import NearestNeighbors

#: Scores one matrix product may hold (float32: 128 MB); a batch needing more goes through ``NearestNeighbors``.
MATMUL_SCORES = 32 * 1024 * 1024
#: From this many products on, long vectors are searched through their projection (exact all the same).
PROJECT_ABOVE = 20_000
#: Length of that projection; vectors shorter than four times this are searched in full.
PROJECTED_DIM = 256


class ExactSearcher:
    """Cosine-similarity search; ``search`` returns ``(rows, similarities)``, best first.

    ``batch_threshold`` chooses the path: batches of at least that many queries go through
    ``NearestNeighbors``, smaller ones through the matrix product; None (the default) decides by the
    score matrix's size (:data:`MATMUL_SCORES`). ``batch_threshold=0`` always takes
    ``NearestNeighbors``, a threshold above any batch always the matrix product: the tests and the
    benchmark compare the two that way.
    """

    def __init__(self, batch_threshold: int | None = None, project_above: int = PROJECT_ABOVE, projected_dim: int = PROJECTED_DIM) -> None:
        self.batch_threshold = batch_threshold
        self.project_above = project_above
        self.projected_dim = projected_dim
        self._vectors: np.ndarray | None = None
        self._neighbors: NearestNeighbors | None = None
        self._projected: ProjectedSearch | None = None

    def fit(self, vectors: np.ndarray) -> ExactSearcher:
        """Keep the catalogue's vectors (float32; ``NearestNeighbors`` is fitted when a batch first needs it); returns self."""
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._neighbors = None
        self._projected = None
        return self

    def _by_matmul(self, queries: int) -> bool:
        if self.batch_threshold is None:
            return queries * self.size <= MATMUL_SCORES
        return queries < self.batch_threshold

    def prepare_projection(self) -> bool:
        """Build the short projection when the catalogue is large enough to gain from it; True if built.

        Costs about a second at 44k products (a service's start-up, not a one-off query's), and
        may run on another thread while searches go on: they switch to it once it is ready.
        """
        vectors = self._vectors
        if vectors is None:
            raise NotLoadedError("ExactSearcher.prepare_projection called before fit")
        if len(vectors) < self.project_above or vectors.shape[1] < 4 * self.projected_dim:
            return False
        self._projected = ProjectedSearch(self.projected_dim).fit(vectors)
        return True

    @property
    def projected(self) -> bool:
        """Whether searches read the short projection (see :meth:`prepare_projection`)."""
        return self._projected is not None

    @property
    def size(self) -> int:
        """How many vectors were fitted (0 before :meth:`fit`)."""
        return 0 if self._vectors is None else len(self._vectors)

    def search(
        self, queries: np.ndarray, k: int = 5, *, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None,
        where: CanonicalWhere = (),
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Top-``k`` rows and cosine similarities for each query (``(Q, k)`` arrays).

        ``exclude`` (one row number per query, or -1) removes that catalogue row from the query's
        results, e.g. the query item itself in leave-one-out evaluation. ``allowed`` (a bool mask
        over the rows, :mod:`recommender.filters`) keeps only those rows: the exact top ``k``
        among them, fewer when fewer pass, ``(Q, 0)`` when none does. ``where``, the filter that
        made the mask, is for backends that filter inside an engine (Milvus); the mask says it all here.
        """
        if self._vectors is None:
            raise NotLoadedError("ExactSearcher.search called before fit")
        queries, wanted, _ = search_request(queries, k, self.size, exclude, allowed)
        if wanted == 0:
            return no_rows(len(queries))
        projected = self._projected  # once: another thread may set it meanwhile
        if projected is not None and projected.pays():
            rows, similarities = projected.search(queries, wanted, allowed)
        elif allowed is not None or self._by_matmul(len(queries)):
            rows, similarities = self._search_matmul(queries, wanted, allowed)
        else:
            rows, similarities = self._search_sklearn(queries, wanted)
        if exclude is not None:
            rows, similarities = drop_excluded(rows, similarities, np.asarray(exclude), k)
        return rows[:, :k], similarities[:, :k]

    def candidates(self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A shortlist of about the ``k`` best rows per query, for a stage that decides among them itself
        (recommender/exact_match.py): the projection's first pass alone when it is ready (a large
        catalogue: 50 rows of 44,000 from 256 numbers each, instead of a full pass per crop), else
        the exact :meth:`search`."""
        projected = self._projected
        if projected is not None:
            return projected.candidates(queries, k, allowed)
        return self.search(queries, k, allowed=allowed)

    def _search_sklearn(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._neighbors is None:
            from sklearn.neighbors import NearestNeighbors

            self._neighbors = NearestNeighbors(algorithm="brute", metric="euclidean").fit(self._vectors)
        distances, rows = self._neighbors.kneighbors(queries, n_neighbors=k)
        # For unit vectors: |a - b|^2 = 2 - 2 cos(a, b).
        similarities = (1.0 - np.square(distances) / 2.0).astype(np.float32)
        return rows.astype(np.int64), similarities

    def _search_matmul(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        assert self._vectors is not None
        scores = queries @ self._vectors.T
        if allowed is not None:
            scores[:, ~allowed] = -np.inf  # k never exceeds the rows allowed: none of these is picked
        return top_k(scores, k)


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``scores`` and their scores, best first (ties in column order)."""
    if k < scores.shape[1]:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        top = np.broadcast_to(np.arange(scores.shape[1]), (len(scores), scores.shape[1]))
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    rows = np.take_along_axis(top, order, axis=1).astype(np.int64)
    return rows, np.take_along_axis(top_scores, order, axis=1)


def search_request(
    queries: np.ndarray, k: int, size: int, exclude: np.ndarray | None, allowed: np.ndarray | None
) -> tuple[np.ndarray, int, int]:
    """Every backend's start of a search: the queries as float32 rows, how many rows to fetch (``k``,
    one more when each query excludes a row, at most the rows allowed) and how many rows are allowed."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    available = size if allowed is None else int(np.count_nonzero(allowed))
    return queries, min(k + (1 if exclude is not None else 0), available), available


def no_rows(count: int) -> tuple[np.ndarray, np.ndarray]:
    """The answer of ``count`` queries when no row may be returned: ``(count, 0)`` arrays."""
    return np.zeros((count, 0), dtype=np.int64), np.zeros((count, 0), dtype=np.float32)


def drop_excluded(rows: np.ndarray, similarities: np.ndarray, exclude: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query's ``exclude`` row from its results, keeping at most ``k`` (every backend's leave-one-out)."""
    keep = rows != exclude.reshape(-1, 1)
    width = int(min(k, keep.sum(axis=1).min(initial=k)))
    out_rows = np.empty((len(rows), width), dtype=rows.dtype)
    out_sims = np.empty(out_rows.shape, dtype=similarities.dtype)
    for i in range(len(rows)):
        out_rows[i] = rows[i][keep[i]][:width]
        out_sims[i] = similarities[i][keep[i]][:width]
    return out_rows, out_sims
