"""recommender/recommender.py: the engine's public face, end to end over real indexes and real models."""

from __future__ import annotations

import io

import numpy as np
import pytest

from recommender import ImageDecodeError, Match, NotLoadedError, Recommender, colour
from recommender import search as search_module
from recommender.catalogue import display_name
from recommender.colour import colour_histograms
from recommender.images import load_image
from recommender.recommender import EXACT_MATCH_LINE
from recommender.refine import LabelCentroids


def test_recommend_returns_ranked_matches_with_labels(demo_recommender, demo_index):
    item = demo_index.catalogue.items[0]
    matches = demo_recommender.recommend(demo_index.catalogue.images_dir / item.image, k=5)
    assert [m.rank for m in matches] == [0, 1, 2, 3, 4]
    assert all(isinstance(m, Match) for m in matches)
    assert len({m.id for m in matches}) == 5
    # Products the photo's keypoints verified come first (recommender/exact_match.py); the rest by similarity.
    pinned = len(demo_recommender.queries([demo_recommender.prepare(demo_index.catalogue.images_dir / item.image)])[0].pinned)
    scores = [m.score for m in matches[pinned:]]
    assert scores == sorted(scores, reverse=True)
    top = matches[0]
    assert top.id == item.id and top.row == 0
    assert top.image_path == (demo_index.catalogue.images_dir / item.image).resolve()
    assert top.display_name == item.labels["productDisplayName"]
    assert top.labels["articleType"] == item.labels["articleType"] and "image" not in top.labels
    expected = f"{item.labels['productDisplayName']}\n{item.labels['articleType']} · {item.labels['baseColour']} · {item.labels['gender']}"
    assert top.caption() == (f"{EXACT_MATCH_LINE}\n{expected}" if top.exact else expected)
    assert not any(m.exact for m in matches[1:])
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


BATCH_THRESHOLD = 16


def test_a_batch_large_enough_for_the_sklearn_path_gives_the_same_answers(demo_recommender, demo_index, monkeypatch):
    # Batches from 16 queries take NearestNeighbors (by default only batches far larger do), single photos the matrix product.
    monkeypatch.setattr(search_module, "MATMUL_SCORES", len(demo_index.catalogue.items) * BATCH_THRESHOLD - 1)
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
    with pytest.raises(NotLoadedError, match="load"):
        recommender.recommend(b"x")
    for call in (lambda: recommender.decode(b"x"), lambda: recommender.embed(np.zeros((1, 224, 224, 3), np.uint8)),
                 lambda: recommender.matches(np.zeros((1, 4), np.float32)), lambda: len(recommender),
                 lambda: recommender.manifest):  # fmt: skip
        with pytest.raises(NotLoadedError, match="load"):
            call()


def test_display_name_falls_back_to_the_id():
    assert display_name({"id": "42"}) == "Product 42"
    assert display_name({"id": "42", "productDisplayName": "  Red   Tee "}) == "Red Tee"
    match = Match(rank=0, row=0, id="42", score=0.5, display_name="Product 42", image_path=None, labels={"id": "42"})  # type: ignore[arg-type]
    assert match.caption() == "Product 42"
    assert match.to_dict() == {"id": "42", "score": 0.5, "exact_match": False}


# --- the stages one by one: decode, embed, matches ---------------------------------------------


