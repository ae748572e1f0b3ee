"""The index on disk: its files and manifest, the writer/reader round trip, and damaged indexes refused clearly."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from recommender import (
    Catalogue,
    CatalogueIndexError,
    CatalogueItem,
    IndexCorruptError,
    IndexNotFoundError,
    Manifest,
    ModelIdentity,
    Recommender,
    colour,
    load_index,
)
from recommender.index_store import IndexWriter, index_exists
from tests.build_helpers import leftovers
from tests.recommender_helpers import error_line, run_script

MANIFEST_KEYS = {"backbone", "weights", "weights_fingerprint", "input_size", "pooling", "dim", "count", "created_at", "format_version"}


def test_manifest_and_files(demo_index, resnet_random):
    index = demo_index.load()
    manifest = json.loads((demo_index.path / "manifest.json").read_text(encoding="utf-8"))
    assert index.manifest.to_json() == manifest  # the typed manifest round-trips the file exactly
    assert MANIFEST_KEYS <= manifest.keys()
    assert manifest["backbone"] == "resnet50"
    assert manifest["weights"] == "none"
    assert manifest["weights_fingerprint"] == resnet_random.fingerprint
    assert len(manifest["weights_fingerprint"]) == 64
    assert (manifest["input_size"], manifest["pooling"], manifest["dim"]) == (224, "avg", 2048)
    assert manifest["count"] == len(demo_index.catalogue) == 98
    assert manifest["format_version"] == 1
    assert datetime.fromisoformat(manifest["created_at"]).tzinfo is not None
    assert Path(manifest["images_root"]) == demo_index.catalogue.images_dir.resolve()
    assert manifest["refinement"] == {"method": "none", "colour_histogram": colour.describe()} and manifest["vector_dim"] == 2048

    assert index.vectors.dtype == np.float32 and index.vectors.shape == (98, 2048)
    np.testing.assert_allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-5)
    assert index.ids() == [item.id for item in demo_index.catalogue.items]
    assert index.columns[:2] == ["id", "image"] and "productDisplayName" in index.columns
    assert index.image_path(0).is_file()
    assert index.features is index.vectors and index.colours.shape == (98, 320)
    assert (demo_index.path / "skipped.csv").read_text().splitlines() == ["image,reason"]
    assert demo_index.report.extracted == 98 and demo_index.report.skipped == []
    assert leftovers(demo_index.path) == []


# --- the writer and the reader agree ----------------------------------------------------------

MODEL = ModelIdentity(backbone="test", weights_fingerprint="f" * 64, input_size=8, pooling="avg", feature_dim=4)


def small_catalogue(root: Path, count: int = 3) -> Catalogue:
    """A labelled catalogue whose photos are never read (the writer only records their paths)."""
    images = root / "images"
    images.mkdir(parents=True)
    labels = [("Tshirts", "Red"), ("Tshirts", "Blue"), ("Watches", "Red")]
    items = [
        CatalogueItem(str(n + 1), f"{n + 1}.png", {"id": str(n + 1), "articleType": labels[n % 3][0], "baseColour": labels[n % 3][1]})
        for n in range(count)
    ]
    return Catalogue(images_dir=images, items=items, columns=["id", "articleType", "baseColour"], missing_images=["7"])


def random_rows(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(count, MODEL.feature_dim)).astype(np.float32)
    return features / np.linalg.norm(features, axis=1, keepdims=True), rng.random((count, colour.DIM), dtype=np.float32)


def write(out: Path, catalogue: Catalogue, features: np.ndarray, colours: np.ndarray, **options) -> Manifest:
    refine = options.pop("refine", "none")
    with IndexWriter(out, len(features), MODEL.feature_dim, refine=refine) as writer:
        for row in range(len(features)):
            writer.put(row, features[row], colours[row])
        return writer.commit(catalogue, catalogue.items, options.pop("skipped", []), MODEL, "none", **options)


def test_what_the_writer_writes_the_loader_reads_back(tmp_path):
    catalogue = small_catalogue(tmp_path)
    features, colours = random_rows(3)
    out = tmp_path / "index"

    written = write(out, catalogue, features, colours, skipped=[("9", "9.png: broken")])

    assert index_exists(out) and not index_exists(tmp_path)
    index = load_index(out)
    assert index.manifest == written
    assert (written.count, written.vector_dim, written.refinement_method, written.model) == (3, 4, "none", MODEL)
    assert written.images_root == str(catalogue.images_dir.resolve()) and written.updated_at is None
    assert written.catalogue.columns == ("articleType", "baseColour")
    assert (written.catalogue.skipped, written.catalogue.missing_images) == (1, 1)
    np.testing.assert_array_equal(index.vectors, features)
    np.testing.assert_array_equal(index.colours, colours)
    assert index.features is index.vectors and index.refiner is None
    assert index.ids() == ["1", "2", "3"] and index.columns == ["id", "image", "articleType", "baseColour"]
    assert index.products[2] == {"id": "3", "image": "3.png", "articleType": "Watches", "baseColour": "Red"}
    assert index.image_path(0) == catalogue.images_dir.resolve() / "1.png"
    assert (out / "skipped.csv").read_text(encoding="utf-8").splitlines() == ["image,reason", "9,9.png: broken"]
    assert leftovers(out) == []


def test_a_refined_index_keeps_its_features_and_refinement(tmp_path):
    catalogue = small_catalogue(tmp_path)
    features, colours = random_rows(3)
    out = tmp_path / "index"

    written = write(out, catalogue, features, colours, refine="label-centroids")

    index = load_index(out)
    assert written.refinement_method == "label-centroids" and written.vector_dim == 4 + colour.DIM
    np.testing.assert_array_equal(index.features, features)
    assert index.vectors.shape == (3, 4 + colour.DIM) and index.refiner is not None
    expected = index.refiner.index_vectors(features, colours, [item.labels for item in catalogue.items])
    np.testing.assert_allclose(index.vectors, expected, atol=1e-6)


def test_an_update_keeps_the_creation_date(tmp_path):
    catalogue = small_catalogue(tmp_path)
    out = tmp_path / "index"
    first = write(out, catalogue, *random_rows(3))
    first = dataclasses.replace(first, created_at="2020-01-01T00:00:00+00:00")

    second = write(out, catalogue, *random_rows(3, seed=1), previous=first)

    assert second.created_at == "2020-01-01T00:00:00+00:00" and second.updated_at is not None
    assert load_index(out).manifest.updated_at == second.updated_at


def test_a_writer_left_without_commit_leaves_the_earlier_index_untouched(tmp_path):
    catalogue = small_catalogue(tmp_path)
    out = tmp_path / "index"
    write(out, catalogue, *random_rows(3))
    before = {path.name: path.read_bytes() for path in out.iterdir()}

    with pytest.raises(KeyboardInterrupt):
        with IndexWriter(out, 3, MODEL.feature_dim) as writer:
            writer.put(0, *[rows[0] for rows in random_rows(1, seed=2)])
            assert leftovers(out), "the writer stages its files beside the index"
            raise KeyboardInterrupt

    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert leftovers(out) == []


# --- damaged indexes ------------------------------------------------------------------------


def _damage(index_dir: Path, how: str) -> None:
    manifest_path = index_dir / "manifest.json"
    if how == "missing-dir":
        shutil.rmtree(index_dir)
    elif how == "missing-manifest":
        manifest_path.unlink()
    elif how == "bad-json":
        manifest_path.write_text('{"format_version": 1, "backbone": ', encoding="utf-8")
    elif how == "manifest-not-object":
        manifest_path.write_text("[1, 2]", encoding="utf-8")
    elif how in ("future-version", "no-fingerprint", "wrong-count"):
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if how == "future-version":
            manifest["format_version"] = 99
        elif how == "no-fingerprint":
            del manifest["weights_fingerprint"]
        else:
            manifest["count"] += 1
        manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    elif how == "truncated-vectors":
        data = (index_dir / "vectors.npy").read_bytes()
        (index_dir / "vectors.npy").write_bytes(data[: len(data) // 2])
    elif how == "empty-vectors":
        (index_dir / "vectors.npy").write_bytes(b"")
    elif how == "missing-vectors":
        (index_dir / "vectors.npy").unlink()
    elif how == "wrong-dim":
        np.save(index_dir / "vectors.npy", np.zeros((98, 10), np.float32))
    elif how == "missing-products":
        (index_dir / "products.csv").unlink()
    elif how == "refined-missing-features":
        (index_dir / "features.npy").unlink()
    elif how == "refined-missing-centroids":
        (index_dir / "refine.json").unlink()
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how, error, words",
    [
        ("missing-dir", IndexNotFoundError, "No catalogue index"),
        ("missing-manifest", IndexNotFoundError, "build_index.py"),
        ("bad-json", IndexCorruptError, "unreadable"),
        ("manifest-not-object", IndexCorruptError, "Rebuild"),
        ("future-version", IndexCorruptError, "format version 99"),
        ("no-fingerprint", IndexCorruptError, "lacks weights_fingerprint"),
        ("wrong-count", IndexCorruptError, "inconsistent"),
        ("truncated-vectors", IndexCorruptError, "damaged"),
        ("empty-vectors", IndexCorruptError, "damaged"),
        ("missing-vectors", IndexCorruptError, "damaged"),
        ("wrong-dim", IndexCorruptError, "expected float32 (N, 2048)"),
        ("missing-products", IndexCorruptError, "damaged"),
        ("refined-missing-features", IndexCorruptError, "damaged"),
        ("refined-missing-centroids", IndexCorruptError, "damaged"),
    ],
)
def test_damaged_index_gives_a_clear_error(request, tmp_path, how, error, words):
    source = request.getfixturevalue("demo_index_refined" if how.startswith("refined") else "demo_index")
    index_dir = tmp_path / "index"
    shutil.copytree(source.path, index_dir)
    _damage(index_dir, how)
    with pytest.raises(error) as exc_info:
        load_index(index_dir)
    assert words in str(exc_info.value)
    assert str(index_dir) in str(exc_info.value)
    with pytest.raises(CatalogueIndexError):
        Recommender(index_dir).load()  # the bot's entry point fails the same way, before any model


def test_query_script_reports_a_damaged_index(tmp_path, demo_index):
    index_dir = tmp_path / "index"
    shutil.copytree(demo_index.path, index_dir)
    _damage(index_dir, "empty-vectors")
    result = run_script("query.py", demo_index.load().image_path(0), "--index", index_dir)
    assert result.returncode == 2
    assert "is damaged" in error_line(result)
