"""Recommender: the engine's public face, end to end over real indexes and real models."""

from __future__ import annotations

import io

import numpy as np
import pytest

from recommender import ImageDecodeError, Match, Recommender
from recommender.catalogue import display_name


def test_recommend_returns_ranked_matches_with_labels(demo_recommender, demo_index):
    item = demo_index.catalogue.items[0]
    matches = demo_recommender.recommend(demo_index.catalogue.images_dir / item.image, k=5)
    assert [m.rank for m in matches] == [0, 1, 2, 3, 4]
    assert all(isinstance(m, Match) for m in matches)
    assert len({m.id for m in matches}) == 5
    scores = [m.score for m in matches]
    assert scores == sorted(scores, reverse=True)
    top = matches[0]
    assert top.id == item.id and top.row == 0
    assert top.image_path == (demo_index.catalogue.images_dir / item.image).resolve()
    assert top.display_name == item.labels["productDisplayName"]
    assert top.labels["articleType"] == item.labels["articleType"] and "image" not in top.labels
    assert top.caption() == f"{item.labels['productDisplayName']}\n{item.labels['articleType']} · {item.labels['baseColour']} · {item.labels['gender']}"
    as_dict = top.to_dict()
    assert as_dict["id"] == item.id and as_dict["score"] == pytest.approx(top.score, abs=1e-6)
    assert as_dict["productDisplayName"] == item.labels["productDisplayName"]


def test_every_kind_of_source_gives_the_same_answer(demo_recommender, demo_index):
    path = demo_index.catalogue.images_dir / demo_index.catalogue.items[40].image
    data = path.read_bytes()
    expected = [(m.id, m.score) for m in demo_recommender.recommend(path, k=4)]
    for source in (str(path), data, bytearray(data), io.BytesIO(data)):
        got = [(m.id, m.score) for m in demo_recommender.recommend(source, k=4)]
        assert [i for i, _ in got] == [i for i, _ in expected]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-5)


def test_offset_pages_through_the_ranking(demo_recommender, demo_index):
    path = demo_index.catalogue.images_dir / demo_index.catalogue.items[10].image
    first_eight = demo_recommender.recommend(path, k=8)
    page = demo_recommender.recommend(path, k=3, offset=5)
    assert [m.id for m in page] == [m.id for m in first_eight[5:8]]
    assert [m.rank for m in page] == [5, 6, 7]


def test_recommend_many_answers_good_images_around_a_bad_one(demo_recommender, demo_index):
    images_dir = demo_index.catalogue.images_dir
    good = [images_dir / item.image for item in demo_index.catalogue.items[20:23]]
    answers = demo_recommender.recommend_many([good[0], b"not an image", good[1], good[2]], k=3)
    assert isinstance(answers[1], ImageDecodeError)
    for path, answer in zip(good, [answers[0], answers[2], answers[3]]):
        assert [m.id for m in answer] == [m.id for m in demo_recommender.recommend(path, k=3)]
    assert all(isinstance(a, ImageDecodeError) for a in demo_recommender.recommend_many([b"", b"junk"]))


def test_a_batch_large_enough_for_the_sklearn_path_gives_the_same_answers(demo_recommender, demo_index):
    from recommender.search import BATCH_THRESHOLD

    images_dir = demo_index.catalogue.images_dir
    paths = [images_dir / item.image for item in demo_index.catalogue.items[: BATCH_THRESHOLD + 2]]
    batched = demo_recommender.recommend_many(paths, k=3)
    for path in paths[:: BATCH_THRESHOLD // 2]:
        single = demo_recommender.recommend(path, k=3)
        assert [m.id for m in batched[paths.index(path)]] == [m.id for m in single]


def test_bad_image_raises_image_decode_error(demo_recommender):
    with pytest.raises(ImageDecodeError):
        demo_recommender.recommend(b"\x89PNG\r\n\x1a\n broken")


def test_real_photo_neighbours_are_similar_products(fashion_recommender, fashion_index):
    """With the real ImageNet weights a shoe's neighbours are mostly footwear, a watch's watches..."""
    index = fashion_index.load()
    by_type: dict[str, int] = {}
    for row, product in enumerate(index.products):
        by_type.setdefault(product["articleType"], row)
    rows = [by_type[kind] for kind in ("Watches", "Casual Shoes", "Handbags", "Sunglasses") if kind in by_type]
    answers = fashion_recommender.recommend_many([index.image_path(row) for row in rows], k=6)
    for row, matches in zip(rows, answers):
        assert matches[0].row == row
        same = sum(m.labels["masterCategory"] == index.products[row]["masterCategory"] for m in matches[1:])
        assert same >= 4, (index.products[row]["articleType"], [m.labels["articleType"] for m in matches])


def test_unloaded_recommender_says_so(demo_index):
    recommender = Recommender(demo_index.path)
    with pytest.raises(RuntimeError, match="load"):
        recommender.recommend(b"x")


def test_display_name_falls_back_to_the_id():
    assert display_name({"id": "42"}) == "Product 42"
    assert display_name({"id": "42", "productDisplayName": "  Red   Tee "}) == "Red Tee"
    match = Match(rank=0, row=0, id="42", score=0.5, display_name="Product 42", image_path=None, labels={"id": "42"})  # type: ignore[arg-type]
    assert match.caption() == "Product 42"
    assert match.to_dict() == {"id": "42", "score": 0.5}
