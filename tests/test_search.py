"""recommender/search.py: the matrix-product path and scikit-learn's NearestNeighbors give the same neighbours."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from recommender import search as search_module
from recommender.errors import NotLoadedError
from recommender.search import ExactSearcher
from recommender.vectors import l2_normalize
from tests.recommender_helpers import assert_same_neighbours

#: a batch size the tests make large enough for the NearestNeighbors path (see test_batch_threshold_chooses_the_path)
BATCH_THRESHOLD = 16


def unit_vectors(count: int, dim: int, seed: int) -> np.ndarray:
    return l2_normalize(np.random.default_rng(seed).standard_normal((count, dim)))


def both_paths(vectors: np.ndarray) -> tuple[ExactSearcher, ExactSearcher]:
    """One searcher that always multiplies matrices, one that always asks NearestNeighbors."""
    return ExactSearcher(batch_threshold=10**9).fit(vectors), ExactSearcher(batch_threshold=0).fit(vectors)


def projected(vectors: np.ndarray, dim: int | None = None) -> ExactSearcher:
    """A searcher that reads a short projection first, whatever the catalogue's size (a quarter of the length by default)."""
    searcher = ExactSearcher(project_above=0, projected_dim=dim or max(1, vectors.shape[1] // 4)).fit(vectors)
    assert searcher.prepare_projection() and searcher.projected
    return searcher


def searcher_for(path: str, vectors: np.ndarray) -> ExactSearcher:
    return projected(vectors) if path == "projected" else both_paths(vectors)[path == "sklearn"]


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("queries", [1, 3, BATCH_THRESHOLD, 50], ids=lambda n: f"{n}q")
def test_paths_agree_on_random_unit_vectors(queries, monkeypatch):
    monkeypatch.setattr(search_module, "MATMUL_SCORES", 700 * BATCH_THRESHOLD - 1)  # the default takes NearestNeighbors from 16 queries
    vectors = unit_vectors(700, 96, seed=1)
    query = unit_vectors(queries, 96, seed=2)
    matmul, sklearn = both_paths(vectors)
    fast = matmul.search(query, 10)
    reference = sklearn.search(query, 10)
    assert_same_neighbours(vectors, query, fast, reference)
    np.testing.assert_array_equal(fast[0], brute_force(vectors, query, 10))
    # The public default picks a path by batch size; either way the answer is the same.
    assert_same_neighbours(vectors, query, ExactSearcher().fit(vectors).search(query, 10), reference)


def test_batch_threshold_chooses_the_path(monkeypatch):
    """The seam the other tests rely on: 0 always asks NearestNeighbors, a huge threshold never does; the
    default asks it only for a batch whose scores would not fit in MATMUL_SCORES."""
    calls: list[int] = []
    kneighbors = NearestNeighbors.kneighbors

    def counting(self, queries, *args, **kwargs):
        calls.append(len(queries))
        return kneighbors(self, queries, *args, **kwargs)

    monkeypatch.setattr(NearestNeighbors, "kneighbors", counting)
    vectors = unit_vectors(60, 8, seed=11)
    matmul, sklearn = both_paths(vectors)
    matmul.search(vectors[:50], 3)
    assert calls == []
    assert sklearn.search(vectors[:3], 4)[1].dtype == np.float32
    assert calls == [3]
    default = ExactSearcher().fit(vectors)
    default.search(vectors[:50], 3)
    assert calls == [3]  # 50 x 60 scores: far below MATMUL_SCORES
    monkeypatch.setattr(search_module, "MATMUL_SCORES", 60 * BATCH_THRESHOLD - 1)
    default.search(vectors[: BATCH_THRESHOLD - 1], 3)
    assert calls == [3]
    default.search(vectors[:BATCH_THRESHOLD], 3)
    assert calls == [3, BATCH_THRESHOLD]


def test_single_vector_query_is_accepted_as_1d():
    vectors = unit_vectors(50, 16, seed=3)
    rows, sims = ExactSearcher().fit(vectors).search(vectors[7], 3)
    assert rows.shape == sims.shape == (1, 3)
    assert rows[0, 0] == 7 and sims[0, 0] == pytest.approx(1.0, abs=1e-6)


def _real_vectors(request, name: str) -> np.ndarray:
    return request.getfixturevalue(name).load().vectors


@pytest.mark.parametrize("index", ["demo_index", pytest.param("fashion_index", marks=pytest.mark.shared)])
def test_paths_agree_on_real_index_vectors(request, index):
    vectors = _real_vectors(request, index)
    rng = np.random.default_rng(4)
    matmul, sklearn = both_paths(vectors)
    # Catalogue vectors themselves, and blends of two products (queries between catalogue items).
    picks = rng.choice(len(vectors), 40, replace=False)
    blends = l2_normalize(vectors[picks[:20]] + 0.7 * vectors[picks[20:]])
    for query in (vectors[picks[:1]], vectors[picks[:5]], vectors[picks], blends, blends[:1]):
        assert_same_neighbours(vectors, query, matmul.search(query, 8), sklearn.search(query, 8))
    rows, sims = matmul.search(vectors[picks], 1)
    np.testing.assert_array_equal(rows[:, 0], picks)
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)


@pytest.mark.parametrize("path", ["matmul", "sklearn", "projected"])
def test_exclude_removes_exactly_the_excluded_row(path):
    vectors = unit_vectors(300, 32, seed=5)
    searcher = searcher_for(path, vectors)
    queries = vectors[[10, 20, 30, 40]] + 0.01 * unit_vectors(4, 32, seed=6)
    exclude = np.array([10, -1, 30, 123])  # own row, nothing, own row, a row not in the top-k
    full_rows, full_sims = searcher.search(queries, 6)
    rows, sims = searcher.search(queries, 5, exclude=exclude)
    assert rows.shape == (4, 5)
    for query, excluded in enumerate(exclude):
        assert excluded not in rows[query]
        keep = full_rows[query] != excluded
        np.testing.assert_array_equal(rows[query], full_rows[query][keep][:5])
        np.testing.assert_allclose(sims[query], full_sims[query][keep][:5], atol=1e-6)
    assert rows[0, 0] != 10 and rows[1, 0] == 20  # the query's own row is what disappears


@pytest.mark.parametrize("path", ["matmul", "sklearn", "projected"])
def test_k_larger_than_the_index(path):
    vectors = unit_vectors(5, 8, seed=7)
    searcher = searcher_for(path, vectors)
    rows, sims = searcher.search(vectors[:2], 50)
    assert rows.shape == sims.shape == (2, 5)
    for row in rows:
        assert sorted(row.tolist()) == [0, 1, 2, 3, 4]
    assert rows[0, 0] == 0 and rows[1, 0] == 1
    assert np.all(np.diff(sims, axis=1) <= 1e-6)
    rows, _ = searcher.search(vectors[:2], 50, exclude=np.array([0, 1]))
    assert rows.shape == (2, 4)
    assert 0 not in rows[0] and 1 not in rows[1]


@pytest.mark.parametrize("path", ["matmul", "sklearn", "projected"])
def test_float32_is_preserved(path):
    vectors = unit_vectors(100, 24, seed=8)
    searcher = searcher_for(path, vectors)
    for queries in (vectors[:3], vectors[:3].astype(np.float64), vectors[:20]):
        rows, sims = searcher.search(queries, 4)
        assert sims.dtype == np.float32
        assert rows.dtype == np.int64


@pytest.mark.parametrize("path", ["matmul", "sklearn", "projected"])
def test_k_below_one_is_refused_on_both_paths(path):
    searcher = searcher_for(path, unit_vectors(10, 4, seed=9))
    for k in (0, -3):
        with pytest.raises(ValueError, match="k must be at least 1"):
            searcher.search(unit_vectors(2, 4, seed=10), k)


def test_search_before_fit_is_an_error():
    with pytest.raises(NotLoadedError, match="before fit"):
        ExactSearcher().search(np.zeros((1, 4), np.float32))
    assert ExactSearcher().size == 0


@pytest.mark.parametrize("index", ["demo_index", pytest.param("fashion_index", marks=pytest.mark.shared)])
def test_the_projected_search_returns_the_exact_top_k_of_real_vectors(request, index):
    """Real MobileNetV2 features: the short first pass plus exact re-scoring equals a float64 brute force, and prunes."""
    vectors = _real_vectors(request, index)
    rng = np.random.default_rng(12)
    picks = rng.choice(len(vectors), 40, replace=False)
    blends = l2_normalize(vectors[picks[:20]] + 0.7 * vectors[picks[20:]])
    noisy = l2_normalize(vectors[picks] + 0.02 * rng.standard_normal(vectors[picks].shape).astype(np.float32))
    searcher = projected(vectors, dim=64)
    reference = both_paths(vectors)[0]
    for query in (vectors[picks[:1]], blends, noisy, blends[:16]):
        rows, sims = searcher.search(query, 8)
        assert_same_neighbours(vectors, query, (rows, sims), reference.search(query, 8))
        best = np.sort(query.astype(np.float64) @ vectors.astype(np.float64).T, axis=1)[:, ::-1][:, :8]
        np.testing.assert_allclose(sims, best, atol=1e-5)  # the k best scores themselves (the order of exact ties may differ)
        assert sims.dtype == np.float32 and np.all(np.diff(sims, axis=1) <= 1e-6)
    if len(vectors) >= 500:  # a real catalogue: the bound leaves a small share of the products to score exactly
        pruning = projected(vectors, dim=256)
        pruning.search(blends, 8)
        assert pruning._projected is not None and np.median(pruning._projected.last_exact_rows) < 0.1 * len(vectors)


def test_unstructured_vectors_fall_back_to_one_full_pass_and_stay_exact():
    """Random directions in 512-d leave the bound nothing to prune: every row is scored, the answer is still exact."""
    vectors = unit_vectors(3000, 512, seed=13)
    queries = unit_vectors(5, 512, seed=14)
    searcher = projected(vectors, dim=16)
    rows, _ = searcher.search(queries, 5)
    np.testing.assert_array_equal(rows, brute_force(vectors, queries, 5))
    projection = searcher._projected
    assert projection is not None and projection.last_exact_rows == [3000] * 5
    # Queries keep needing full passes: the projection stops paying, and is only tried now and then.
    many = unit_vectors(40, 512, seed=17)
    tried = 0
    for query in many:
        rows, _ = searcher.search(query, 5)
        np.testing.assert_array_equal(rows, brute_force(vectors, query[None], 5))
        tried += bool(projection.last_exact_rows)
    assert projection.full_pass_share > 0.5 and tried < 30


def test_the_projection_is_only_built_where_it_pays():
    assert not ExactSearcher().fit(unit_vectors(500, 64, seed=15)).prepare_projection()  # a small catalogue
    short = ExactSearcher(project_above=0, projected_dim=32).fit(unit_vectors(100, 100, seed=16))
    assert not short.prepare_projection() and not short.projected  # vectors under 4 x the projection's length
    with pytest.raises(NotLoadedError):
        ExactSearcher().prepare_projection()
