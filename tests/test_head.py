"""recommender/head.py: a learned embedding head, trained from labels and shopper-like views, opt-in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recommender import Recommender, build_index, load_catalogue, load_index
from recommender.builder import resolve_head
from recommender.errors import BuildError, IndexCorruptError
from recommender.evaluation.metrics import evaluate_rankings
from recommender.head import METHOD, PARAMS_JSON, PROTOTYPE_FILE, WEIGHT_FILES, EmbeddingHead, HeadSettings, train_head
from recommender.search import ExactSearcher
from recommender.vectors import l2_normalize
from scripts.build_index import parse_args

SMALL = HeadSettings(labels=("articleType",), hidden=64, dim=16, epochs=40, batch_size=32, views=1, seed=3)


def domain_shifted(classes: int = 4, per_class: int = 40, dim: int = 32, seed: int = 0) -> dict[str, Any]:
    """Products of ``classes`` types, and 'phone photos' of them: the same vector plus a strong nuisance.

    The nuisance (one of a few 'backgrounds', scaled up) swamps the type in plain cosine space, as a
    cluttered background does in ImageNet features. Returns train/test features, views and labels.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    backgrounds = 5.0 * rng.standard_normal((6, dim))
    types = np.repeat(np.arange(classes), per_class)
    features = centres[types] + 0.6 * rng.standard_normal((len(types), dim))

    def views() -> np.ndarray:
        return features + backgrounds[rng.integers(len(backgrounds), size=len(types))] + 0.2 * rng.standard_normal(features.shape)

    test = np.arange(len(types)) % 4 == 0
    labels = [{"articleType": f"type{t}"} for t in types]
    return {
        "features": features[~test], "labels": [labels[i] for i in np.flatnonzero(~test)],
        "views": [views()[~test], views()[~test]],
        "query_views": views()[test], "query_labels": [labels[i] for i in np.flatnonzero(test)],
    }  # fmt: skip


def precision_at_5(index_vectors: np.ndarray, query_vectors: np.ndarray, data: dict[str, Any]) -> float:
    rows, _ = ExactSearcher().fit(l2_normalize(index_vectors.astype(np.float32))).search(l2_normalize(query_vectors.astype(np.float32)), 5)
    return evaluate_rankings(data["query_labels"], rows, data["labels"], labels=("articleType",)).precision["articleType"]["micro"]


def test_training_on_views_brings_unseen_phone_photos_to_their_type():
    data = domain_shifted()
    plain = precision_at_5(data["features"], data["query_views"], data)
    head = train_head(data["features"], data["labels"], data["views"], SMALL)
    learned = precision_at_5(head.index_vectors(data["features"], data["labels"]), head.query_vectors(data["query_views"]), data)
    assert plain < 0.6, f"the nuisance should confuse plain features (P@5 {plain:.2f})"
    assert learned >= plain + 0.25, f"head P@5 {learned:.2f} vs plain {plain:.2f}"


def test_save_and_load_give_the_same_vectors_without_pickle(tmp_path):
    data = domain_shifted(per_class=12)
    head = train_head(data["features"], data["labels"], data["views"], HeadSettings(**{**SMALL.__dict__, "epochs": 2}))
    head.save(tmp_path)
    for name in WEIGHT_FILES + (PROTOTYPE_FILE.format(label="articleType"),):
        np.load(tmp_path / name, allow_pickle=False)  # plain arrays: loading never unpickles
    loaded = EmbeddingHead.load(tmp_path)
    assert loaded.settings == head.settings and loaded.class_names == head.class_names
    assert loaded.describe() == head.describe() and head.describe()["method"] == METHOD
    np.testing.assert_array_equal(loaded.query_vectors(data["query_views"]), head.query_vectors(data["query_views"]))
    np.testing.assert_array_equal(
        loaded.index_vectors(data["features"], data["labels"]), head.index_vectors(data["features"], data["labels"])
    )


def test_load_refuses_weights_and_names_that_disagree(tmp_path):
    data = domain_shifted(per_class=8)
    train_head(data["features"], data["labels"], (), HeadSettings(**{**SMALL.__dict__, "epochs": 1})).save(tmp_path)
    params = json.loads((tmp_path / PARAMS_JSON).read_text())
    params["class_names"]["articleType"].append("one more")
    (tmp_path / PARAMS_JSON).write_text(json.dumps(params))
    with pytest.raises(ValueError, match="prototypes of articleType"):
        EmbeddingHead.load(tmp_path)
    params["class_names"]["articleType"].pop()
    params["settings"]["unknown"] = 1
    (tmp_path / PARAMS_JSON).write_text(json.dumps(params))
    with pytest.raises(ValueError, match="unknown head settings"):
        EmbeddingHead.load(tmp_path)


