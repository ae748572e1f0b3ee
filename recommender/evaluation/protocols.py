"""Evaluation protocols: who queries what, over which vectors; each ends in :func:`evaluate_rankings`.

* leave-one-out: every labelled item queries the rest of the index, its own row excluded.
* held-out: a stratified share of the items (:func:`stratified_holdout`) queries the remaining
  ones. Anything learned from labels must then be re-learned on the remaining ones only
  (:func:`refined_split_vectors`, :func:`head_split_vectors`), or the queries' own labels would
  leak into the index.

Query photos, either protocol:

* catalogue: a query is its product's stored vector (the catalogue photo, as indexed);
* shopper: a query is its product's catalogue photo turned into a shopper-like phone photo
  (recommender/shopper_photos.py, seeded by the run's seed and the product id), then decoded and
  embedded as the bot would (:func:`shopper_queries`). The index rows stay catalogue photos.

Exact item (:func:`exact_items`): shopper photos of products that *are* in the index search the
whole index as it serves; the question is whether the product itself comes first, or in the top k.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..backends import Searcher
from ..head import HeadSettings, train_head, training_inputs
from ..recommender import Query, Recommender
from ..refine import LabelCentroids
from ..search import ExactSearcher
from ..shopper_photos import PhotoLike, rng_for, shopper_photo
from .metrics import evaluate_rankings
from .report import LABELS, QualityReport

#: Index row numbers, as a list or an integer array.
Rows = Sequence[int] | np.ndarray

SHOPPER_QUERIES = "shopper"

#: Encoded photos → ``(features, colour histograms)``, one row per photo, computed as the bot does.
EmbedPhotos = Callable[[Sequence[bytes]], tuple[np.ndarray, np.ndarray]]


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
    query_vectors: np.ndarray | None = None,
    searcher: Searcher | None = None,
) -> Evaluation:
    """Every row in ``query_rows`` queries the whole index, its own row excluded.

    The query is the row's stored vector, or row i of ``query_vectors`` when given (e.g. the
    vector of its shopper photo). ``searcher``: the index's own backend (recommender/backends.py),
    so the figures are what the bot serves; None: the exact search over ``vectors``.
    """
    queries = np.asarray(query_rows, dtype=np.int64)
    searcher = searcher or ExactSearcher().fit(vectors)
    asked = np.asarray(vectors)[queries] if query_vectors is None else np.asarray(query_vectors)
    if len(asked) != len(queries):
        raise ValueError(f"{len(asked)} query vectors for {len(queries)} query rows")
    rows, scores = searcher.search(asked, k, exclude=queries)
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
    query_features: np.ndarray | None = None,
    query_colours: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Label-centroid vectors learned on the searchable rows only (so held-out labels never leak).

    Returns ``(searchable vectors, query vectors)``, row for row with the given row numbers. The
    queries use the stored features and colours of their rows, or ``query_features`` and
    ``query_colours`` when given (e.g. those of their shopper photos).
    """
    searchable = np.asarray(searchable_rows, dtype=np.int64)
    queries = np.asarray(query_rows, dtype=np.int64)
    train_labels = [labels[row] for row in searchable]
    refiner = LabelCentroids.fit(features[searchable], colours[searchable], train_labels, weights=weights)
    asked_features = features[queries] if query_features is None else query_features
    asked_colours = colours[queries] if query_colours is None else query_colours
    return (
        refiner.index_vectors(features[searchable], colours[searchable], train_labels),
        LabelCentroids.query_vectors(asked_features, asked_colours),
    )


