"""recommender/head.py: a learned embedding head, trained from labels and shopper-like views; the default for labelled catalogues."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recommender import Recommender, build_index, load_catalogue, load_index
from recommender.builder import resolve_head
from recommender.colour import DEFAULT_METHOD, colour_histograms
from recommender.colour import DIM as COLOUR_DIM
from recommender.errors import BuildError, IndexCorruptError
from recommender.evaluation.metrics import evaluate_rankings
from recommender.head import (
    METHOD,
    PARAMS_JSON,
    PROTOTYPE_FILE,
    WEIGHT_FILES,
    EmbeddingHead,
    HeadSettings,
    _view_rows,
    head_inputs,
    instance_settings,
    product_vectors,
    train_head,
    training_inputs,
    training_rows,
    view_means,
)
from recommender.search import ExactSearcher
from recommender.vectors import l2_normalize
from scripts.build_index import parse_args
from tests.build_helpers import make_shop
from tests.recommender_helpers import run_script

SMALL = HeadSettings(labels=("articleType",), hidden=64, dim=16, epochs=40, batch_size=32, views=1, seed=3, colour=0.0)  # features alone


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


def test_a_products_instance_vector_lies_between_its_photo_and_its_views():
    data = domain_shifted()
    head = train_head(data["features"], data["labels"], data["views"], instance_settings(SMALL))
    photo, seen = head.embed(data["features"]), view_means(head, data["views"])
    np.testing.assert_allclose(seen, l2_normalize(head.embed(data["views"][0]) + head.embed(data["views"][1])), atol=1e-6)
    np.testing.assert_allclose(product_vectors(head, data["features"]), photo, atol=1e-6)  # no views: the photo alone
    np.testing.assert_allclose(product_vectors(head, data["features"], photo), photo, atol=1e-6)
    both = product_vectors(head, data["features"], seen)
    np.testing.assert_allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)
    to_seen, to_photo, apart = (np.sum(a * b, axis=1) for a, b in ((both, seen), (both, photo), (photo, seen)))
    moved = apart < 0.999  # a product whose views land on its photo stays where it is
    assert moved.mean() > 0.9 and np.all(to_seen[moved] > apart[moved]) and np.all(to_photo[moved] > apart[moved])


def test_the_view_contrast_gathers_two_phone_photos_of_one_product():
    """The instance head's second term: two views of one product embed closer than without it."""
    data = domain_shifted()
    agreement = {}
    for weight in (0.0, 0.5):
        head = train_head(data["features"], data["labels"], data["views"], dataclasses.replace(instance_settings(SMALL), view_contrast=weight))
        agreement[weight] = float(np.mean(np.sum(head.embed(data["views"][0]) * head.embed(data["views"][1]), axis=1)))
    assert agreement[0.5] > agreement[0.0] + 0.01, agreement
    one_view = train_head(data["features"], data["labels"], data["views"][:1], dataclasses.replace(instance_settings(SMALL), view_contrast=0.5))
    plain = train_head(data["features"], data["labels"], data["views"][:1], dataclasses.replace(instance_settings(SMALL), view_contrast=0.0))
    np.testing.assert_array_equal(one_view.w1, plain.w1)  # one view has no second to agree with: the term is left out


def test_view_rows_pick_each_rows_own_view():
    views = [np.arange(12, dtype=np.float32).reshape(4, 3) + 100 * view for view in range(3)]
    which, rows = np.array([2, 0, 1, 2]), np.array([3, 1, 1, 0])
    np.testing.assert_array_equal(_view_rows(views, which, rows), np.stack(views)[which, rows])


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
    own = head.embed(features)
    prototype = head.prototypes["articleType"][head.class_names["articleType"].index(data["labels"][0]["articleType"])]
    assert labelled @ prototype > own[0] @ prototype
    np.testing.assert_allclose(unlabelled, own[1], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(own, axis=1), 1.0, atol=1e-5)