def test_products_are_pulled_to_their_prototypes_queries_need_no_labels():
    data = domain_shifted(per_class=8)
    head = train_head(data["features"], data["labels"], (), HeadSettings(**{**SMALL.__dict__, "epochs": 5}))
    features = data["features"][:2]
    labelled, unlabelled = head.index_vectors(features, [data["labels"][0], {}])
    own = head.query_vectors(features)
    prototype = head.prototypes["articleType"][head.class_names["articleType"].index(data["labels"][0]["articleType"])]
    assert labelled @ prototype > own[0] @ prototype
    np.testing.assert_allclose(unlabelled, own[1], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(own, axis=1), 1.0, atol=1e-5)


def test_the_head_is_opt_in_and_needs_labels(demo_catalogue, tmp_path):
    assert parse_args(["--images", "i", "--out", "o"]).head is None  # none on a new index, what it has on --update
    assert parse_args(["--images", "i", "--out", "o", "--head", "labels"]).head == "labels"
    assert parse_args(["--images", "i", "--out", "o", "--update", "--head", "none"]).head == "none"
    assert resolve_head(None, "auto", demo_catalogue) == "none"
    assert resolve_head("none", "auto", demo_catalogue) == "none"
    assert resolve_head("labels", "auto", demo_catalogue) == "labels"
    with pytest.raises(BuildError, match="--refine none"):
        resolve_head("labels", "label-centroids", demo_catalogue)
    with pytest.raises(BuildError, match="Unknown --head"):
        resolve_head("magic", "auto", demo_catalogue)
    unlabelled = load_catalogue(demo_catalogue.images_dir)
    with pytest.raises(BuildError, match="--styles"):
        resolve_head("labels", "auto", unlabelled)


def test_a_built_head_embeds_products_and_queries_alike(demo_catalogue, mobilenet_random, tmp_path):
    out = tmp_path / "index"
    settings = HeadSettings(hidden=32, dim=16, epochs=2, views=1)
    report = build_index(demo_catalogue, out, mobilenet_random, head="labels", head_settings=settings)
    assert report.head == "labels" and report.refinement == "none"
    index = load_index(out)
    assert index.head is not None and index.refiner is None
    assert index.manifest.refinement == index.head.describe() and index.manifest.vector_dim == 16
    assert index.features is not None and index.features.shape == (len(demo_catalogue), mobilenet_random.feature_dim)
    labels = [{k: v for k, v in product.items() if k not in ("id", "image")} for product in index.products]
    np.testing.assert_allclose(index.vectors, index.head.index_vectors(index.features, labels), atol=1e-6)

    recommender = Recommender(out).load()
    photo = demo_catalogue.images_dir / demo_catalogue.items[0].image
    pixels = recommender.decode(photo)[None]
    np.testing.assert_allclose(recommender.embed(pixels), index.head.query_vectors(mobilenet_random.extract(pixels)), atol=1e-5)
    assert len(recommender.recommend(photo, k=3)) == 3

    updated = build_index(demo_catalogue, out, mobilenet_random, update=True, head="labels", head_settings=settings)
    assert updated.extracted == 0 and updated.reused == len(demo_catalogue)  # the head is re-trained, no photo re-read
    assert load_index(out).head is not None

    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    Path(damaged / WEIGHT_FILES[0]).unlink()
    with pytest.raises(IndexCorruptError):
        load_index(damaged)


def test_update_keeps_the_head_unless_told_to_drop_it(demo_catalogue, mobilenet_random, tmp_path):
    out = tmp_path / "index"
    settings = HeadSettings(hidden=24, dim=12, epochs=1, views=1, view_size=(96, 128), seed=5)
    build_index(demo_catalogue, out, mobilenet_random, head="labels", head_settings=settings)

    kept = build_index(demo_catalogue, out, mobilenet_random, update=True)  # no head given: keep what the index has
    assert kept.head == "labels" and kept.refinement == "none" and kept.extracted == 0
    index = load_index(out)
    assert index.head is not None and index.head.settings == settings  # re-trained as the index recorded
    assert index.manifest.refinement["method"] == METHOD and index.manifest.vector_dim == 12

    with pytest.raises(BuildError, match="--head none"):  # a refinement would replace the head: say how to drop it
        build_index(demo_catalogue, out, mobilenet_random, update=True, refine="label-centroids")
    assert load_index(out).head is not None

    dropped = build_index(demo_catalogue, out, mobilenet_random, update=True, head="none")
    assert dropped.head == "none" and dropped.refinement == "label-centroids"  # --refine auto, as a new build
    index = load_index(out)
    assert index.head is None and index.refiner is not None and not any(out.glob("head*"))

    plain = tmp_path / "plain"
    assert build_index(demo_catalogue, plain, mobilenet_random, refine="none").head == "none"
    assert build_index(demo_catalogue, plain, mobilenet_random, update=True, refine="none").head == "none"
    assert load_index(plain).head is None


def test_update_help_says_how_to_drop_the_head(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--head none with --update drops the head" in help_text
