"""What one evaluation measured, and how it is shown: terminal tables, weakest types, CSV, comparison.

:class:`QualityReport` is filled by :func:`recommender.evaluation.metrics.evaluate_rankings`;
everything here only reads it. NaN (a metric nothing could be scored for) is shown as ``n/a``,
written as an empty CSV cell and as JSON ``null``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The catalogue labels every report scores, in the order its tables list them.
LABELS = ("articleType", "masterCategory", "baseColour", "gender")
#: The label a report breaks down by (and the macro averages group by).
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
    per_type: list[dict[str, Any]] = field(default_factory=list)

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


def weakest_types(report: QualityReport, count: int = 10) -> list[dict[str, Any]]:
    """The article types (among those counted in the macro) with the lowest articleType P@k."""
    key = f"p@{report.k}_{GROUP_LABEL}"
    eligible = [row for row in report.per_type if row["in_macro"]]
    return sorted(eligible, key=lambda row: (row[key], -int(row["items"]), str(row[GROUP_LABEL])))[:count]


def format_weakest(report: QualityReport, count: int = 10) -> str:
    """The terminal table of :func:`weakest_types`, with their colour and gender P@k beside."""
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


def compare_reports(plain: QualityReport, refined: QualityReport, name: str = "refined") -> dict[str, dict[str, float | None]]:
    """Each compared metric: plain, the other method's (under ``name``) and the difference in percentage points."""
    out: dict[str, dict[str, float | None]] = {}
    for metric, path in COMPARE_METRICS:
        a, b = plain.metric(path), refined.metric(path)
        out[metric.format(k=plain.k)] = _json_number(
            {"plain": a, name: b, "delta_points": round(100.0 * (b - a), 2) if not (math.isnan(a) or math.isnan(b)) else float("nan")}
        )
    return out


def _cell(value: float | None, width: int, places: int) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.{places}f}"


def format_comparison(plain: QualityReport, refined: QualityReport, name: str = "refined") -> str:
    """The terminal table of :func:`compare_reports`."""
    rows = compare_reports(plain, refined, name)
    lines = [f"{'metric':<26}{'plain':>8}{name:>9}{'delta (points)':>16}"]
    for metric, values in rows.items():
        a, b, d = values["plain"], values[name], values["delta_points"]
        delta = f"{'n/a':>16}" if d is None else f"{d:>+16.1f}"
        lines.append(f"{metric:<26}{_cell(a, 8, 3)}{_cell(b, 9, 3)}{delta}")
    return "\n".join(lines)
