"""recommender/evaluation/protocols.py: leave-one-out, held-out and the split the refinement learns on."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from recommender.evaluation.protocols import (
    exact_item_rows,
    exact_items,
    head_split_vectors,
    held_out,
    leave_one_out,
    refined_split_vectors,
    shopper_queries,
    shopper_query_photo,
    stratified_holdout,
)
from recommender.vectors import l2_normalize
from tests.recommender_helpers import labelled_items as items


def test_leave_one_out_never_counts_the_query_itself():
    rng = np.random.default_rng(0)
    base = l2_normalize(rng.standard_normal((20, 32)))
    # Every product its own article type; with partners, each has one exact duplicate of its type.
    singles = leave_one_out("x", base, items(*[f"T{i}" for i in range(20)]), np.arange(20), k=5, min_items=1)
    pairs_vectors = np.repeat(base, 2, axis=0)
    pairs_labels = items(*[f"T{i}" for i in range(20) for _ in range(2)])
    pairs = leave_one_out("x", pairs_vectors, pairs_labels, np.arange(40), k=5, min_items=1)
    assert singles.report.precision["articleType"]["micro"] == 0.0
    assert math.isnan(singles.report.map_at_k["articleType"])  # nothing of the same type to find
    assert pairs.report.precision["articleType"]["micro"] == pytest.approx(1 / 5)  # the partner, not itself
    assert pairs.report.map_at_k["articleType"] == pytest.approx(1.0)
    partner = np.arange(40) ^ 1
    np.testing.assert_array_equal(pairs.result_rows[:, 0], partner)
    assert not np.any(pairs.result_rows == np.arange(40)[:, None])
    assert not np.any(singles.result_rows == np.arange(20)[:, None])


def test_leave_one_out_records_what_was_asked_and_answered():
    vectors = l2_normalize(np.random.default_rng(2).standard_normal((12, 8)))
    result = leave_one_out("plain", vectors, items(*["A"] * 12), [3, 7], k=4, min_items=1)
    assert result.name == "plain" and result.report.queries == 2 and result.report.k == 4
    np.testing.assert_array_equal(result.query_rows, [3, 7])
    assert result.result_rows.shape == result.scores.shape == (2, 4)
    true = np.einsum("qd,qkd->qk", vectors[[3, 7]], vectors[result.result_rows])
    np.testing.assert_allclose(result.scores, true, atol=1e-5)


def test_stratified_holdout_is_deterministic_and_keeps_every_type_searchable():
    groups = ["A"] * 50 + ["B"] * 10 + ["C"] * 2 + ["D"]
    mask = stratified_holdout(groups, 0.2, seed=3)
    np.testing.assert_array_equal(mask, stratified_holdout(groups, 0.2, seed=3))
    assert not np.array_equal(mask, stratified_holdout(groups, 0.2, seed=4))
    held = np.asarray(groups)[mask]
    assert (held == "A").sum() == 10 and (held == "B").sum() == 2 and (held == "C").sum() == 1 and (held == "D").sum() == 0
    searchable = set(np.asarray(groups)[~mask])
    assert searchable == {"A", "B", "C", "D"}
    assert stratified_holdout(groups, 0.9, seed=0)[:50].sum() == 45
    for bad in (0.0, 1.0, -0.2, float("nan")):
        with pytest.raises(ValueError):
            stratified_holdout(groups, bad)


def test_stratified_holdout_rounds_half_up():
    # 0.25 of 10 is 2.5: half up takes 3 (Python's round would take 2); 0.25 of 6 is 1.5: 2.
    mask = stratified_holdout(["A"] * 6 + ["B"] * 10, 0.25, seed=0)
    assert mask[:6].sum() == 2 and mask[6:].sum() == 3


def test_held_out_split_is_disjoint_and_refinement_learns_only_from_the_searchable_part():
    rng = np.random.default_rng(1)
    features, colours = l2_normalize(rng.standard_normal((40, 16))), l2_normalize(rng.random((40, 320)))
    labels = items(*["A"] * 20, *["B"] * 20)
    mask = stratified_holdout([row["articleType"] for row in labels], 0.25, seed=0)
    query_rows, searchable_rows = np.flatnonzero(mask), np.flatnonzero(~mask)
    assert not set(query_rows) & set(searchable_rows) and len(query_rows) + len(searchable_rows) == 40
    train, test = refined_split_vectors(features, colours, labels, searchable_rows, query_rows)
    # The held-out products' labels must not influence anything: relabel them, get the same vectors.
    relabelled = [dict(row, articleType="B", baseColour="Zz") if i in set(query_rows) else row for i, row in enumerate(labels)]
    train2, test2 = refined_split_vectors(features, colours, relabelled, searchable_rows, query_rows)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(test, test2)
    result = held_out("refined", train, searchable_rows, test, query_rows, labels)
    assert set(result.result_rows.ravel()) <= set(searchable_rows)
    with pytest.raises(ValueError, match="must not be searchable"):
        held_out("x", features, np.arange(40), features[:2], np.arange(2), labels)


def test_held_out_answers_in_index_row_numbers():
    vectors = l2_normalize(np.random.default_rng(5).standard_normal((10, 6)))
    searchable_rows, query_rows = np.array([1, 3, 5, 7, 9]), np.array([0, 2])
    # Each query is (almost) a copy of one searchable product: its index row must come back first.
    queries = l2_normalize(vectors[[7, 3]] + 1e-3)
    result = held_out("plain", vectors[searchable_rows], searchable_rows, queries, query_rows, items(*["A"] * 10), k=2, min_items=1)
    np.testing.assert_array_equal(result.result_rows[:, 0], [7, 3])
    np.testing.assert_array_equal(result.query_rows, query_rows)


def test_refined_split_vectors_are_refined_index_and_query_vectors():
    rng = np.random.default_rng(3)
    features, colours = l2_normalize(rng.standard_normal((8, 5))), l2_normalize(rng.random((8, 320)))
    train, test = refined_split_vectors(features, colours, items(*["A"] * 4, *["B"] * 4), [0, 1, 2, 4, 5, 6], [3, 7])
    assert train.shape == (6, 5 + 320) and test.shape == (2, 5 + 320)
    np.testing.assert_allclose(np.linalg.norm(train, axis=1), 1.0, atol=1e-5)
    # Query side needs no labels: the plain concatenation of its own features and colours.
    expected = l2_normalize(np.concatenate([features[[3, 7]], colours[[3, 7]]], axis=1))
    np.testing.assert_allclose(test, expected, atol=1e-6)


def test_leave_one_out_can_ask_with_other_vectors_and_still_skips_the_query_row():
    vectors = l2_normalize(np.random.default_rng(4).standard_normal((10, 6)))
    # Query row 2 asks with row 5's vector: row 5 comes first; query row 5 asks with its own: row 5 is skipped.
    result = leave_one_out("shopper", vectors, items(*["A"] * 10), [2, 5], k=3, min_items=1, query_vectors=vectors[[5, 5]])
    assert result.result_rows[0, 0] == 5
    assert 5 not in result.result_rows[1] and 2 not in result.result_rows[0]
    with pytest.raises(ValueError, match="2 query rows"):
        leave_one_out("x", vectors, items(*["A"] * 10), [2, 5], query_vectors=vectors[:3])


def test_refined_split_vectors_take_the_queries_own_photos_when_given():
    rng = np.random.default_rng(6)
    features, colours = l2_normalize(rng.standard_normal((8, 5))), l2_normalize(rng.random((8, 320)))
    shot_features, shot_colours = l2_normalize(rng.standard_normal((2, 5))), l2_normalize(rng.random((2, 320)))
    labels = items(*["A"] * 4, *["B"] * 4)
    train, test = refined_split_vectors(features, colours, labels, [0, 1, 2, 4, 5, 6], [3, 7],
                                        query_features=shot_features, query_colours=shot_colours)
    catalogue_train, catalogue_test = refined_split_vectors(features, colours, labels, [0, 1, 2, 4, 5, 6], [3, 7])
    np.testing.assert_array_equal(train, catalogue_train)  # the index side does not change
    np.testing.assert_allclose(test, l2_normalize(np.concatenate([shot_features, shot_colours], axis=1)), atol=1e-6)
    assert not np.allclose(test, catalogue_test)


def studio_photo(colour: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (60, 80), (255, 255, 255))
    ImageDraw.Draw(image).rectangle([12, 12, 47, 67], fill=colour)
    return image


def mean_colour(shots):
    """A stand-in embedding for the protocol's bookkeeping: each photo's mean colour (features) and size (colours)."""
    pixels = [np.asarray(Image.open(io.BytesIO(shot)).convert("RGB"), dtype=np.float32) for shot in shots]
    return np.stack([p.mean(axis=(0, 1)) for p in pixels]), np.array([[p.shape[0], p.shape[1]] for p in pixels], dtype=np.float32)


def test_shopper_queries_embed_each_photo_once_in_batches_and_deterministically():
    photos = [studio_photo((200, 20, 20)), studio_photo((20, 20, 200)), studio_photo((20, 160, 20))]
    keys = ["11", "12", "13"]
    batches = []

    def embed(shots):
        batches.append(len(shots))
        return mean_colour(shots)

    first = shopper_queries(photos, keys, embed, seed=0, batch_size=2)
    assert batches == [2, 1]
    assert first.features.shape == (3, 3) and first.colours.shape == (3, 2)
    np.testing.assert_array_equal(first.colours, [[1280, 960]] * 3)  # phone-sized photos were embedded
    assert first.transform_seconds > 0 and first.embed_seconds > 0
    assert set(first.milliseconds_per_query()) == {"transform", "decode_and_embed"}
    # Photo i is the shopper photo of product i with this run's seed, nothing else.
    expected = mean_colour([shopper_query_photo(photo, key, 0) for photo, key in zip(photos, keys)])[0]
    np.testing.assert_allclose(first.features, expected, atol=1e-4)
    np.testing.assert_array_equal(shopper_queries(photos, keys, mean_colour, seed=0).features, first.features)
    assert not np.array_equal(shopper_queries(photos, keys, mean_colour, seed=1).features, first.features)
    with pytest.raises(ValueError, match="3 photos for 2 keys"):
        shopper_queries(photos, keys[:2], mean_colour, seed=0)


def test_the_head_is_retrained_on_the_searchable_rows_only():
    """The queries' labels never reach the re-trained head: changing them changes no vector."""
    from recommender.head import HeadSettings

    rng = np.random.default_rng(4)
    types = np.repeat(np.arange(4), 10)
    features = rng.standard_normal((4, 24))[types] + 0.3 * rng.standard_normal((40, 24))
    labels = items(*[f"T{t}" for t in types])
    query_rows, searchable_rows = np.arange(0, 40, 5), np.setdiff1d(np.arange(40), np.arange(0, 40, 5))
    views = [features[searchable_rows] + 0.1 * rng.standard_normal((len(searchable_rows), 24))]
    settings = HeadSettings(labels=("articleType",), hidden=16, dim=8, epochs=3, batch_size=16, dropout=0.0, views=1, colour=0.0)
    train, test = head_split_vectors(features, labels, searchable_rows, query_rows, views, settings)
    assert train.shape == (len(searchable_rows), 8) and test.shape == (len(query_rows), 8)
    relabelled = [dict(item, articleType="never seen") if row in set(query_rows) else item for row, item in enumerate(labels)]
    train_again, test_again = head_split_vectors(features, relabelled, searchable_rows, query_rows, views, settings)
    np.testing.assert_allclose(train_again, train, atol=1e-5)
    np.testing.assert_allclose(test_again, test, atol=1e-5)
    shopper = features[query_rows] + 1.0
    np.testing.assert_allclose(np.linalg.norm(head_split_vectors(features, labels, searchable_rows, query_rows, views, settings,
                                                                 query_features=shopper)[1], axis=1), 1.0, atol=1e-5)