def test_a_query_is_pulled_towards_the_prototypes_it_is_predicted_to_carry():
    data = domain_shifted(per_class=10)
    head = train_head(data["features"], data["labels"], (), HeadSettings(**{**SMALL.__dict__, "epochs": 20}))
    embedded, queries = head.embed(data["features"]), head.query_vectors(data["features"])
    prototypes = head.prototypes["articleType"]
    predicted = np.argmax(embedded @ prototypes.T, axis=1)
    rows = np.arange(len(predicted))
    assert (queries @ prototypes.T)[rows, predicted].mean() > (embedded @ prototypes.T)[rows, predicted].mean() + 0.05
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    unpulled = EmbeddingHead(head.w1, head.b1, head.w2, head.b2, head.class_names, head.prototypes, HeadSettings(**{**head.settings.__dict__, "query_pull": 0.0}))
    np.testing.assert_allclose(unpulled.query_vectors(data["features"]), embedded, atol=1e-6)


def test_a_head_saved_before_query_pull_and_the_instance_heads_own_settings_existed_loads_as_it_was_built(tmp_path):
    data = domain_shifted(per_class=8)
    head = train_head(data["features"], data["labels"], (), HeadSettings(**{**SMALL.__dict__, "epochs": 2}))
    head.save(tmp_path)
    params = json.loads((tmp_path / PARAMS_JSON).read_text())
    for name in ("query_pull", "instance_views", "instance_epochs", "instance_batch_size", "view_contrast", "instance_view_contrast",
                 "colour", "instance_colour", "colour_method"):  # fmt: skip
        del params["settings"][name]
    (tmp_path / PARAMS_JSON).write_text(json.dumps(params))
    loaded = EmbeddingHead.load(tmp_path)
    assert loaded.settings.query_pull == 0.0
    assert loaded.settings.instance_views == 2 != HeadSettings().instance_views  # its instance head saw the head's 2 views
    assert (loaded.settings.instance_epochs, loaded.settings.instance_batch_size) == (2, SMALL.batch_size)  # and trained as long as it
    assert instance_settings(loaded.settings).epochs == 2 != instance_settings(HeadSettings()).epochs
    assert loaded.settings.view_contrast == instance_settings(loaded.settings).view_contrast == 0.0 != HeadSettings().instance_view_contrast
    assert instance_settings(loaded.settings).colour == 0.0 != instance_settings(HeadSettings()).colour  # its instance head took features alone
    assert not loaded.takes_colours and loaded.settings.colour_method == DEFAULT_METHOD and HeadSettings().colour > 0  # it took features alone
    np.testing.assert_allclose(loaded.query_vectors(data["features"]), head.embed(data["features"]), atol=1e-6)


def test_a_head_that_takes_colours_sees_them_beside_the_features_at_their_weight():
    """The instance head's input (HeadSettings.instance_colour): the features and the colour histogram, each
    unit length, the histogram scaled by its weight; a head without colours takes the features as they are."""
    rng = np.random.default_rng(0)
    features, colours = rng.random((5, 12)).astype(np.float32), rng.random((5, 7)).astype(np.float32)
    assert head_inputs(features, None, 0.0) is features
    both = head_inputs(features, colours, 0.5)
    assert both.shape == (5, 19)
    np.testing.assert_allclose(both[:, :12], l2_normalize(features), atol=1e-6)
    np.testing.assert_allclose(both[:, 12:], 0.5 * l2_normalize(colours), atol=1e-6)
    for missing in (None, colours[:4]):
        with pytest.raises(ValueError, match="colour histogram"):
            head_inputs(features, missing, 0.5)
    settings = instance_settings(dataclasses.replace(SMALL, epochs=2))
    assert settings.colour == HeadSettings().instance_colour > 0
    inputs = head_inputs(features, colours, settings.colour)
    head = train_head(inputs, [{}] * 5, [head_inputs(features + 0.1, colours, settings.colour)], settings)
    assert head.takes_colours and head.feature_dim == 19
    np.testing.assert_allclose(head.inputs(features, colours), inputs, atol=1e-6)
    with pytest.raises(ValueError, match="colour histogram"):
        head.inputs(features, None)


