"""The search backend an index was built for, and the searcher that serves it.

``exact`` (the default): every vector scanned, exactly (recommender/search.py). ``ann``: faiss'
inverted file with exact re-scoring (recommender/ann_search.py), for catalogues of hundreds of
thousands of products and more. ``lookalike-build-index --backend`` chooses; the manifest's
``search`` entry records the choice, so the bot, ``lookalike-query`` and ``lookalike-evaluate``
serve an index as it was built, with no flag of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .ann_search import AnnSearcher
from .index_store import CatalogueIndex
from .manifest import ANN_BACKEND, EXACT_BACKEND
from .search import ExactSearcher

EXACT = EXACT_BACKEND
ANN = ANN_BACKEND
BACKENDS = (EXACT, ANN)


@dataclass(frozen=True)
class BackendChoice:
    """What a build was asked for: ``backend`` (None: what an updated index has, else exact) and the
    ann parameters to use instead of those chosen from the catalogue size (None: chosen)."""

    backend: str | None = None
    nlist: int | None = None
    nprobe: int | None = None


class Searcher(Protocol):
    """What the recommender asks of a backend: ``(rows, similarities)`` per query, best first."""

    @property
    def size(self) -> int: ...

    @property
    def projected(self) -> bool: ...

    def prepare_projection(self) -> bool: ...

    def search(
        self, queries: np.ndarray, k: int = 5, *, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def candidates(self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]: ...


def open_searcher(index: CatalogueIndex) -> Searcher:
    """The searcher for ``index``'s own backend, fitted on its vectors."""
    if index.ann is not None:
        return AnnSearcher(index.ann).fit(index.vectors)
    return ExactSearcher().fit(index.vectors)
