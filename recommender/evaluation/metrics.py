"""Retrieval-quality metrics: precision@k and mAP@k per label, micro and macro (pure, no I/O).

Definitions (for one query with labels taken from ``styles.csv``):

* precision@k for label L: share of the k results whose L equals the query's L (always divided by
  k: a result list shorter than k counts the missing places as wrong).
* AP@k for label L: ``sum_r P@r * rel_r / min(k, R)`` where ``rel_r`` says whether result r
  shares L and R is how many searchable items share L (the query itself never counts). Queries
  with R = 0 cannot be answered for L and are left out of mAP for L.
* A query whose own L is unknown (empty in styles.csv) is left out of every metric for L, and a
  result with an empty L never matches.
* micro: mean over queries. macro: mean over article types having at least ``min_items``
  labelled catalogue items, of the mean over that type's queries (so big types don't drown small
  ones).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from .report import GROUP_LABEL, LABELS, QualityReport


def average_precision_at_k(relevance: np.ndarray, relevant_available: np.ndarray) -> np.ndarray:
    """Per-query AP@k from a ``(Q, k)`` boolean relevance matrix; NaN where nothing was relevant."""
    relevance = np.asarray(relevance, dtype=float)
    k = relevance.shape[1]
    precision_at_rank = np.cumsum(relevance, axis=1) / np.arange(1, k + 1)
    denominator = np.minimum(k, np.asarray(relevant_available, dtype=float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (precision_at_rank * relevance).sum(axis=1) / denominator, np.nan)


def macro_average(per_query: np.ndarray, groups: Sequence[str], eligible: set[str]) -> float:
    """Mean over eligible groups of the group's mean; NaN entries are ignored."""
    means = []
    groups_array = np.asarray(groups)
    for group in sorted(eligible):
        values = per_query[groups_array == group]
        values = values[~np.isnan(values)]
        if len(values):
            means.append(values.mean())
    return float(np.mean(means)) if means else float("nan")


def nanmean(values: np.ndarray) -> float:
    """Mean of the values that are not NaN; NaN when there are none."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def evaluate_rankings(
    query_labels: Sequence[Mapping[str, str]],
    result_rows: np.ndarray,
    searchable_labels: Sequence[Mapping[str, str]],
    query_rows_in_searchable: Sequence[int | None] | np.ndarray | None = None,
    labels: Sequence[str] = LABELS,
    min_items: int = 5,
    k: int | None = None,
) -> QualityReport:
    """Score ranked results (``result_rows[q]`` index ``searchable_labels``) against the labels.

    ``query_rows_in_searchable`` gives, for leave-one-out, each query's own row (so it is not
    counted as a relevant item available; it must not be among the results), or -1/None when the
    query is not searchable. ``k`` defaults to the width of ``result_rows``.
    """
    result_rows = np.asarray(result_rows, dtype=np.int64)
    if result_rows.ndim != 2:
        result_rows = result_rows.reshape(len(query_labels), -1)
    k = int(k if k is not None else result_rows.shape[1])
    if k < 1:
        raise ValueError("k must be at least 1")
    result_rows = result_rows[:, :k]
    own_rows = None
    if query_rows_in_searchable is not None:
        own_rows = np.array([-1 if row is None else int(row) for row in query_rows_in_searchable], dtype=np.int64)
        if len(own_rows) != len(query_labels):
            raise ValueError("query_rows_in_searchable needs one entry per query")
        if np.any((result_rows == own_rows[:, None]) & (own_rows[:, None] >= 0)):
            raise ValueError("a query's own row is among its results: leave-one-out must exclude it")
    counts = {label: Counter(item.get(label, "") for item in searchable_labels) for label in labels}
    groups = [query.get(GROUP_LABEL, "") for query in query_labels]
    type_sizes = Counter(item.get(GROUP_LABEL, "") for item in searchable_labels)
    if own_rows is not None:
        type_sizes.update(g for g, row in zip(groups, own_rows) if row < 0)
    else:
        type_sizes.update(groups)
    eligible = {group for group, size in type_sizes.items() if size >= min_items and group}
    report = QualityReport(queries=len(query_labels), k=k)
    per_label_precision: dict[str, np.ndarray] = {}
    per_label_ap: dict[str, np.ndarray] = {}
    for label in labels:
        wanted = [query.get(label, "") for query in query_labels]
        known = np.array([bool(w) for w in wanted], dtype=bool)
        relevance = np.zeros((len(query_labels), k), dtype=bool)
        for q, (w, rows) in enumerate(zip(wanted, result_rows)):
            if w:
                relevance[q, : len(rows)] = [searchable_labels[row].get(label, "") == w for row in rows]
        available = np.array([counts[label][w] for w in wanted], dtype=float)
        if own_rows is not None:
            available -= (own_rows >= 0).astype(float)
        precision = np.where(known, relevance.sum(axis=1) / k, np.nan)
        ap = np.where(known, average_precision_at_k(relevance, available), np.nan)
        per_label_precision[label] = precision
        per_label_ap[label] = ap
        report.precision[label] = {"micro": nanmean(precision), "macro": macro_average(precision, groups, eligible)}
        report.map_at_k[label] = nanmean(ap)
    groups_array = np.asarray(groups)
    for group in sorted(set(groups) - {""}, key=lambda g: (-type_sizes[g], g)):
        mask = groups_array == group
        report.per_type.append(
            {
                GROUP_LABEL: group,
                "items": type_sizes[group],
                "queries": int(mask.sum()),
                "in_macro": group in eligible,
                **{f"p@{k}_{label}": _round(nanmean(per_label_precision[label][mask])) for label in labels},
                f"map@{k}_{GROUP_LABEL}": _round(nanmean(per_label_ap[GROUP_LABEL][mask])),
            }
        )
    return report


def _round(value: float) -> float:
    return value if math.isnan(value) else round(value, 4)
