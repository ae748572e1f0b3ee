"""recommender/filters.py and ``where=``: only products that pass, ranked exactly as without the filter."""

from __future__ import annotations

import numpy as np
import pytest

from recommender import FilterError
from recommender.filters import allowed_rows, canonical, describe, parse_option
from recommender.search import ExactSearcher
from recommender.vectors import l2_normalize
from tests.recommender_helpers import error_line, run_script

PRODUCTS = [
    {"id": "1", "gender": "Women", "masterCategory": "Footwear"},
    {"id": "2", "gender": "Men", "masterCategory": "Footwear"},
    {"id": "3", "gender": "Unisex", "masterCategory": "Apparel"},
    {"id": "4", "gender": " women ", "masterCategory": "Apparel"},
    {"id": "5", "gender": "", "masterCategory": "Footwear"},
]
COLUMNS = ["id", "gender", "masterCategory"]


def test_columns_combine_with_and_values_with_or_without_case():
    where = canonical({"gender": ["WOMEN", "unisex"], "masterCategory": "apparel"})
    assert allowed_rows(PRODUCTS, where, COLUMNS).tolist() == [False, False, True, True, False]
    assert allowed_rows(PRODUCTS, canonical({"gender": "Women"}), COLUMNS).tolist() == [True, False, False, True, False]
    assert allowed_rows(PRODUCTS, canonical({"gender": "Girls"}), COLUMNS).tolist() == [False] * 5  # nothing passes: no error
    assert canonical(None) == canonical({}) == ()
    assert canonical({"b": "x", "a": ["Y", "y "]}) == (("a", frozenset({"y"})), ("b", frozenset({"x"})))
    assert describe(where) == "gender=unisex,women masterCategory=apparel"


def test_mistakes_get_messages_that_say_what_to_write():
    with pytest.raises(FilterError, match="no column 'colour' to filter on; it has: id, gender, masterCategory"):
        allowed_rows(PRODUCTS, canonical({"colour": "Red"}), COLUMNS)
    with pytest.raises(FilterError, match="lists no value"):
        canonical({"gender": ["", " "]})
    assert parse_option("gender=Women, Unisex") == ("gender", ["Women", "Unisex"])
    for bad in ("gender", "=Women", "gender=", "gender=,"):
        with pytest.raises(FilterError, match="COLUMN=VALUE"):
            parse_option(bad)


def _searchers(vectors: np.ndarray) -> dict[str, ExactSearcher]:
    projected = ExactSearcher(project_above=0, projected_dim=vectors.shape[1] // 4).fit(vectors)
    assert projected.prepare_projection()
    return {
        "matmul": ExactSearcher(batch_threshold=10**9).fit(vectors),
        "batch path": ExactSearcher(batch_threshold=0).fit(vectors),
        "projected": projected,
    }


@pytest.mark.parametrize("path", ["matmul", "batch path", "projected"])
def test_every_search_path_gives_the_exact_top_k_among_the_allowed_rows(path):
    rng = np.random.default_rng(21)
    centres = rng.standard_normal((8, 64))
    vectors = l2_normalize((centres[rng.integers(0, 8, 900)] + 0.3 * rng.standard_normal((900, 64))).astype(np.float32))
    allowed = rng.random(900) < 0.2
    queries = l2_normalize((vectors[:40] + 0.05 * rng.standard_normal((40, 64))).astype(np.float32))
    searcher = _searchers(vectors)[path]
    rows, sims = searcher.search(queries, 7, allowed=allowed)
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    scores[:, ~allowed] = -np.inf
    best = np.sort(scores, axis=1)[:, ::-1][:, :7]
    assert rows.shape == (40, 7) and allowed[rows].all()
    np.testing.assert_allclose(sims, best, atol=1e-5)
    few = np.zeros(900, dtype=bool)
    few[[3, 500, 899]] = True
    rows, sims = searcher.search(queries[:2], 5, allowed=few)  # fewer pass than asked: all of them
    assert rows.shape == (2, 3) and {frozenset(r.tolist()) for r in rows} == {frozenset({3, 500, 899})}
    rows, _ = searcher.search(queries[:2], 5, allowed=few, exclude=np.array([500, -1]))
    assert sorted(rows[0].tolist()) == [3, 899]
    rows, sims = searcher.search(queries[:2], 5, allowed=np.zeros(900, dtype=bool))
    assert rows.shape == sims.shape == (2, 0)


def test_recommend_keeps_only_the_products_that_pass_in_the_unfiltered_order(demo_recommender, demo_photo):
    everything = demo_recommender.recommend(demo_photo, k=len(demo_recommender))
    for where in ({"gender": "women"}, {"gender": ["Men", "Unisex"], "masterCategory": "Footwear"}):
        kept = demo_recommender.recommend(demo_photo, k=4, where=where)
        passing = [m for m in everything if all(m.labels.get(c, "").casefold() in [str(v).casefold() for v in ([vs] if isinstance(vs, str) else vs)] for c, vs in where.items())]
        assert [m.id for m in kept] == [m.id for m in passing[:4]]
        assert [m.rank for m in kept] == list(range(len(kept)))
    page_two = demo_recommender.recommend(demo_photo, k=4, offset=4, where={"gender": "Women"})
    assert [m.id for m in page_two] == [m.id for m in everything if m.labels["gender"] == "Women"][4:8]
    assert demo_recommender.recommend(demo_photo, where={"gender": "Girls"}) == []
    with pytest.raises(FilterError, match="no column 'colour'"):
        demo_recommender.recommend(demo_photo, where={"colour": "Red"})


def test_query_script_filters_and_says_when_nothing_passes(demo_index, demo_photo):
    result = run_script("query.py", demo_photo, "--index", demo_index.path, "--k", 3, "--where", "gender=women", "--where", "masterCategory=Apparel,Footwear")
    assert result.returncode == 0, result.stderr
    assert "Filter gender=women masterCategory=apparel,footwear:" in result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert len(lines) == 3 and all("· Women" in line for line in lines)
    nothing = run_script("query.py", demo_photo, "--index", demo_index.path, "--where", "gender=Girls")
    assert nothing.returncode == 0 and "No product passes this filter" in nothing.stderr
    assert "(no product passes the filter)" in nothing.stdout
    unknown = run_script("query.py", demo_photo, "--index", demo_index.path, "--where", "colour=Red")
    assert unknown.returncode == 2 and "no column 'colour'" in error_line(unknown)
    malformed = run_script("query.py", demo_photo, "--index", demo_index.path, "--where", "gender")
    assert malformed.returncode == 2 and "COLUMN=VALUE" in error_line(malformed)
