"""Retrieval-quality metrics: precision@k and mAP@k per label, micro and macro.

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

Evaluation protocols (see ``scripts/evaluate.py``): leave-one-out (every labelled item queries the
rest of the index, its own row excluded) and held-out (a stratified share of the items queries the
remaining ones; anything learned from labels must then be re-learned on the remaining ones only).
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LABELS = ("articleType", "masterCategory", "baseColour", "gender")
GROUP_LABEL = "articleType"
#: The metrics shown side by side by ``--compare``: (name, path into ``QualityReport.metric``).
COMPARE_METRICS = (
    ("P@{k} articleType micro", ("precision", "articleType", "micro")),
    ("P@{k} articleType macro", ("precision", "articleType", "macro")),
    ("P@{k} masterCategory", ("precision", "masterCategory", "micro")),
    ("P@{k} baseColour", ("precision", "baseColour", "micro")),
    ("P@{k} gender", ("precision", "gender", "micro")),
    ("mAP@{k} articleType", ("map", "articleType")),
)


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


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def _json_number(value: Any) -> Any:
    """NaN is not JSON: it becomes ``null``."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_number(item) for key, item in value.items()}
    return value


@dataclass
class QualityReport:
    """Metrics of one evaluation run, plus the per-article-type breakdown."""

    queries: int
    k: int
    precision: dict[str, dict[str, float]] = field(default_factory=dict)
    map_at_k: dict[str, float] = field(default_factory=dict)
    #: One entry per article type that has queries, biggest first; ``in_macro`` says whether it
    #: has enough items to count in the macro averages.
    per_type: list[dict[str, object]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            f"precision_at_{self.k}": _json_number(self.precision),
            f"map_at_{self.k}": _json_number(self.map_at_k),
            "queries": self.queries,
        }

    def metric(self, path: Sequence[str]) -> float:
        """``("precision", label, "micro"|"macro")`` or ``("map", label)``."""
        if path[0] == "precision":
            return self.precision[path[1]][path[2]]
        return self.map_at_k[path[1]]