def head_split_vectors(
    features: np.ndarray,
    labels: Sequence[Mapping[str, str]],
    searchable_rows: Rows,
    query_rows: Rows,
    views: Sequence[np.ndarray],
    settings: HeadSettings,
    query_features: np.ndarray | None = None,
    training_rows: Rows | None = None,
    *,
    colours: np.ndarray | None = None,
    view_colours: Sequence[np.ndarray] | None = None,
    query_colours: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """An embedding head trained on the searchable rows only (their labels and ``views``), then applied.

    ``training_rows`` (default: all searchable rows) are the searchable rows that train it, as a
    build samples them (:func:`recommender.head.training_rows`); ``views`` are their shopper-view
    features, row for row (made from searchable photos only). Returns ``(searchable vectors, query
    vectors)``; the queries go through the head as the bot's would (no labels), from their stored
    features or ``query_features``. A head whose settings take colours also needs every row's
    ``colours``, the views' ``view_colours`` and, with ``query_features``, the ``query_colours``.
    """
    searchable = np.asarray(searchable_rows, dtype=np.int64)
    queries = np.asarray(query_rows, dtype=np.int64)
    training = searchable if training_rows is None else np.asarray(training_rows, dtype=np.int64)
    if np.setdiff1d(training, searchable).size:
        raise ValueError("the head must train on searchable rows only")

    def rows_colours(rows: np.ndarray) -> np.ndarray | None:
        return None if colours is None else colours[rows]

    inputs, view_inputs = training_inputs(features[training], rows_colours(training), views, view_colours, settings.colour)
    head = train_head(inputs, [labels[row] for row in training], view_inputs, settings)
    asked = features[queries] if query_features is None else query_features
    asked_colours = rows_colours(queries) if query_features is None else query_colours
    return (
        head.index_vectors(features[searchable], [labels[row] for row in searchable], rows_colours(searchable)),
        head.query_vectors(asked, asked_colours),
    )


def shopper_query_photo(photo: PhotoLike, key: str, seed: int, background_pool: Sequence[PhotoLike] | None = None) -> bytes:
    """The shopper photo that stands in for ``photo`` in a run with ``seed`` (JPEG bytes).

    The same ``(photo, key, seed, pool)`` always gives the same bytes: the contact sheet shows
    exactly the photos the metrics were measured on.
    """
    return shopper_photo(photo, rng_for(seed, key), background_pool=background_pool, avoid=photo)


@dataclass
class ShopperQueries:
    """Features and colour histograms of the queries' shopper photos, and what making them cost."""

    features: np.ndarray
    colours: np.ndarray
    transform_seconds: float
    embed_seconds: float

    def milliseconds_per_query(self) -> dict[str, float]:
        count = max(1, len(self.features))
        return {"transform": 1000 * self.transform_seconds / count, "decode_and_embed": 1000 * self.embed_seconds / count}


def shopper_queries(
    photos: Sequence[PhotoLike],
    keys: Sequence[str],
    embed: EmbedPhotos,
    *,
    seed: int,
    background_pool: Sequence[PhotoLike] | None = None,
    batch_size: int = 32,
) -> ShopperQueries:
    """Turn each query photo into its shopper photo and embed it, ``batch_size`` photos at a time.

    ``keys`` (the product ids) seed each photo's transform with ``seed``; ``background_pool``
    holds other catalogue photos that may become backgrounds (never the query's own photo).
    """
    if len(photos) != len(keys):
        raise ValueError(f"{len(photos)} photos for {len(keys)} keys")
    features: list[np.ndarray] = []
    colours: list[np.ndarray] = []
    transform_seconds = embed_seconds = 0.0
    for start in range(0, len(photos), batch_size):
        began = time.perf_counter()
        batch = [shopper_query_photo(photo, key, seed, background_pool) for photo, key in zip(photos[start : start + batch_size], keys[start : start + batch_size])]
        transformed = time.perf_counter()
        batch_features, batch_colours = embed(batch)
        embed_seconds += time.perf_counter() - transformed
        transform_seconds += transformed - began
        features.append(np.asarray(batch_features, dtype=np.float32))
        colours.append(np.asarray(batch_colours, dtype=np.float32))
    if not features:
        return ShopperQueries(np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32), 0.0, 0.0)
    return ShopperQueries(np.concatenate(features), np.concatenate(colours), transform_seconds, embed_seconds)


@dataclass
class ExactItems:
    """How often a shopper photo of an indexed product finds that very product (recall@1, recall@k)."""

    queries: int
    k: int
    recall_at_1: float
    recall_at_k: float
    #: mean of 1/rank of the product itself, 0 when it is not in the top k
    reciprocal_rank: float
    #: with the exact-item stage: photos whose first product was called an exact match, the share
    #: of those calls that were right, and the share called exact with the product taken out of the index
    called_exact: float | None = None
    called_right: float | None = None
    false_exact: float | None = None
    #: milliseconds per photo of the whole query (prepare, forward pass with crops, verification, page)
    ms_per_photo: float | None = None
    #: with the product taken out of the index (a photo of a product the shop does not carry): for each
    #: label, the share of the album's k products that share it with the photo's product, through the
    #: stage (whatever it puts first) and without it (the global search alone). The category figures'
    #: limit is about the difference (the issue's 1 point)
    taken_out: dict[str, dict[str, float]] | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"queries": self.queries, "k": self.k, "recall_at_1": round(self.recall_at_1, 4),
                f"recall_at_{self.k}": round(self.recall_at_k, 4), f"mrr_at_{self.k}": round(self.reciprocal_rank, 4)}  # fmt: skip
        for name in ("called_exact", "called_right", "false_exact", "ms_per_photo"):
            value = getattr(self, name)
            if value is not None:
                data[name] = round(float(value), 4)
        if self.taken_out is not None:
            data["taken_out_agreement"] = {label: {stage: round(value, 4) for stage, value in figures.items()} for label, figures in self.taken_out.items()}
        return data


