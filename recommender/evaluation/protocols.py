"""Evaluation protocols: who queries what, over which vectors; each ends in :func:`evaluate_rankings`.

* leave-one-out: every labelled item queries the rest of the index, its own row excluded.
* held-out: a stratified share of the items (:func:`stratified_holdout`) queries the remaining
  ones. Anything learned from labels must then be re-learned on the remaining ones only
  (:func:`refined_split_vectors`), or the queries' own labels would leak into the index.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..refine import LabelCentroids
from ..search import ExactSearcher
from .metrics import evaluate_rankings
from .report import QualityReport

#: Index row numbers, as a list or an integer array.
Rows = Sequence[int] | np.ndarray


@dataclass
class Evaluation:
    """One protocol run: the report plus what was asked and answered, in index row numbers."""

    name: str
    report: QualityReport
    query_rows: np.ndarray
    result_rows: np.ndarray
    scores: np.ndarray


def stratified_holdout(groups: Sequence[str], fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of held-out items: ``fraction`` of each group (at least one item of groups with 2+).

    Every group keeps at least one item in the searchable part; singleton groups are never held
    out. Deterministic for a given ``seed``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError("--holdout must be between 0 and 1 (e.g. 0.2)")
    rng = np.random.default_rng(seed)
    groups_array = np.asarray(groups)
    held_out = np.zeros(len(groups_array), dtype=bool)
    for group in sorted(set(groups)):
        members = np.flatnonzero(groups_array == group)
        if len(members) < 2:
            continue
        take = max(1, int(math.floor(fraction * len(members) + 0.5)))  # half up, not Python's half-to-even
        held_out[rng.choice(members, size=min(take, len(members) - 1), replace=False)] = True
    return held_out


def leave_one_out(
    name: str,
    vectors: np.ndarray,
    labels: Sequence[Mapping[str, str]],
    query_rows: Rows,
    k: int = 5,
    min_items: int = 5,
) -> Evaluation:
    """Every row in ``query_rows`` queries the whole index with its stored vector, its own row excluded."""
    queries = np.asarray(query_rows, dtype=np.int64)
    searcher = ExactSearcher().fit(vectors)
    rows, scores = searcher.search(np.asarray(vectors)[queries], k, exclude=queries)
    report = evaluate_rankings(
        [labels[row] for row in queries], rows, labels, query_rows_in_searchable=queries, min_items=min_items, k=k
    )
    return Evaluation(name, report, queries, rows, scores)


def held_out(
    name: str,
    searchable_vectors: np.ndarray,
    searchable_rows: Rows,
    query_vectors: np.ndarray,
    query_rows: Rows,
    labels: Sequence[Mapping[str, str]],
    k: int = 5,
    min_items: int = 5,
) -> Evaluation:
    """Queries (``query_rows``) search only the searchable rows; ``labels`` is indexed by index row."""
    searchable = np.asarray(searchable_rows, dtype=np.int64)
    queries = np.asarray(query_rows, dtype=np.int64)
    if np.intersect1d(searchable, queries).size:
        raise ValueError("held-out queries must not be searchable")
    searcher = ExactSearcher().fit(searchable_vectors)
    local, scores = searcher.search(query_vectors, k)
    report = evaluate_rankings(
        [labels[row] for row in queries], local, [labels[row] for row in searchable], min_items=min_items, k=k
    )
    return Evaluation(name, report, queries, searchable[local], scores)


def refined_split_vectors(
    features: np.ndarray,
    colours: np.ndarray,
    labels: Sequence[Mapping[str, str]],
    searchable_rows: Rows,
    query_rows: Rows,
    weights: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Label-centroid vectors learned on the searchable rows only (so held-out labels never leak).

    Returns ``(searchable vectors, query vectors)``, row for row with the given row numbers.
    """
    searchable = np.asarray(searchable_rows, dtype=np.int64)
    queries = np.asarray(query_rows, dtype=np.int64)
    train_labels = [labels[row] for row in searchable]
    refiner = LabelCentroids.fit(features[searchable], colours[searchable], train_labels, weights=weights)
    return (
        refiner.index_vectors(features[searchable], colours[searchable], train_labels),
        LabelCentroids.query_vectors(features[queries], colours[queries]),
    )