def test_recommend_is_decode_then_embed_then_matches(demo_recommender, demo_index):
    path = demo_index.catalogue.images_dir / demo_index.catalogue.items[30].image
    pixels = demo_recommender.decode(path)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, load_image(path))  # the builder's decoding, exactly
    vectors = demo_recommender.embed(pixels[None])
    assert vectors.shape == (1, demo_recommender.manifest.vector_dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    pages = demo_recommender.matches(vectors, k=3, offset=2)
    assert len(pages) == 1 and [m.rank for m in pages[0]] == [2, 3, 4]
    # recommend = prepare (pixels, crops, keypoints) → one forward pass → verification → pages
    assert demo_recommender.finds_exact_items
    photo = demo_recommender.prepare(path)
    np.testing.assert_array_equal(photo.pixels, pixels)
    assert demo_recommender.crops_per_photo == 0  # crops only with exact_crops
    assert photo.crops is not None and photo.crops.shape == (0, 224, 224, 3) and photo.local is not None and len(photo.local) > 0
    (query,) = demo_recommender.queries([photo])
    np.testing.assert_allclose(query.vector, vectors[0], atol=1e-5)
    answered = demo_recommender.answer([query], k=3, offset=2)[0]
    assert [(m.id, m.score) for m in answered] == [(m.id, m.score) for m in demo_recommender.recommend(path, k=3, offset=2)]
    unpinned = [m.id for m in demo_recommender.matches(vectors, k=5)[0] if m.row not in query.pinned]
    assert [m.id for m in demo_recommender.answer([query], k=5)[0]] == [*(demo_recommender.index.ids()[row] for row in query.pinned), *unpinned][:5]


def test_matches_answers_each_query_vector_in_order(demo_recommender):
    index = demo_recommender.index
    pages = demo_recommender.matches(index.vectors[[5, 60, 17]], k=2)
    assert [page[0].row for page in pages] == [5, 60, 17]  # every product is its own best match
    assert all(page[0].score == pytest.approx(1.0, abs=1e-5) and len(page) == 2 for page in pages)


def test_embed_of_a_refined_index_adds_the_colour_histogram(demo_index_refined, demo_index, demo_recommender):
    refined = demo_index_refined.recommender()
    path = demo_index.catalogue.images_dir / demo_index.catalogue.items[12].image
    pixels = refined.decode(path)[None]
    vectors = refined.embed(pixels)
    assert vectors.shape[1] == refined.manifest.vector_dim == refined.manifest.model.feature_dim + colour.DIM
    # The plain index's query vector is the backbone's features; the refined one appends the colours.
    expected = LabelCentroids.query_vectors(demo_recommender.embed(pixels), colour_histograms(pixels))
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_decode_applies_the_recommenders_byte_limit(demo_index, demo_recommender):
    path = demo_index.catalogue.images_dir / demo_index.catalogue.items[0].image
    strict = Recommender(demo_index.path, max_bytes=path.stat().st_size - 1).load()
    with pytest.raises(ImageDecodeError, match="too big"):
        strict.decode(path)
    assert demo_recommender.decode(path).shape == (224, 224, 3)


# --- many photos: bounded batches, answers as they go -------------------------------------------


def assert_same_answer(answer: list[Match], single: list[Match], atol: float = 1e-5) -> None:
    """Same scores rank by rank, same products except where two score the same (random weights
    make near-duplicate demo photos tie to 1e-7, and a batch may order them differently)."""
    scores = [m.score for m in single]
    np.testing.assert_allclose([m.score for m in answer], scores[: len(answer)], atol=atol, rtol=0)
    for rank, match in enumerate(answer):
        tied = any(abs(scores[rank] - scores[other]) <= atol for other in (rank - 1, rank + 1) if 0 <= other < len(scores))
        assert tied or match.id == single[rank].id, ([m.id for m in answer], [m.id for m in single])


def test_iter_recommend_decodes_as_it_goes_and_matches_one_by_one(demo_recommender, demo_index):
    """20 sources (18 photos, 2 bad) in batches of 4: the first answers come before the 5th source
    is even taken, every answer equals one pass over all of them (and ``recommend`` on its own),
    bad sources get their error in place."""
    images_dir = demo_index.catalogue.images_dir
    sources: list[object] = [images_dir / item.image for item in demo_index.catalogue.items[::5]][:18]
    sources.insert(5, b"not an image")
    sources.insert(13, (images_dir / demo_index.catalogue.items[0].image).read_bytes()[:300])
    taken = 0

    def lazily():
        nonlocal taken
        for source in sources:
            taken += 1
            yield source

    answers = demo_recommender.iter_recommend(lazily(), k=3, batch_size=4)
    first = next(answers)
    assert taken == 4  # one batch decoded, not the whole input
    answers = [first, *answers]
    assert taken == len(sources) == len(answers) == 20
    one_pass = demo_recommender.recommend_many(sources, k=4, batch_size=len(sources))
    for position, (source, answer, reference) in enumerate(zip(sources, answers, one_pass)):
        if position in (5, 13):
            assert isinstance(answer, ImageDecodeError) and isinstance(reference, ImageDecodeError), position
            continue
        assert_same_answer(answer, reference)
        if position % 7 == 0:
            assert_same_answer(answer, demo_recommender.recommend(source, k=4))
    assert demo_recommender.recommend_many(iter(sources[:10]), k=3, batch_size=4)[5].__class__ is ImageDecodeError
