"""recommender/evaluation/report.py: how a QualityReport is shown, written and compared."""

from __future__ import annotations

import csv
import json
import math

import pytest

from recommender.evaluation.report import (
    COMPARE_METRICS,
    LABELS,
    QualityReport,
    compare_reports,
    format_comparison,
    format_table,
    format_weakest,
    weakest_types,
    write_per_type_csv,
)

NAN = float("nan")


def type_row(name: str, items: int, p_type: float, in_macro: bool = True, queries: int = 1) -> dict[str, object]:
    return {"articleType": name, "items": items, "queries": queries, "in_macro": in_macro,
            "p@5_articleType": p_type, "p@5_masterCategory": 1.0, "p@5_baseColour": 0.25, "p@5_gender": NAN,
            "map@5_articleType": p_type}  # fmt: skip


def report_with(precision: float, colour: float = 0.5, per_type: list[dict[str, object]] | None = None) -> QualityReport:
    """Every label at ``precision`` (micro and macro) except baseColour, at ``colour``."""
    values = {label: colour if label == "baseColour" else precision for label in LABELS}
    return QualityReport(
        queries=3,
        k=5,
        precision={label: {"micro": value, "macro": value} for label, value in values.items()},
        map_at_k=dict(values),
        per_type=per_type or [],
    )


def test_to_json_names_k_and_writes_nan_as_null():
    report = report_with(0.5, colour=NAN)
    data = report.to_json()
    assert set(data) == {"precision_at_5", "map_at_5", "queries"} and data["queries"] == 3
    assert data["precision_at_5"] == {label: {"micro": None if label == "baseColour" else 0.5,
                                              "macro": None if label == "baseColour" else 0.5} for label in LABELS}  # fmt: skip
    assert data["map_at_5"] == {label: None if label == "baseColour" else 0.5 for label in LABELS}
    json.dumps(data, allow_nan=False)


def test_metric_reads_precision_and_map_paths():
    report = report_with(0.5, colour=0.25)
    report.precision["articleType"]["macro"] = 0.75
    assert report.metric(("precision", "articleType", "micro")) == 0.5
    assert report.metric(("precision", "articleType", "macro")) == 0.75
    assert report.metric(("map", "baseColour")) == 0.25
    for _, path in COMPARE_METRICS:
        assert not math.isnan(report.metric(path))  # every compared metric exists in a report


def test_format_table_has_one_row_per_label():
    lines = format_table(report_with(0.5, colour=0.125)).splitlines()
    assert lines[0] == "Queries: 3    k = 5"
    assert lines[1].split() == ["label", "P@5", "micro", "P@5", "macro", "mAP@5"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert list(rows) == list(LABELS)
    assert rows["articleType"] == ["0.500", "0.500", "0.500"] and rows["baseColour"] == ["0.125", "0.125", "0.125"]


def test_weakest_types_are_eligible_types_lowest_first_ties_by_size_then_name():
    per_type = [type_row("Big", 50, 0.5), type_row("Small", 6, 0.5), type_row("Worst", 9, 0.1),
                type_row("Tiny", 3, 0.0, in_macro=False), type_row("Alpha", 6, 0.5), type_row("Best", 20, 0.9)]  # fmt: skip
    report = report_with(0.5, per_type=per_type)
    assert [row["articleType"] for row in weakest_types(report)] == ["Worst", "Big", "Alpha", "Small", "Best"]
    assert [row["articleType"] for row in weakest_types(report, count=2)] == ["Worst", "Big"]


def test_format_weakest_shows_type_colour_and_gender_precision():
    report = report_with(0.5, per_type=[type_row("A very long article type name", 12, 0.4, queries=3)])
    lines = format_weakest(report).splitlines()
    assert lines[0] == "Weakest article types (P@5 articleType; types with 5+ items):"
    assert lines[1].split() == ["articleType", "items", "queries", "type", "colour", "gender"]
    assert lines[2].startswith("  A very long article typ ")  # cut to 23 characters
    assert lines[2].split()[-5:] == ["12", "3", "0.40", "0.25", "nan"]


def test_per_type_csv_has_a_row_per_type_and_empty_cells_for_nan(tmp_path):
    path = tmp_path / "types.csv"
    write_per_type_csv(report_with(0.5, per_type=[type_row("A", 7, 0.4), type_row("B", 5, NAN, in_macro=False)]), path)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["articleType"] for row in rows] == ["A", "B"]
    assert rows[0]["p@5_articleType"] == "0.4" and rows[0]["p@5_gender"] == "" and rows[1]["p@5_articleType"] == ""
    assert rows[1]["in_macro"] == "False" and rows[0]["items"] == "7"


def test_per_type_csv_of_an_empty_report_is_a_header(tmp_path):
    path = tmp_path / "empty.csv"
    write_per_type_csv(report_with(0.5), path)
    assert path.read_text(encoding="utf-8").splitlines() == ["articleType,items,queries,in_macro"]


def test_compare_reports_gives_the_difference_in_points():
    plain, refined = report_with(0.5, colour=0.25), report_with(0.625, colour=NAN)
    rows = compare_reports(plain, refined)
    assert list(rows) == [name.format(k=5) for name, _ in COMPARE_METRICS]
    assert rows["P@5 articleType micro"] == {"plain": 0.5, "refined": 0.625, "delta_points": 12.5}
    assert rows["P@5 baseColour"] == {"plain": 0.25, "refined": None, "delta_points": None}


def test_format_comparison_writes_na_for_missing_figures():
    lines = format_comparison(report_with(0.5, colour=0.25), report_with(0.625, colour=NAN)).splitlines()
    assert lines[0].split() == ["metric", "plain", "refined", "delta", "(points)"]
    by_name = {line[:26].strip(): line[26:].split() for line in lines[1:]}
    assert by_name["P@5 articleType macro"] == ["0.500", "0.625", "+12.5"]
    assert by_name["P@5 baseColour"] == ["0.250", "n/a", "n/a"]
    assert len(by_name) == len(COMPARE_METRICS)


@pytest.mark.parametrize("delta", [-0.03, 0.0])
def test_format_comparison_signs_the_delta(delta):
    line = format_comparison(report_with(0.5), report_with(0.5 + delta)).splitlines()[1]
    assert line.split()[-1] == f"{100 * delta:+.1f}"