def exact_item_rows(count: int, wanted: int, seed: int) -> np.ndarray:
    """``wanted`` index rows out of ``count``, drawn with ``seed`` and sorted (all of them when there are fewer)."""
    if wanted >= count:
        return np.arange(count, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(count, size=wanted, replace=False)).astype(np.int64)


def exact_items(vectors: np.ndarray, query_vectors: np.ndarray, query_rows: Rows, k: int = 5, searcher: Searcher | None = None) -> ExactItems:
    """Search the whole of ``vectors`` with each query (through ``searcher``, the index's backend, when
    given); where does the query's own row come?"""
    own = np.asarray(query_rows, dtype=np.int64)
    if len(own) == 0:
        return ExactItems(0, k, 0.0, 0.0, 0.0)
    rows, _ = (searcher or ExactSearcher().fit(vectors)).search(query_vectors, k)
    hits = rows == own[:, None]
    return _recall(np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0), k)


def _recall(ranks: np.ndarray, k: int, **stage: Any) -> ExactItems:
    """:class:`ExactItems` from each query's rank of its own product (1-based, 0 when not in the top ``k``)."""
    found = ranks > 0
    reciprocal = np.where(found, 1.0 / np.maximum(ranks, 1), 0.0)
    return ExactItems(len(ranks), k, float(np.mean(ranks == 1)), float(found.mean()), float(reciprocal.mean()), **stage)


def verified_exact_items(
    recommender: Recommender, shots: Sequence[bytes], query_rows: Rows, k: int = 5, batch_size: int = 16
) -> tuple[ExactItems, ExactItems]:
    """Exact-item recall of the global search alone and through the exact-item stage, as the bot
    answers, from the same photos and forward passes; then each photo again with its product taken
    out of the index, where an "exact match" would be false and the album shows what a shopper whose
    product the shop does not carry sees (``with_stage.taken_out``, against the global search alone).
    Returns ``(global_only, with_stage)``."""
    own = np.asarray(query_rows, dtype=np.int64)
    if len(own) == 0:
        return ExactItems(0, k, 0.0, 0.0, 0.0), ExactItems(0, k, 0.0, 0.0, 0.0)
    ranks: list[int] = []
    called: list[bool] = []
    false_calls: list[bool] = []
    taken_out: dict[str, list[list[int]]] = {"with_stage": [], "without_stage": []}  # each photo's album
    global_vectors: list[np.ndarray] = []
    everything = np.ones(len(recommender), dtype=bool)
    seconds = 0.0
    for start in range(0, len(own), batch_size):
        began = time.perf_counter()
        photos = [recommender.prepare(shot) for shot in shots[start : start + batch_size]]
        vectors, asked = recommender.embed_photos(photos)
        queries = [recommender.verify(photo, vector, shortlisted) for photo, vector, shortlisted in zip(photos, vectors, asked)]
        pages = recommender.answer(queries, k)
        seconds += time.perf_counter() - began
        global_vectors.append(vectors)
        for photo, vector, shortlisted, page, row in zip(photos, vectors, asked, pages, own[start : start + batch_size]):
            rows = [match.row for match in page]
            ranks.append(rows.index(int(row)) + 1 if row in rows else 0)
            called.append(bool(page) and page[0].exact)
            everything[row] = False
            without_product = recommender.verify(photo, vector, shortlisted, allowed=everything)
            everything[row] = True
            false_calls.append(without_product.exact)
            for stage, album in zip(taken_out, recommender.answer([without_product, Query(vector)], k + 1)):
                taken_out[stage].append([match.row for match in album if match.row != row][:k])
    right = [r == 1 for r, c in zip(ranks, called) if c]
    assert recommender.index is not None
    global_only = exact_items(recommender.index.vectors, np.concatenate(global_vectors), own, k)
    with_stage = _recall(
        np.asarray(ranks), k, called_exact=float(np.mean(called)), called_right=float(np.mean(right)) if right else None,
        false_exact=float(np.mean(false_calls)), ms_per_photo=1000 * seconds / len(own),
    )  # fmt: skip
    products = recommender.index.products
    if len(products) > k:  # albums of k products each
        photographed = [products[row] for row in own]
        reports = {stage: evaluate_rankings(photographed, np.asarray(albums), products, k=k) for stage, albums in taken_out.items()}
        figures = {label: {stage: report.precision[label]["micro"] for stage, report in reports.items()} for label in LABELS}
        with_stage = replace(with_stage, taken_out={label: values for label, values in figures.items() if not any(map(math.isnan, values.values()))})
    return global_only, with_stage
