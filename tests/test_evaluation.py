"""Retrieval-quality evaluation: metric definitions, protocols, contact sheet and scripts/evaluate.py."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from recommender import evaluation as ev
from recommender.contact_sheet import SheetCell, contact_sheet, save_contact_sheet, sheet_size
from recommender.vectors import l2_normalize
from tests.recommender_helpers import error_line, run_script


def items(*types: str, **other: str) -> list[dict[str, str]]:
    return [{"articleType": t, "masterCategory": "M", "baseColour": other.get("colour", "Red"), "gender": "Men"} for t in types]


# --- metric definitions -----------------------------------------------------------------------


def test_perfect_ranking_scores_one():
    searchable = items(*["A"] * 6, *["B"] * 6)
    queries = items("A", "B")
    report = ev.evaluate_rankings(queries, np.array([[0, 1, 2, 3, 4], [6, 7, 8, 9, 10]]), searchable)
    assert report.precision["articleType"] == {"micro": 1.0, "macro": 1.0}
    assert report.map_at_k["articleType"] == 1.0
    assert report.queries == 2 and report.k == 5


def test_average_precision_of_a_known_mixed_ranking():
    relevance = np.array([[1, 0, 1, 0, 0]] * 3, dtype=bool)
    ap = ev.average_precision_at_k(relevance, np.array([2, 10, 0]))
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)
    assert ap[1] == pytest.approx((1 + 2 / 3) / 5)  # more relevant items than k: divide by k
    assert math.isnan(ap[2])  # nothing relevant exists: not scored


def test_evaluate_rankings_gives_the_exact_fractions():
    # Searchable: rows 0 and 2 are type A (2 relevant available), the rest B.
    searchable = items("A", "B", "A", "B", "B", "B", "B")
    report = ev.evaluate_rankings(items("A"), np.array([[0, 1, 2, 3, 4]]), searchable, min_items=1)
    assert report.precision["articleType"]["micro"] == pytest.approx(2 / 5)
    assert report.map_at_k["articleType"] == pytest.approx((1 + 2 / 3) / 2)
    assert report.precision["masterCategory"]["micro"] == 1.0


def test_short_result_lists_count_missing_places_as_wrong():
    report = ev.evaluate_rankings(items("A"), np.array([[0, 1]]), items("A", "A"), k=5, min_items=1)
    assert report.precision["articleType"]["micro"] == pytest.approx(2 / 5)
    assert report.map_at_k["articleType"] == 1.0  # both of the 2 relevant items, ranked first


def test_macro_is_the_mean_of_type_means_over_types_with_five_items():
    # A: 6 catalogue items, 2 queries (P = 1.0, 0.6); B: 5 items, 1 query (P = 0.2); C: 4 items (ignored).
    searchable = items(*["A"] * 5, *["B"] * 4, *["C"] * 3, "X", "X", "X", "X", "X")
    a, b, c, x = [0, 1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]
    queries = items("A", "A", "B", "C")  # held out: they add one item each to their type
    results = np.array([a, a[:3] + x[:2], b[:1] + x[:4], c + x[:2]])
    report = ev.evaluate_rankings(queries, results, searchable)
    p = [1.0, 0.6, 0.2, 0.6]
    assert report.precision["articleType"]["micro"] == pytest.approx(np.mean(p))
    assert report.precision["articleType"]["macro"] == pytest.approx(np.mean([np.mean(p[:2]), p[2]]))
    per_type = {row["articleType"]: row for row in report.per_type}
    assert per_type["A"]["items"] == 7 and per_type["A"]["in_macro"] and per_type["A"]["queries"] == 2
    assert per_type["C"]["items"] == 4 and not per_type["C"]["in_macro"]
    assert [row["articleType"] for row in ev.weakest_types(report)] == ["B", "A"]


def test_unknown_query_labels_are_left_out_and_empty_labels_never_match():
    searchable = items("A", "A", colour="")
    queries = items("A", colour="") + items("A", colour="Red")
    report = ev.evaluate_rankings(queries, np.array([[0, 1], [0, 1]]), searchable, min_items=1)
    assert report.precision["baseColour"]["micro"] == 0.0  # only the query with a known colour counts
    assert report.precision["articleType"]["micro"] == 1.0
    all_unknown = ev.evaluate_rankings(items("A", colour=""), np.array([[0, 1]]), searchable, min_items=1)
    assert math.isnan(all_unknown.precision["baseColour"]["micro"])
    assert all_unknown.to_json()["precision_at_2"]["baseColour"]["micro"] is None  # NaN is not JSON
    json.dumps(all_unknown.to_json(), allow_nan=False)


def test_a_query_among_its_own_results_is_refused():
    with pytest.raises(ValueError, match="own row"):
        ev.evaluate_rankings(items("A"), np.array([[0, 1]]), items("A", "A"), query_rows_in_searchable=[0], min_items=1)


# --- protocols ----------------------------------------------------------------------------------


def test_leave_one_out_never_counts_the_query_itself():
    rng = np.random.default_rng(0)
    base = l2_normalize(rng.standard_normal((20, 32)))
    # Every product its own article type; with partners, each has one exact duplicate of its type.
    singles = ev.leave_one_out("x", base, items(*[f"T{i}" for i in range(20)]), np.arange(20), k=5, min_items=1)
    pairs_vectors = np.repeat(base, 2, axis=0)
    pairs_labels = items(*[f"T{i}" for i in range(20) for _ in range(2)])
    pairs = ev.leave_one_out("x", pairs_vectors, pairs_labels, np.arange(40), k=5, min_items=1)
    assert singles.report.precision["articleType"]["micro"] == 0.0
    assert math.isnan(singles.report.map_at_k["articleType"])  # nothing of the same type to find
    assert pairs.report.precision["articleType"]["micro"] == pytest.approx(1 / 5)  # the partner, not itself
    assert pairs.report.map_at_k["articleType"] == pytest.approx(1.0)
    partner = np.arange(40) ^ 1
    np.testing.assert_array_equal(pairs.result_rows[:, 0], partner)
    assert not np.any(pairs.result_rows == np.arange(40)[:, None])
    assert not np.any(singles.result_rows == np.arange(20)[:, None])


def test_stratified_holdout_is_deterministic_and_keeps_every_type_searchable():
    groups = ["A"] * 50 + ["B"] * 10 + ["C"] * 2 + ["D"]
    mask = ev.stratified_holdout(groups, 0.2, seed=3)
    np.testing.assert_array_equal(mask, ev.stratified_holdout(groups, 0.2, seed=3))
    assert not np.array_equal(mask, ev.stratified_holdout(groups, 0.2, seed=4))
    held = np.asarray(groups)[mask]
    assert (held == "A").sum() == 10 and (held == "B").sum() == 2 and (held == "C").sum() == 1 and (held == "D").sum() == 0
    searchable = set(np.asarray(groups)[~mask])
    assert searchable == {"A", "B", "C", "D"}
    assert ev.stratified_holdout(groups, 0.9, seed=0)[:50].sum() == 45
    for bad in (0.0, 1.0, -0.2, float("nan")):
        with pytest.raises(ValueError):
            ev.stratified_holdout(groups, bad)


def test_held_out_split_is_disjoint_and_refinement_learns_only_from_the_searchable_part():
    rng = np.random.default_rng(1)
    features, colours = l2_normalize(rng.standard_normal((40, 16))), l2_normalize(rng.random((40, 320)))
    labels = items(*["A"] * 20, *["B"] * 20)
    mask = ev.stratified_holdout([row["articleType"] for row in labels], 0.25, seed=0)
    query_rows, searchable_rows = np.flatnonzero(mask), np.flatnonzero(~mask)
    assert not set(query_rows) & set(searchable_rows) and len(query_rows) + len(searchable_rows) == 40
    train, test = ev.refined_split_vectors(features, colours, labels, searchable_rows, query_rows)
    # The held-out products' labels must not influence anything: relabel them, get the same vectors.
    relabelled = [dict(row, articleType="B", baseColour="Zz") if i in set(query_rows) else row for i, row in enumerate(labels)]
    train2, test2 = ev.refined_split_vectors(features, colours, relabelled, searchable_rows, query_rows)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(test, test2)
    result = ev.held_out("refined", train, searchable_rows, test, query_rows, labels)
    assert set(result.result_rows.ravel()) <= set(searchable_rows)
    with pytest.raises(ValueError, match="must not be searchable"):
        ev.held_out("x", features, np.arange(40), features[:2], np.arange(2), labels)


# --- contact sheet -----------------------------------------------------------------------------


def test_contact_sheet_is_a_png_of_the_documented_size(tmp_path):
    photo = tmp_path / "p.jpg"
    Image.new("RGB", (60, 80), (200, 30, 40)).save(photo)
    assert sheet_size(12) == (2 * 10 + 6 * 120 + 5 * 6 + 12, 2 * 10 + 28 + 12 * (160 + 36) + 11 * 6) == (782, 2466)
    query = SheetCell(photo, "Tshirts", "Red", "A very long product display name that cannot fit")
    row = [query] + [SheetCell(photo, "Tshirts" if i % 2 else "Shirts", "Red", "x", 0.9 - i / 10, bool(i % 2)) for i in range(5)]
    rows = [row, row[:3] + [SheetCell(tmp_path / "missing.jpg", correct=False)]]
    path = save_contact_sheet(tmp_path / "sheet.png", rows, header="test ✓ ✗")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == sheet_size(2) and image.mode == "RGB"
        pixels = np.asarray(image)
    # The first result (wrong type) has a red frame, the second (right type) a green one.
    x1, x2, y = 10 + 120 + 18, 10 + 2 * 120 + 6 + 18, 10 + 28 + 80
    assert tuple(pixels[y, x1 + 1]) == (210, 30, 30) and tuple(pixels[y, x2 + 1]) == (20, 150, 50)
    assert contact_sheet([], "empty").size == sheet_size(0)


# --- scripts/evaluate.py end to end ------------------------------------------------------------


def evaluate(catalogue, index, *args):
    return run_script("evaluate.py", "--images", catalogue.images_dir, "--styles", catalogue.styles_path, "--index", index, *args)


def check_shape(data: dict, queries: int) -> None:
    assert set(data["precision_at_5"]) == set(ev.LABELS) == set(data["map_at_5"])
    for label in ev.LABELS:
        assert set(data["precision_at_5"][label]) == {"micro", "macro"}
        assert all(0.0 <= value <= 1.0 for value in data["precision_at_5"][label].values())
        assert 0.0 <= data["map_at_5"][label] <= 1.0
    assert data["queries"] == queries


def test_evaluate_leave_one_out_on_a_plain_index(tmp_path, demo_index):
    from recommender import load_index

    out = tmp_path / "out.json"
    result = evaluate(demo_index.catalogue, demo_index.path, "--json", out, "--sheet", tmp_path / "sheet.png")
    assert result.returncode == 0, result.stderr
    assert "Weakest article types" in result.stdout and "articleType" in result.stdout
    data = json.loads(out.read_text())
    check_shape(data, 98)
    assert data["mode"] == "leave-one-out" and "compare" not in data
    # The same figure computed by brute force, the query itself excluded.
    index = load_index(demo_index.path)
    types = np.array([product["articleType"] for product in index.products])
    scores = index.vectors @ index.vectors.T
    np.fill_diagonal(scores, -np.inf)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    assert data["precision_at_5"]["articleType"]["micro"] == pytest.approx((types[top] == types[:, None]).mean(), abs=0.01)
    with open(tmp_path / "out.per_type.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["articleType"] for row in rows} == set(types)
    assert sum(int(row["queries"]) for row in rows) == 98 and "p@5_baseColour" in rows[0]
    with Image.open(tmp_path / "sheet.png") as image:
        assert image.format == "PNG" and image.size == sheet_size(12)


def test_evaluate_refined_index_holds_out_and_compares(tmp_path, demo_index_refined):
    demo_index = demo_index_refined
    out = tmp_path / "refined.json"
    result = evaluate(demo_index.catalogue, demo_index.path, "--compare", "--json", out, "--per-type-csv", tmp_path / "t.csv")
    assert result.returncode == 0, result.stderr
    assert "leave-one-out would leak" in result.stdout
    assert "delta (points)" in result.stdout
    data = json.loads(out.read_text())
    check_shape(data, data["split"]["queries"])
    assert data["mode"] == "held-out" and data["refinement"] == "label-centroids"
    assert data["split"]["queries"] + data["split"]["searchable"] == len(demo_index.catalogue.items)
    compare = data["compare"]
    assert compare["refined"]["precision_at_5"] == data["precision_at_5"]
    metric = compare["metrics"]["P@5 baseColour"]
    assert metric["delta_points"] == pytest.approx(100 * (metric["refined"] - metric["plain"]), abs=0.01)
    assert (tmp_path / "t.csv").is_file()


def test_evaluate_refuses_styles_without_a_required_column(tmp_path, demo_index):
    demo_catalogue, plain_index = demo_index.catalogue, demo_index.path
    with open(demo_catalogue.styles_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    styles = tmp_path / "styles.csv"
    with open(styles, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[c for c in rows[0] if c != "baseColour"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    result = run_script("evaluate.py", "--images", demo_catalogue.images_dir, "--styles", styles, "--index", plain_index)
    assert result.returncode == 2
    assert "lacks required column(s): baseColour" in error_line(result)
    bad = run_script("evaluate.py", "--images", demo_catalogue.images_dir, "--styles", demo_catalogue.styles_path,
                     "--index", plain_index, "--holdout", "1.5")
    assert bad.returncode == 2 and "--holdout must be between 0 and 1" in error_line(bad)


def test_evaluate_real_photos_with_imagenet_features(tmp_path, fashion_index):
    """600 real products, real MobileNetV2: far better than chance, and the plain/refined comparison runs."""
    out = tmp_path / "real.json"
    result = evaluate(fashion_index.catalogue, fashion_index.path, "--compare", "--json", out)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    check_shape(data, data["split"]["queries"])
    plain = data["compare"]["plain"]["precision_at_5"]
    assert data["precision_at_5"] == plain  # a plain index: its own figures are the plain ones
    assert plain["articleType"]["micro"] > 0.5 and plain["masterCategory"]["micro"] > 0.85