def test_a_head_that_takes_colours_is_retrained_on_the_rows_and_views_colours_and_asked_with_the_queries():
    """HeadSettings.colour: the re-trained head needs every row's colour histogram and its views'; the queries'
    are their rows' own, or those given beside their shopper photos' features."""
    from recommender.head import HeadSettings

    rng = np.random.default_rng(5)
    types = np.repeat(np.arange(4), 10)
    features = rng.standard_normal((4, 24))[types] + 0.3 * rng.standard_normal((40, 24))
    colours = rng.random((40, 10))
    labels = items(*[f"T{t}" for t in types])
    query_rows, searchable_rows = np.arange(0, 40, 5), np.setdiff1d(np.arange(40), np.arange(0, 40, 5))
    views = [features[searchable_rows] + 0.1 * rng.standard_normal((len(searchable_rows), 24))]
    view_colours = [colours[searchable_rows] + 0.05]
    settings = HeadSettings(labels=("articleType",), hidden=16, dim=8, epochs=3, batch_size=16, dropout=0.0, views=1, colour=0.5)
    with pytest.raises(ValueError, match="colour histogram"):
        head_split_vectors(features, labels, searchable_rows, query_rows, views, settings)
    given: dict[str, Any] = {"colours": colours, "view_colours": view_colours}
    train, test = head_split_vectors(features, labels, searchable_rows, query_rows, views, settings, **given)
    assert train.shape == (len(searchable_rows), 8) and test.shape == (len(query_rows), 8)
    asked = features[query_rows]
    _, same = head_split_vectors(features, labels, searchable_rows, query_rows, views, settings, asked, **given, query_colours=colours[query_rows])
    np.testing.assert_allclose(same, test, atol=1e-5)
    _, other = head_split_vectors(features, labels, searchable_rows, query_rows, views, settings, asked, **given, query_colours=colours[query_rows][::-1])
    assert not np.allclose(other, test, atol=1e-3)  # the queries' colours count