def evaluate_rankings(
    query_labels: Sequence[Mapping[str, str]],
    result_rows: np.ndarray,
    searchable_labels: Sequence[Mapping[str, str]],
    query_rows_in_searchable: Sequence[int] | None = None,
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
        report.precision[label] = {"micro": _nanmean(precision), "macro": macro_average(precision, groups, eligible)}
        report.map_at_k[label] = _nanmean(ap)
    groups_array = np.asarray(groups)
    for group in sorted(set(groups) - {""}, key=lambda g: (-type_sizes[g], g)):
        mask = groups_array == group
        report.per_type.append(
            {
                GROUP_LABEL: group,
                "items": type_sizes[group],
                "queries": int(mask.sum()),
                "in_macro": group in eligible,
                **{f"p@{k}_{label}": _round(_nanmean(per_label_precision[label][mask])) for label in labels},
                f"map@{k}_{GROUP_LABEL}": _round(_nanmean(per_label_ap[GROUP_LABEL][mask])),
            }
        )
    return report


def _round(value: float) -> float:
    return value if math.isnan(value) else round(value, 4)


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


# ---------------------------------------------------------------------------------------------
# Running a protocol over vectors
# ---------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """One protocol run: the report plus what was asked and answered, in index row numbers."""

    name: str
    report: QualityReport
    query_rows: np.ndarray
    result_rows: np.ndarray
    scores: np.ndarray


def leave_one_out(
    name: str,
    vectors: np.ndarray,
    labels: Sequence[Mapping[str, str]],
    query_rows: Sequence[int],
    k: int = 5,
    min_items: int = 5,
) -> Evaluation:
    """Every row in ``query_rows`` queries the whole index with its stored vector, its own row excluded."""
    from .search import ExactSearcher

    query_rows = np.asarray(query_rows, dtype=np.int64)
    searcher = ExactSearcher().fit(vectors)
    rows, scores = searcher.search(np.asarray(vectors)[query_rows], k, exclude=query_rows)
    report = evaluate_rankings(
        [labels[row] for row in query_rows], rows, labels, query_rows_in_searchable=query_rows, min_items=min_items, k=k
    )
    return Evaluation(name, report, query_rows, rows, scores)


def held_out(
    name: str,
    searchable_vectors: np.ndarray,
    searchable_rows: Sequence[int],
    query_vectors: np.ndarray,
    query_rows: Sequence[int],
    labels: Sequence[Mapping[str, str]],
    k: int = 5,
    min_items: int = 5,
) -> Evaluation:
    """Queries (``query_rows``) search only the searchable rows; ``labels`` is indexed by index row."""
    from .search import ExactSearcher

    searchable_rows = np.asarray(searchable_rows, dtype=np.int64)
    query_rows = np.asarray(query_rows, dtype=np.int64)
    if np.intersect1d(searchable_rows, query_rows).size:
        raise ValueError("held-out queries must not be searchable")
    searcher = ExactSearcher().fit(searchable_vectors)
    local, scores = searcher.search(query_vectors, k)
    report = evaluate_rankings(
        [labels[row] for row in query_rows], local, [labels[row] for row in searchable_rows], min_items=min_items, k=k
    )
    return Evaluation(name, report, query_rows, searchable_rows[local], scores)


def refined_split_vectors(
    features: np.ndarray,
    colours: np.ndarray,
    labels: Sequence[Mapping[str, str]],
    searchable_rows: Sequence[int],
    query_rows: Sequence[int],
    weights: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Label-centroid vectors learned on the searchable rows only (so held-out labels never leak)."""
    from .refine import LabelCentroids

    searchable_rows = np.asarray(searchable_rows, dtype=np.int64)
    query_rows = np.asarray(query_rows, dtype=np.int64)
    train_labels = [labels[row] for row in searchable_rows]
    refiner = LabelCentroids.fit(features[searchable_rows], colours[searchable_rows], train_labels, weights=weights)
    return (
        refiner.index_vectors(features[searchable_rows], colours[searchable_rows], train_labels),
        LabelCentroids.query_vectors(features[query_rows], colours[query_rows]),
    )


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def format_table(report: QualityReport) -> str:
    """The terminal summary: one row per label."""
    k = report.k
    lines = [
        f"Queries: {report.queries}    k = {k}",
        f"{'label':<16}{'P@' + str(k) + ' micro':>12}{'P@' + str(k) + ' macro':>12}{'mAP@' + str(k):>10}",
    ]
    for label, values in report.precision.items():
        lines.append(f"{label:<16}{values['micro']:>12.3f}{values['macro']:>12.3f}{report.map_at_k[label]:>10.3f}")
    return "\n".join(lines)


def weakest_types(report: QualityReport, count: int = 10) -> list[dict[str, object]]:
    """The article types (among those counted in the macro) with the lowest articleType P@k."""
    key = f"p@{report.k}_{GROUP_LABEL}"
    eligible = [row for row in report.per_type if row["in_macro"]]
    return sorted(eligible, key=lambda row: (row[key], -int(row["items"]), str(row[GROUP_LABEL])))[:count]  # type: ignore[arg-type]


def format_weakest(report: QualityReport, count: int = 10) -> str:
    k = report.k
    lines = [f"Weakest article types (P@{k} articleType; types with 5+ items):",
             f"  {'articleType':<24}{'items':>6}{'queries':>8}{'type':>7}{'colour':>8}{'gender':>8}"]
    for row in weakest_types(report, count):
        lines.append(
            f"  {str(row[GROUP_LABEL])[:23]:<24}{row['items']:>6}{row['queries']:>8}{row[f'p@{k}_articleType']:>7.2f}"
            f"{row[f'p@{k}_baseColour']:>8.2f}{row[f'p@{k}_gender']:>8.2f}"
        )
    return "\n".join(lines)


def write_per_type_csv(report: QualityReport, path: str | Path) -> None:
    """One row per article type: items, queries, P@k for each label, AP@k for articleType."""
    path = Path(path)
    if not report.per_type:
        columns = [GROUP_LABEL, "items", "queries", "in_macro"]
    else:
        columns = list(report.per_type[0].keys())
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in report.per_type:
            writer.writerow({key: ("" if isinstance(value, float) and math.isnan(value) else value) for key, value in row.items()})


def compare_reports(plain: QualityReport, refined: QualityReport) -> dict[str, dict[str, float | None]]:
    """Each compared metric: plain, refined and the difference in percentage points."""
    out: dict[str, dict[str, float | None]] = {}
    for name, path in COMPARE_METRICS:
        a, b = plain.metric(path), refined.metric(path)
        out[name.format(k=plain.k)] = _json_number(
            {"plain": a, "refined": b, "delta_points": round(100.0 * (b - a), 2) if not (math.isnan(a) or math.isnan(b)) else float("nan")}
        )
    return out


def format_comparison(plain: QualityReport, refined: QualityReport) -> str:
    rows = compare_reports(plain, refined)
    lines = [f"{'metric':<26}{'plain':>8}{'refined':>9}{'delta (points)':>16}"]
    for name, values in rows.items():
        a, b, d = values["plain"], values["refined"], values["delta_points"]
        fmt = lambda v, w, p: f"{'n/a':>{w}}" if v is None else f"{v:>{w}.{p}f}"  # noqa: E731
        delta = f"{'n/a':>16}" if d is None else f"{d:>+16.1f}"
        lines.append(f"{name:<26}{fmt(a, 8, 3)}{fmt(b, 9, 3)}{delta}")
    return "\n".join(lines)
