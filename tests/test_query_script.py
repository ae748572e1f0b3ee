"""scripts/query.py run as a real process: table and JSON output, clear ``error:`` lines."""

from __future__ import annotations

import json
import shutil

import pytest

from recommender import build_index, load_catalogue
from tests.recommender_helpers import error_line, run_script


def test_query_json_output(tmp_path, demo_index):
    catalogue = demo_index.catalogue
    good = [catalogue.images_dir / item.image for item in catalogue.items[:2]]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(good[0].read_bytes()[:200])
    arguments = [str(good[0]), str(bad), str(good[1])]
    result = run_script("query.py", *arguments, "--index", demo_index.path, "--k", 3, "--json")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert list(output) == arguments
    assert set(output[str(bad)]) == {"error"} and "damaged" in output[str(bad)]["error"]
    label_columns = [column for column in catalogue.columns if column != "id"]
    for path, item in zip(good, catalogue.items[:2]):
        results = output[str(path)]
        assert len(results) == 3
        assert all(list(r) == ["id", "score", "exact_match", *label_columns] for r in results)
        assert not any(r["exact_match"] for r in results[1:])  # only the first can be the very product
        assert results[0]["id"] == item.id and results[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert results[0]["productDisplayName"] == item.labels["productDisplayName"]
        # the catalogue photo itself comes first (verified or not), the rest by similarity
        assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    # --exact-crops: the exact-item search also looks at the photo's crops, as the bot with EXACT_CROPS=on
    cropped = run_script("query.py", str(good[0]), "--index", demo_index.path, "--k", 3, "--json", "--exact-crops")
    assert cropped.returncode == 0, cropped.stderr
    assert json.loads(cropped.stdout)[str(good[0])][0]["id"] == catalogue.items[0].id


def test_query_table_on_a_plain_folder(tmp_path, demo_catalogue, resnet_random):
    """No styles.csv: ids are file names and products are captioned "Product <id>"."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for item in demo_catalogue.items[:6]:
        shutil.copy(demo_catalogue.images_dir / item.image, photos / f"p{item.id}.png")
    build_index(load_catalogue(photos), tmp_path / "index", resnet_random)
    query = photos / "p1003.png"
    missing = tmp_path / "missing.jpg"

    result = run_script("query.py", query, missing, "--index", tmp_path / "index", "--k", 4)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index(str(query))
    assert lines[start + 1].split() == ["#", "score", "id", "product"]
    rows = [line.split() for line in lines[start + 2 : start + 6]]
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert rows[0][2:5] == ["p1003", "Product", "p1003"]
    assert rows[0][5:] in ([], "(exact match: this very product, verified by its keypoints)".split())
    assert all(len(row) == 5 for row in rows[1:])  # only the first can be the very product
    assert float(rows[0][1]) == pytest.approx(1.0, abs=1e-3)
    assert all(row[3] == "Product" and row[4] == row[2] for row in rows)
    assert lines[lines.index(str(missing)) + 1].strip().startswith("error: Cannot read image file missing.jpg")


def test_query_with_a_mismatched_model_or_missing_index(tmp_path, demo_index):
    result = run_script("query.py", "x.jpg", "--index", demo_index.path, "--backbone", "mobilenet_v2")
    assert result.returncode == 2
    assert "built with backbone 'resnet50', not 'mobilenet_v2'" in error_line(result)
    result = run_script("query.py", "x.jpg", "--index", tmp_path / "nothing")
    assert result.returncode == 2
    assert "No catalogue index at" in error_line(result)


@pytest.mark.parametrize("k, message", [("0", "must be at least 1, not 0"), ("-2", "must be at least 1, not -2"), ("x", "expected a whole number")])
def test_query_refuses_a_bad_k(demo_photo, k, message):
    result = run_script("query.py", demo_photo, "--index", "unused", "--k", k)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"argument --k: {message}" in result.stderr

