"""recommender/refine.py: label centroids learned from the catalogue, applied to index vectors only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from recommender import colour
from recommender.refine import (
    COLOUR_CENTROIDS,
    DEFAULT_WEIGHTS,
    METHOD,
    PARAMS_JSON,
    LabelCentroids,
    can_refine,
)
from recommender.vectors import l2_normalize

FEATURE_DIM = 6


def catalogue(seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    """Eight products: types A/B, colours Red/Blue, one product with no labels at all."""
    rng = np.random.default_rng(seed)
    features = l2_normalize(rng.standard_normal((8, FEATURE_DIM)))
    colours = l2_normalize(rng.random((8, colour.DIM)))
    types = ["A", "A", "A", "B", "B", "B", "A", ""]
    colour_names = ["Red", "Blue", "Red", "Blue", "Red", "Blue", "", ""]
    labels = [{"articleType": t, "baseColour": c} for t, c in zip(types, colour_names)]
    return features, colours, labels


def test_centroids_are_unit_means_of_each_label():
    features, colours, labels = catalogue()
    refiner = LabelCentroids.fit(features, colours, labels)
    assert refiner.type_names == ["A", "B"] and refiner.colour_names == ["Blue", "Red"]  # sorted, "" never learned
    np.testing.assert_allclose(refiner.type_centroids[0], l2_normalize(features[[0, 1, 2, 6]].mean(axis=0)), atol=1e-6)
    np.testing.assert_allclose(refiner.colour_centroids[1], l2_normalize(colours[[0, 2, 4]].mean(axis=0)), atol=1e-6)
    assert refiner.weights == DEFAULT_WEIGHTS and refiner.weights is not DEFAULT_WEIGHTS


def test_index_vectors_follow_the_documented_formula():
    features, colours, labels = catalogue()
    refiner = LabelCentroids.fit(features, colours, labels)
    vectors = refiner.index_vectors(features, colours, labels)
    assert vectors.shape == (8, refiner.vector_dim(FEATURE_DIM)) == (8, FEATURE_DIM + colour.DIM)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Product 1: type A, colour Blue.  x → l2n([x + 1.5 C_A, 0.1 h + 0.2 H_Blue])
    expected = l2_normalize(np.concatenate([features[1] + 1.5 * refiner.type_centroids[0],
                                            0.1 * colours[1] + 0.2 * refiner.colour_centroids[0]]))  # fmt: skip
    np.testing.assert_allclose(vectors[1], expected, atol=1e-6)


def test_unknown_labels_keep_the_products_own_vector():
    features, colours, labels = catalogue()
    refiner = LabelCentroids.fit(features, colours, labels)
    vectors = refiner.index_vectors(features, colours, labels)
    # Product 7 has no labels: its own features and colours stand in for the centroids.
    expected = l2_normalize(np.concatenate([2.5 * features[7], 0.3 * colours[7]]))
    np.testing.assert_allclose(vectors[7], expected, atol=1e-6)
    # A label never seen when fitting is treated the same way.
    unseen = refiner.index_vectors(features[:1], colours[:1], [{"articleType": "Z", "baseColour": "Zz"}])
    np.testing.assert_allclose(unseen[0], l2_normalize(np.concatenate([2.5 * features[0], 0.3 * colours[0]])), atol=1e-6)


def test_products_of_one_type_move_closer_together():
    features, colours, labels = catalogue()
    vectors = LabelCentroids.fit(features, colours, labels).index_vectors(features, colours, labels)
    plain = LabelCentroids.query_vectors(features, colours)
    same_type = [(0, 1), (0, 2), (3, 4), (3, 5)]
    assert all(vectors[a] @ vectors[b] > plain[a] @ plain[b] for a, b in same_type)


def test_query_vectors_need_no_labels():
    features, colours, _ = catalogue()
    queries = LabelCentroids.query_vectors(3 * features, 2 * colours)  # any scale: both parts are normalised first
    np.testing.assert_allclose(queries, l2_normalize(np.concatenate([features, colours], axis=1)), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)


def test_weights_change_the_pull():
    features, colours, labels = catalogue()
    plain_like = {"feature": 1.0, "type_centroid": 0.0, "colour": 1.0, "colour_centroid": 0.0}
    refiner = LabelCentroids.fit(features, colours, labels, weights=plain_like)
    np.testing.assert_allclose(refiner.index_vectors(features, colours, labels),
                               LabelCentroids.query_vectors(features, colours), atol=1e-6)  # fmt: skip


def test_save_and_load_round_trip(tmp_path):
    features, colours, labels = catalogue()
    refiner = LabelCentroids.fit(features, colours, labels, weights=dict(DEFAULT_WEIGHTS, colour=0.3))
    refiner.save(tmp_path)
    loaded = LabelCentroids.load(tmp_path)
    assert loaded.type_names == refiner.type_names and loaded.colour_names == refiner.colour_names
    assert loaded.weights == refiner.weights and loaded.weights["colour"] == 0.3
    np.testing.assert_array_equal(loaded.type_centroids, refiner.type_centroids)
    np.testing.assert_array_equal(loaded.index_vectors(features, colours, labels), refiner.index_vectors(features, colours, labels))


def test_load_refuses_centroids_that_do_not_match_their_names(tmp_path):
    features, colours, labels = catalogue()
    LabelCentroids.fit(features, colours, labels).save(tmp_path)
    params = json.loads((tmp_path / PARAMS_JSON).read_text(encoding="utf-8"))
    params["colour_names"].append("Green")
    (tmp_path / PARAMS_JSON).write_text(json.dumps(params), encoding="utf-8")
    with pytest.raises(ValueError, match="do not match their names"):
        LabelCentroids.load(tmp_path)
    (tmp_path / COLOUR_CENTROIDS).unlink()
    with pytest.raises(FileNotFoundError):
        LabelCentroids.load(tmp_path)


def test_describe_records_the_method_and_the_histogram():
    features, colours, labels = catalogue()
    described = LabelCentroids.fit(features, colours, labels).describe()
    assert described["method"] == METHOD and described["types"] == 2 and described["colours"] == 2
    assert described["colour_histogram"]["bins"] == [colour.L_BINS, colour.AB_BINS, colour.AB_BINS]
    json.dumps(described)


def test_can_refine_needs_type_and_colour_columns():
    assert can_refine(["id", "articleType", "baseColour", "gender"])
    assert not can_refine(["id", "articleType"]) and not can_refine(["id", "baseColour"])


# --- the colour-histogram method: recorded at build time, honoured at query time -------------------------------------


def test_the_colour_method_is_saved_loaded_and_described(tmp_path):
    features, colours, labels = catalogue()
    refiner = LabelCentroids.fit(features, colours, labels)
    assert refiner.colour_method == colour.DEFAULT_METHOD == colour.BORDER_METHOD
    assert refiner.describe()["colour_histogram"] == colour.describe(colour.BORDER_METHOD)
    refiner.save(tmp_path)
    assert LabelCentroids.load(tmp_path).colour_method == colour.BORDER_METHOD
    legacy = LabelCentroids.fit(features, colours, labels, colour_method=colour.WHITE_THRESHOLD_METHOD)
    legacy.save(tmp_path)
    assert LabelCentroids.load(tmp_path).colour_method == colour.WHITE_THRESHOLD_METHOD


def test_refinement_files_from_before_the_method_was_recorded_mean_the_white_threshold(tmp_path):
    features, colours, labels = catalogue()
    LabelCentroids.fit(features, colours, labels).save(tmp_path)
    params = json.loads((tmp_path / PARAMS_JSON).read_text(encoding="utf-8"))
    del params["colour_method"]
    (tmp_path / PARAMS_JSON).write_text(json.dumps(params), encoding="utf-8")
    loaded = LabelCentroids.load(tmp_path)
    assert loaded.colour_method == colour.WHITE_THRESHOLD_METHOD
    assert colour.method_of(loaded.describe()) == colour.WHITE_THRESHOLD_METHOD
    params["colour_method"] = "saliency"
    (tmp_path / PARAMS_JSON).write_text(json.dumps(params), encoding="utf-8")
    with pytest.raises(ValueError, match="unknown colour-histogram method"):
        LabelCentroids.load(tmp_path)


def as_built_before_the_colour_method(index_dir: Path) -> None:
    """Rewrite a refined index's files as the builds before the recorded colour method wrote them."""
    params = json.loads((index_dir / PARAMS_JSON).read_text(encoding="utf-8"))
    del params["colour_method"]
    (index_dir / PARAMS_JSON).write_text(json.dumps(params), encoding="utf-8")
    manifest = json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))
    manifest["refinement"]["colour_histogram"] = {"space": "CIE-Lab", "bins": [5, 8, 8], "white_threshold": 245, "step": 2}
    (index_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def test_an_old_refined_index_is_queried_with_the_white_threshold_histogram(demo_index_refined, demo_recommender, tmp_path):
    from recommender import Recommender
    from recommender.shopper_photos import rng_for, shopper_photo

    old = tmp_path / "old-index"
    shutil.copytree(demo_index_refined.path, old)
    as_built_before_the_colour_method(old)
    catalogue_ = demo_index_refined.catalogue
    photo = shopper_photo(catalogue_.images_dir / catalogue_.items[7].image, rng_for(0, "old-index"), size=(240, 320))
    old_recommender, new_recommender = Recommender(old).load(), demo_index_refined.recommender()
    assert old_recommender.index is not None and old_recommender.index.refiner is not None
    assert old_recommender.index.refiner.colour_method == colour.WHITE_THRESHOLD_METHOD
    assert colour.method_of(old_recommender.manifest.refinement) == colour.WHITE_THRESHOLD_METHOD
    pixels = old_recommender.decode(photo)[None]
    features = demo_recommender.embed(pixels)
    old_histogram, new_histogram = (colour.colour_histograms(pixels, method) for method in colour.METHODS)
    assert float(old_histogram[0] @ new_histogram[0]) < 0.95  # the two methods disagree on this photo
    np.testing.assert_allclose(old_recommender.embed(pixels), LabelCentroids.query_vectors(features, old_histogram), atol=1e-5)
    np.testing.assert_allclose(new_recommender.embed(pixels), LabelCentroids.query_vectors(features, new_histogram), atol=1e-5)


def test_updating_an_old_index_makes_the_reused_colours_again(demo_index_refined, resnet_random, tmp_path):
    from recommender import build_index, load_index
    from recommender.images import load_image

    old = tmp_path / "old-index"
    shutil.copytree(demo_index_refined.path, old)
    as_built_before_the_colour_method(old)
    catalogue_ = demo_index_refined.catalogue
    pixels = np.stack([load_image(catalogue_.images_dir / item.image, resnet_random.input_size) for item in catalogue_.items])
    np.save(old / "colour.npy", colour.colour_histograms(pixels, colour.WHITE_THRESHOLD_METHOD))
    report = build_index(catalogue_, old, resnet_random, update=True, refine="label-centroids")
    assert report.extracted == 0 and report.reused == len(catalogue_)
    index = load_index(old)
    assert index.colours is not None and index.refiner is not None and index.refiner.colour_method == colour.DEFAULT_METHOD
    assert colour.method_of(index.manifest.refinement) == colour.DEFAULT_METHOD
    np.testing.assert_allclose(index.colours, colour.colour_histograms(pixels), atol=1e-6)
    # An index that already records the current method keeps its histograms as they are.
    np.save(old / "colour.npy", np.asarray(index.colours)[::-1].copy())
    build_index(catalogue_, old, resnet_random, update=True, refine="label-centroids")
    np.testing.assert_array_equal(load_index(old).colours, np.asarray(index.colours)[::-1])
