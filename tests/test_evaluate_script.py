"""scripts/evaluate.py run as a real process: both protocols, the comparison, its files and refusals."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from recommender import load_index
from recommender.evaluation.contact_sheet import sheet_size
from recommender.evaluation.report import LABELS
from tests.recommender_helpers import error_line, run_script


def evaluate(catalogue, index, *args):
    return run_script("evaluate.py", "--images", catalogue.images_dir, "--styles", catalogue.styles_path, "--index", index, *args)


def check_shape(data: dict, queries: int) -> None:
    assert set(data["precision_at_5"]) == set(LABELS) == set(data["map_at_5"])
    for label in LABELS:
        assert set(data["precision_at_5"][label]) == {"micro", "macro"}
        assert all(0.0 <= value <= 1.0 for value in data["precision_at_5"][label].values())
        assert 0.0 <= data["map_at_5"][label] <= 1.0
    assert data["queries"] == queries


def test_evaluate_leave_one_out_on_a_plain_index(tmp_path, demo_index):
    out = tmp_path / "out.json"
    result = evaluate(demo_index.catalogue, demo_index.path, "--json", out, "--sheet", tmp_path / "sheet.png")
    assert result.returncode == 0, result.stderr
    assert "Weakest article types" in result.stdout and "articleType" in result.stdout
    data = json.loads(out.read_text())
    check_shape(data, 98)
    assert data["mode"] == "leave-one-out" and "compare" not in data
    assert data["query_photos"] == "catalogue" and "shopper" not in data
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


def test_shopper_queries_on_a_refined_index_compare_on_the_same_split(tmp_path, demo_index_refined):
    demo_index = demo_index_refined
    catalogue_json, shopper_json = tmp_path / "catalogue.json", tmp_path / "shopper.json"
    catalogue_run = evaluate(demo_index.catalogue, demo_index.path, "--compare", "--json", catalogue_json)
    result = evaluate(demo_index.catalogue, demo_index.path, "--compare", "--queries", "shopper", "--json", shopper_json,
                      "--sheet", tmp_path / "sheet.png", "--exact-items", "0")  # exact items: the leave-one-out test below
    assert catalogue_run.returncode == 0 and result.returncode == 0, result.stderr
    assert "shopper queries (seed 0)" in result.stdout and "ms per query to make" in result.stdout
    catalogue, shopper = json.loads(catalogue_json.read_text()), json.loads(shopper_json.read_text())
    check_shape(shopper, shopper["split"]["queries"])
    assert shopper["split"] == catalogue["split"]  # the same queries, only their photos differ
    assert shopper["query_photos"] == "shopper" and catalogue["query_photos"] == "catalogue"
    assert set(shopper["shopper"]["ms_per_query"]) == {"transform", "decode_and_embed"}
    for name in ("plain", "refined"):
        assert shopper["compare"][name]["precision_at_5"] != catalogue["compare"][name]["precision_at_5"]
    assert shopper["compare"]["refined"]["precision_at_5"] == shopper["precision_at_5"]
    with Image.open(tmp_path / "sheet.png") as image:
        assert image.size == sheet_size(12)
    # The same seed gives the same photos, hence the same figures.
    again = tmp_path / "again.json"
    assert evaluate(demo_index.catalogue, demo_index.path, "--compare", "--queries", "shopper", "--json", again, "--exact-items", "0").returncode == 0
    assert json.loads(again.read_text())["compare"] == shopper["compare"]


def test_shopper_queries_leave_one_out_on_a_plain_index(tmp_path, demo_index):
    out = tmp_path / "shopper.json"
    result = evaluate(demo_index.catalogue, demo_index.path, "--queries", "shopper", "--json", out, "--exact-items", "12")
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    check_shape(data, 98)
    assert data["mode"] == "leave-one-out" and data["query_photos"] == "shopper"
    exact = data["exact_item"]  # shopper photos of 12 indexed products searching the whole index
    assert exact["queries"] == 12 and 0.0 <= exact["recall_at_1"] <= exact["recall_at_5"] <= 1.0 and exact["seed"] == 0
    assert "Exact item (12 shopper photos of indexed products" in result.stdout
    # the index has keypoints: the figures are the exact-item stage's, the global search's beside them
    assert demo_index.recommender().finds_exact_items
    assert set(exact) >= {"called_exact", "false_exact", "ms_per_photo", "global_only"} and exact["global_only"]["queries"] == 12
    assert 0.0 <= exact["false_exact"] <= 1.0 and "false exact matches" in result.stdout
    # what a shop that does not carry the product shows, through the stage and without it
    taken_out = exact["taken_out_agreement"]
    assert taken_out and all(set(figures) == {"with_stage", "without_stage"} for figures in taken_out.values())
    assert all(0.0 <= value <= 1.0 for figures in taken_out.values() for value in figures.values())
    assert "with the product taken out, the album's 5 share the photo's product's" in result.stdout
    assert "12 shopper photos through keypoint verification" in result.stdout  # the photo alone, as the bot by default
    from scripts.evaluate import parse_args

    common = ["--images", "i", "--styles", "s.csv", "--index", "x", "--queries", "shopper"]
    assert parse_args([*common, "--exact-crops"]).exact_crops and not parse_args(common).exact_crops
    # (that shopper photos give other figures than catalogue photos: the refined-index test above)
    bad = evaluate(demo_index.catalogue, demo_index.path, "--queries", "phone")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


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


def test_shopper_photos_are_harder_than_catalogue_photos_but_far_from_chance(tmp_path, fashion_index):
    """Real MobileNetV2 on 600 real products: the shopper protocol costs points, yet still finds the category."""
    catalogue_json, shopper_json = tmp_path / "catalogue.json", tmp_path / "shopper.json"
    assert evaluate(fashion_index.catalogue, fashion_index.path, "--holdout", "0.2", "--json", catalogue_json).returncode == 0
    result = evaluate(fashion_index.catalogue, fashion_index.path, "--holdout", "0.2", "--queries", "shopper", "--json", shopper_json, "--exact-items", "0")
    assert result.returncode == 0, result.stderr
    catalogue = json.loads(catalogue_json.read_text())["precision_at_5"]
    shopper = json.loads(shopper_json.read_text())["precision_at_5"]
    assert shopper["articleType"]["micro"] < catalogue["articleType"]["micro"] - 0.1
    assert shopper["masterCategory"]["micro"] > 0.6


def test_a_head_index_is_evaluated_held_out_with_its_head_retrained_on_the_searchable_side(tmp_path, demo_catalogue, mobilenet_random):
    from recommender import build_index
    from recommender.head import METHOD, HeadSettings

    index_dir = tmp_path / "head"
    settings = HeadSettings(hidden=32, dim=16, epochs=2, views=1, view_size=(96, 128))
    build_index(demo_catalogue, index_dir, mobilenet_random, head="labels", head_settings=settings)
    catalogue_json, shopper_json = tmp_path / "catalogue.json", tmp_path / "shopper.json"
    result = evaluate(demo_catalogue, index_dir, "--compare", "--json", catalogue_json)
    assert result.returncode == 0, result.stderr
    assert "head re-trained on the rest" in result.stdout and "Re-training the embedding head on" in result.stdout
    assert "delta (points)" in result.stdout and "head" in result.stdout.split("delta (points)")[0].splitlines()[-1]
    catalogue = json.loads(catalogue_json.read_text())
    check_shape(catalogue, catalogue["split"]["queries"])
    assert catalogue["mode"] == "held-out" and catalogue["refinement"] == METHOD and catalogue["split"]["holdout"] == 0.2
    assert catalogue["split"]["queries"] + catalogue["split"]["searchable"] == len(demo_catalogue.items)
    compare = catalogue["compare"]
    assert set(compare) == {"plain", "head", "metrics"}
    assert compare["head"]["precision_at_5"] == catalogue["precision_at_5"]
    metric = compare["metrics"]["P@5 articleType micro"]
    assert metric["delta_points"] == pytest.approx(100 * (metric["head"] - metric["plain"]), abs=0.01)

    shopper_run = evaluate(demo_catalogue, index_dir, "--compare", "--queries", "shopper", "--json", shopper_json)
    assert shopper_run.returncode == 0, shopper_run.stderr
    shopper = json.loads(shopper_json.read_text())
    assert shopper["split"] == catalogue["split"] and shopper["query_photos"] == "shopper"
    assert shopper["compare"]["head"]["precision_at_5"] == shopper["precision_at_5"]
    assert shopper["compare"]["plain"]["precision_at_5"] != compare["plain"]["precision_at_5"]  # other query photos