def test_exact_items_count_where_the_product_itself_comes():
    vectors = l2_normalize(np.random.default_rng(31).standard_normal((50, 16)).astype(np.float32))
    rows = np.array([3, 10, 20, 40])
    near = vectors[rows].copy()
    near[1] = l2_normalize(vectors[10] + 1.2 * vectors[11])  # row 11 now beats row 10
    near[3] = -vectors[40]  # the product itself is the worst match
    result = exact_items(vectors, near, rows, k=5)
    ranks_of_10 = np.argsort(-(vectors @ near[1]))
    second = int(np.flatnonzero(ranks_of_10 == 10)[0]) + 1
    assert result.queries == 4 and result.recall_at_1 == 0.5
    assert result.recall_at_k == (0.75 if second <= 5 else 0.5)
    assert result.reciprocal_rank == pytest.approx((1 + 1 + (1 / second if second <= 5 else 0)) / 4)
    assert result.to_json()["recall_at_5"] == round(result.recall_at_k, 4)
    assert exact_items(vectors, near[:0], rows[:0]).queries == 0
    sample = exact_item_rows(1000, 300, seed=2)
    assert len(sample) == 300 and len(set(sample.tolist())) == 300 and np.all(np.diff(sample) > 0)
    assert np.array_equal(sample, exact_item_rows(1000, 300, seed=2)) and exact_item_rows(5, 300, seed=2).tolist() == [0, 1, 2, 3, 4]