def colour_blind_features(per_colour: int = 40, seed: int = 0) -> dict[str, Any]:
    """Products whose backbone features carry their type but nothing of their colour, which only their colour
    histograms carry (as ImageNet features know a shirt's cut better than its colour), and phone photos of
    them: features and histograms with noise. Train and test halves, as :func:`domain_shifted`."""
    rng = np.random.default_rng(seed)
    palettes = rng.random((3, 24))  # one histogram shape per colour
    centres = rng.standard_normal((2, 32))
    colour_of, type_of = np.repeat(np.arange(3), per_colour), np.tile(np.arange(2), 3 * per_colour // 2)
    features = centres[type_of] + 0.6 * rng.standard_normal((len(type_of), 32))
    colours = palettes[colour_of] + 0.05 * rng.random((len(type_of), 24))
    labels = [{"articleType": f"type{t}", "baseColour": f"colour{c}"} for t, c in zip(type_of, colour_of)]

    def phone(values: np.ndarray, noise: float) -> np.ndarray:
        return values + noise * rng.random(values.shape)

    test = np.arange(len(type_of)) % 4 == 0
    return {
        "features": features[~test], "colours": colours[~test], "labels": [labels[i] for i in np.flatnonzero(~test)],
        "views": [phone(features[~test], 0.3)], "view_colours": [phone(colours[~test], 0.1)],
        "query_features": phone(features[test], 0.3), "query_colours": phone(colours[test], 0.1),
        "query_colour": np.array([f"colour{c}" for c in colour_of[test]]),
    }  # fmt: skip


def test_the_head_tells_colours_apart_from_the_histogram_where_the_features_carry_none():
    """HeadSettings.colour: beside its features each photo's colour histogram enters the head, which then
    tells a phone photo's colour that its features alone cannot; the products' and queries' vectors need it."""
    data = colour_blind_features()
    accuracy = {}
    for weight in (0.0, 0.5):
        settings = dataclasses.replace(SMALL, labels=("articleType", "baseColour"), colour=weight)
        inputs, views = training_inputs(data["features"], data["colours"], data["views"], data["view_colours"], weight)
        head = train_head(inputs, data["labels"], views, settings)
        assert head.takes_colours == (weight > 0)
        _, believed = head.query_vectors_and_labels(data["query_features"], data["query_colours"])
        guesses = np.array(head.class_names["baseColour"])[believed["baseColour"].argmax(axis=1)]
        accuracy[weight] = float(np.mean(guesses == data["query_colour"]))
        assert head.index_vectors(data["features"], data["labels"], data["colours"]).shape == (len(data["features"]), SMALL.dim)
    assert accuracy[0.0] < 0.6, f"the features alone should not tell the colour ({accuracy[0.0]:.2f})"
    assert accuracy[0.5] >= 0.9, f"with the histogram the head should ({accuracy[0.5]:.2f})"
    with pytest.raises(ValueError, match="colour histogram"):
        head.query_vectors(data["query_features"])
    with pytest.raises(ValueError, match="colour histogram"):
        head.index_vectors(data["features"], data["labels"])


def test_training_inputs_are_each_photos_head_inputs_and_need_every_views_colours():
    rng = np.random.default_rng(1)
    features, colours = rng.random((4, 6)).astype(np.float32), rng.random((4, 5)).astype(np.float32)
    views, view_colours = [features + 1, features + 2], [colours + 1, colours + 2]
    own, inputs = training_inputs(features, colours, views, view_colours, 0.5)
    np.testing.assert_allclose(own, head_inputs(features, colours, 0.5))
    for view, made in enumerate(inputs):
        np.testing.assert_allclose(made, head_inputs(views[view], view_colours[view], 0.5))
    own, inputs = training_inputs(features, None, views, None, 0.0)  # the features as they are
    assert own is features and all(made is view for made, view in zip(inputs, views))
    for missing in (None, view_colours[:1]):
        with pytest.raises(ValueError, match="each view's colour histogram"):
            training_inputs(features, colours, views, missing, 0.5)


def test_a_large_catalogue_trains_on_a_type_balanced_sample():
    counts = {"Tshirts": 500, "Shirts": 300, "Watches": 40, "Heels": 8, "Ties": 2}
    labels = [{"articleType": name} for name, count in counts.items() for _ in range(count)]
    settings = HeadSettings(max_products=200, seed=1)
    rows = training_rows(labels, settings)
    assert len(rows) <= 200 and len(set(rows.tolist())) == len(rows)
    taken = {name: sum(1 for row in rows if labels[row]["articleType"] == name) for name in counts}
    assert taken["Ties"] == 2 and taken["Heels"] == 8 and taken["Watches"] == 40  # rare types whole
    assert taken["Tshirts"] == taken["Shirts"] >= 70  # common types share the rest equally
    np.testing.assert_array_equal(rows, training_rows(labels, settings))  # the same sample every build
    assert not np.array_equal(rows, training_rows(labels, HeadSettings(max_products=200, seed=2)))
    np.testing.assert_array_equal(training_rows(labels[:150], settings), np.arange(150))  # small: everything


def test_the_head_is_the_default_for_a_new_labelled_index_and_needs_labels(demo_catalogue, tmp_path):
    assert parse_args(["--images", "i", "--out", "o"]).head == "auto"
    assert parse_args(["--images", "i", "--out", "o", "--head", "labels"]).head == "labels"
    assert parse_args(["--images", "i", "--out", "o", "--update", "--head", "none"]).head == "none"
    assert resolve_head("auto", "auto", demo_catalogue) == "labels"
    assert resolve_head("auto", "none", demo_catalogue) == "none"  # plain features asked for
    assert resolve_head("auto", "label-centroids", demo_catalogue) == "none"  # the refinement asked for
    assert resolve_head(None, "auto", demo_catalogue) == "none"  # the library's default on a new index
    assert resolve_head("none", "auto", demo_catalogue) == "none"
    assert resolve_head("labels", "auto", demo_catalogue) == "labels"
    with pytest.raises(BuildError, match="--refine none"):
        resolve_head("labels", "label-centroids", demo_catalogue)
    with pytest.raises(BuildError, match="Unknown --head"):
        resolve_head("magic", "auto", demo_catalogue)
    unlabelled = load_catalogue(demo_catalogue.images_dir)
    assert resolve_head("auto", "auto", unlabelled) == "none"
    with pytest.raises(BuildError, match="--styles"):
        resolve_head("labels", "auto", unlabelled)


def test_the_build_script_trains_a_head_by_default_and_says_so(tmp_path):
    images, styles = make_shop(tmp_path / "shop", count=6)
    out = tmp_path / "index"
    result = run_script("build_index.py", "--images", images, "--styles", styles, "--out", out, "--backbone", "mobilenet_v2", "--weights", "none", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Training the embedding head on 6 products, with shopper-like views" in result.stdout
    assert "Embedding head: labels (trained on 6 products' labels" in result.stdout
    index = load_index(out)
    assert index.head is not None and index.refiner is None and index.head.settings == HeadSettings()


def test_a_built_head_embeds_products_and_queries_alike(demo_catalogue, mobilenet_random, tmp_path):
    out = tmp_path / "index"
    settings = HeadSettings(hidden=32, dim=16, epochs=2, views=1)
    report = build_index(demo_catalogue, out, mobilenet_random, head="labels", head_settings=settings)
    assert report.head == "labels" and report.refinement == "none"
    index = load_index(out)
    assert index.head is not None and index.refiner is None
    assert index.manifest.refinement == index.head.describe() and index.manifest.vector_dim == 16
    assert index.features is not None and index.features.shape == (len(demo_catalogue), mobilenet_random.feature_dim)
    # the head takes each photo's colour histogram beside its features: the products' stored ones, the query's own
    assert index.head.takes_colours and index.head.feature_dim == mobilenet_random.feature_dim + COLOUR_DIM and index.colours is not None
    labels = [{k: v for k, v in product.items() if k not in ("id", "image")} for product in index.products]
    np.testing.assert_allclose(index.vectors, index.head.index_vectors(index.features, labels, index.colours), atol=1e-6)
    without_colours = index.head.embed(np.concatenate([l2_normalize(index.features), np.zeros_like(index.colours)], axis=1))
    assert not np.allclose(index.head.embed(index.head.inputs(index.features, index.colours)), without_colours, atol=1e-3)  # they count

    recommender = Recommender(out).load()
    photo = demo_catalogue.images_dir / demo_catalogue.items[0].image
    pixels = recommender.decode(photo)[None]
    expected = index.head.query_vectors(mobilenet_random.extract(pixels), colour_histograms(pixels, index.head.settings.colour_method))
    np.testing.assert_allclose(recommender.embed(pixels), expected, atol=1e-5)
    assert len(recommender.recommend(photo, k=3)) == 3

    updated = build_index(demo_catalogue, out, mobilenet_random, update=True, head="labels", head_settings=settings)
    assert updated.extracted == 0 and updated.reused == len(demo_catalogue)  # the head is re-trained, no photo re-read
    assert load_index(out).head is not None

    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    Path(damaged / WEIGHT_FILES[0]).unlink()
    with pytest.raises(IndexCorruptError):
        load_index(damaged)
    colourless = tmp_path / "colourless"  # the head takes the products' colour histograms: without them, refused
    shutil.copytree(out, colourless)
    (colourless / "colour.npy").unlink()
    with pytest.raises(IndexCorruptError, match="colour histograms its embedding head takes"):
        load_index(colourless)


def test_a_capped_build_trains_on_its_sample_and_embeds_every_product(demo_catalogue, mobilenet_random, tmp_path):
    out = tmp_path / "index"
    settings = HeadSettings(hidden=16, dim=8, epochs=1, views=1, view_size=(96, 128), max_products=12)
    started: list[tuple[int, int]] = []
    report = build_index(demo_catalogue, out, mobilenet_random, head="labels", head_settings=settings, on_head=lambda *a: started.append(a))
    sample = training_rows([item.labels for item in demo_catalogue.items], settings)
    assert 0 < len(sample) <= 12 < len(demo_catalogue)
    assert started == [(len(sample), len(demo_catalogue))]
    assert report.head_products == len(sample) and 0 < report.head_seconds < report.seconds
    index = load_index(out)
    assert index.head is not None and len(index.vectors) == len(demo_catalogue)
    labels = [{k: v for k, v in product.items() if k not in ("id", "image")} for product in index.products]
    np.testing.assert_allclose(index.vectors, index.head.index_vectors(index.features, labels, index.colours), atol=1e-6)
    # views of only the sample: every product's shortlist vector is its photo's alone (views of some would tilt the search)
    assert index.shortlist_head is not None and index.shortlist_vectors is not None
    assert index.shortlist_head.takes_colours and index.colours is not None  # beside the features, each product's colour histogram
    inputs = index.shortlist_head.inputs(index.features, index.colours)
    np.testing.assert_allclose(index.shortlist_vectors, index.shortlist_head.embed(inputs), atol=1e-6)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["local_features"]["shortlist"]["views_in_product_vectors"] == 0


def test_update_keeps_the_head_unless_told_to_drop_it(demo_catalogue, mobilenet_random, tmp_path):
    out = tmp_path / "index"
    settings = HeadSettings(hidden=24, dim=12, epochs=1, views=1, view_size=(96, 128), seed=5)
    build_index(demo_catalogue, out, mobilenet_random, head="labels", head_settings=settings)

    kept = build_index(demo_catalogue, out, mobilenet_random, update=True)  # no head given: keep what the index has
    assert kept.head == "labels" and kept.refinement == "none" and kept.extracted == 0
    index = load_index(out)
    assert index.head is not None and index.head.settings == settings  # re-trained as the index recorded
    assert index.manifest.refinement["method"] == METHOD and index.manifest.vector_dim == 12

    assert build_index(demo_catalogue, out, mobilenet_random, update=True, head="auto").head == "labels"  # auto keeps it too

    with pytest.raises(BuildError, match="--head none"):  # a refinement would replace the head: say how to drop it
        build_index(demo_catalogue, out, mobilenet_random, update=True, refine="label-centroids")
    assert load_index(out).head is not None

    dropped = build_index(demo_catalogue, out, mobilenet_random, update=True, head="none")
    assert dropped.head == "none" and dropped.refinement == "label-centroids"  # --refine auto, as a new build
    index = load_index(out)
    assert index.head is None and index.refiner is not None and not any(out.glob("head*"))

    assert build_index(demo_catalogue, out, mobilenet_random, update=True, head="auto").head == "none"  # nor adds one

    plain = tmp_path / "plain"
    assert build_index(demo_catalogue, plain, mobilenet_random, refine="none").head == "none"
    assert build_index(demo_catalogue, plain, mobilenet_random, update=True, refine="none").head == "none"
    assert load_index(plain).head is None


def test_update_help_says_how_to_drop_the_head(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--head none with --update drops the head" in help_text
