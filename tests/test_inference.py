"""The inference service (``bot/inference.py``): photos embedded off the event loop in shared batches."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from bot.inference import InferenceService


async def test_inference_hands_out_vectors_that_own_their_data(demo_recommender, demo_photo: Path) -> None:
    service = InferenceService(demo_recommender)
    service.start()
    try:
        data = demo_photo.read_bytes()
        queries = await asyncio.gather(*(service.embed_photo(data) for _ in range(4)))
    finally:
        service.stop()
    assert all(query.vector.base is None for query in queries)
    assert np.allclose(queries[0].vector, queries[3].vector)
    assert queries[0].pinned == queries[3].pinned


async def test_pages_follow_the_recommenders_ranking(demo_recommender, demo_photo: Path) -> None:
    service = InferenceService(demo_recommender)
    service.start()
    try:
        query = await service.embed_photo(demo_photo.read_bytes())
        first, second = await service.page(query, 0, 5), await service.page(query, 5, 5)
        tail = await service.page(query, len(demo_recommender) - 2, 5)
    finally:
        service.stop()
    ranked = demo_recommender.answer([query], 10, 0)[0]
    assert [m.id for m in first + second] == [m.id for m in ranked]
    assert len(tail) == 2  # fewer at the end of the catalogue


async def test_a_batch_gets_its_first_pages_from_one_search(demo_recommender, demo_catalogue) -> None:
    """Photos waiting together are embedded and searched together; each page is the recommender's own."""
    photos = [(demo_catalogue.images_dir / item.image).read_bytes() for item in demo_catalogue.items[:6]]
    service = InferenceService(demo_recommender)
    service.start()
    try:
        answers = await asyncio.gather(*(service.embed_and_page(photo, size) for photo, size in zip(photos, (5, 3, 5, 0, 5, 1))))
    finally:
        service.stop()
    assert service.images == len(photos)
    for (query, page, _), size in zip(answers, (5, 3, 5, 0, 5, 1)):
        assert [m.id for m in page] == [m.id for m in demo_recommender.answer([query], size, 0)[0]] if size else page == []


async def test_the_service_searches_on_one_blas_thread_and_switches_to_the_projection_when_ready(
    demo_recommender, demo_catalogue, monkeypatch
) -> None:
    """A large catalogue's projection is built after start-up, off the event loop; answers stay the recommender's own."""
    from threadpoolctl import threadpool_info

    from recommender.search import ExactSearcher

    assert demo_recommender.index is not None
    searcher = ExactSearcher(project_above=0).fit(demo_recommender.index.vectors)  # the demo is small: lower the bar
    monkeypatch.setattr(demo_recommender, "searcher", searcher)
    photos = [(demo_catalogue.images_dir / item.image).read_bytes() for item in demo_catalogue.items[:3]]
    blas_threads = {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}
    service = InferenceService(demo_recommender)
    service.start()
    try:
        assert {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"} == {1}
        for _ in range(600):  # wait for the projection's thread to finish, not for a fixed time
            if searcher.projected:
                break
            await asyncio.sleep(0.01)
        assert searcher.projected
        answers = await asyncio.gather(*(service.embed_and_page(photo, 5) for photo in photos))
    finally:
        service.stop()
    assert {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"} == blas_threads  # restored
    plain = ExactSearcher().fit(demo_recommender.index.vectors)
    for query, page, _ in answers:
        rows, _ = plain.search(query.vector, 5 + len(query.pinned))
        expected = [*query.pinned, *(row for row in rows[0].tolist() if row not in query.pinned)][:5]
        assert [m.row for m in page] == expected
