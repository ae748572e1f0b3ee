"""The search backend an index was built for, and the searcher that serves it.

``exact`` (the default): every vector scanned, exactly (recommender/search.py). ``ann``: faiss'
inverted file with exact re-scoring (recommender/ann_search.py), for catalogues of hundreds of
thousands of products and more. ``milvus``: a Milvus collection (recommender/milvus_search.py),
embedded Milvus Lite or a server, for catalogues that outgrow one machine. ``where`` filters reach
every backend both as a row mask (``allowed``) and as the filter itself (``where``, which Milvus
runs inside the engine). ``lookalike-build-index --backend`` chooses; the manifest's
``search`` entry records the choice, so the bot, ``lookalike-query`` and ``lookalike-evaluate``
serve an index as it was built, with no flag of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .ann_search import AnnSearcher
from .filters import CanonicalWhere
from .index_store import CatalogueIndex
from .manifest import ANN_BACKEND, EXACT_BACKEND, MILVUS_BACKEND
from .milvus_search import MilvusSearcher
from .search import ExactSearcher

EXACT = EXACT_BACKEND
ANN = ANN_BACKEND
MILVUS = MILVUS_BACKEND
BACKENDS = (EXACT, ANN, MILVUS)


@dataclass(frozen=True)
class BackendChoice:
    """What a build was asked for: ``backend`` (None: what an updated index has, else exact) and the
    ann parameters to use instead of those chosen from the catalogue size (None: chosen)."""

    backend: str | None = None
    nlist: int | None = None
    nprobe: int | None = None
    #: milvus: where the collection lives ("": Milvus Lite inside the index; None: what the updated index has, else "")
    milvus_uri: str | None = None
    #: milvus: the collection's name on a Milvus server (None: chosen from the index folder)
    milvus_collection: str | None = None


class Searcher(Protocol):
    """What the recommender asks of a backend: ``(rows, similarities)`` per query, best first."""

    @property
    def size(self) -> int: ...

    @property
    def projected(self) -> bool: ...

    def prepare_projection(self) -> bool: ...

    def search(
        self, queries: np.ndarray, k: int = 5, *, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None,
        where: CanonicalWhere = (),
    ) -> tuple[np.ndarray, np.ndarray]: ...  # fmt: skip

    def candidates(self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...


def open_searcher(index: CatalogueIndex) -> Searcher:
    """The searcher for ``index``'s own backend, fitted on its vectors (milvus: connected and checked,
    :class:`SearchBackendError` when it cannot be)."""
    if index.manifest.backend == MILVUS:
        return MilvusSearcher(index.manifest, index.directory, index.ids()).fit(index.vectors)
    if index.ann is not None:
        return AnnSearcher(index.ann).fit(index.vectors)
    return ExactSearcher().fit(index.vectors)
