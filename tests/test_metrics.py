"""recommender/evaluation/metrics.py: the metric definitions, on rankings small enough to score by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from recommender.evaluation.metrics import average_precision_at_k, evaluate_rankings, macro_average, nanmean
from recommender.evaluation.report import weakest_types
from tests.recommender_helpers import labelled_items as items


def test_perfect_ranking_scores_one():
    searchable = items(*["A"] * 6, *["B"] * 6)
    queries = items("A", "B")
    report = evaluate_rankings(queries, np.array([[0, 1, 2, 3, 4], [6, 7, 8, 9, 10]]), searchable)
    assert report.precision["articleType"] == {"micro": 1.0, "macro": 1.0}
    assert report.map_at_k["articleType"] == 1.0
    assert report.queries == 2 and report.k == 5


def test_average_precision_of_a_known_mixed_ranking():
    relevance = np.array([[1, 0, 1, 0, 0]] * 3, dtype=bool)
    ap = average_precision_at_k(relevance, np.array([2, 10, 0]))
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)
    assert ap[1] == pytest.approx((1 + 2 / 3) / 5)  # more relevant items than k: divide by k
    assert math.isnan(ap[2])  # nothing relevant exists: not scored


def test_average_precision_rewards_relevant_results_ranked_first():
    early = average_precision_at_k(np.array([[1, 1, 0, 0]], dtype=bool), np.array([2]))
    late = average_precision_at_k(np.array([[0, 0, 1, 1]], dtype=bool), np.array([2]))
    assert early[0] == 1.0
    assert late[0] == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_evaluate_rankings_gives_the_exact_fractions():
    # Searchable: rows 0 and 2 are type A (2 relevant available), the rest B.
    searchable = items("A", "B", "A", "B", "B", "B", "B")
    report = evaluate_rankings(items("A"), np.array([[0, 1, 2, 3, 4]]), searchable, min_items=1)
    assert report.precision["articleType"]["micro"] == pytest.approx(2 / 5)
    assert report.map_at_k["articleType"] == pytest.approx((1 + 2 / 3) / 2)
    assert report.precision["masterCategory"]["micro"] == 1.0


def test_short_result_lists_count_missing_places_as_wrong():
    report = evaluate_rankings(items("A"), np.array([[0, 1]]), items("A", "A"), k=5, min_items=1)
    assert report.precision["articleType"]["micro"] == pytest.approx(2 / 5)
    assert report.map_at_k["articleType"] == 1.0  # both of the 2 relevant items, ranked first


def test_k_cuts_wider_result_lists():
    searchable = items("A", "B", "B", "A")
    report = evaluate_rankings(items("A"), np.array([[0, 1, 2, 3]]), searchable, k=2, min_items=1)
    assert report.k == 2
    assert report.precision["articleType"]["micro"] == pytest.approx(1 / 2)  # row 3 is past k


def test_macro_is_the_mean_of_type_means_over_types_with_five_items():
    # A: 6 catalogue items, 2 queries (P = 1.0, 0.6); B: 5 items, 1 query (P = 0.2); C: 4 items (ignored).
    searchable = items(*["A"] * 5, *["B"] * 4, *["C"] * 3, "X", "X", "X", "X", "X")
    a, b, c, x = [0, 1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]
    queries = items("A", "A", "B", "C")  # held out: they add one item each to their type
    results = np.array([a, a[:3] + x[:2], b[:1] + x[:4], c + x[:2]])
    report = evaluate_rankings(queries, results, searchable)
    p = [1.0, 0.6, 0.2, 0.6]
    assert report.precision["articleType"]["micro"] == pytest.approx(np.mean(p))
    assert report.precision["articleType"]["macro"] == pytest.approx(np.mean([np.mean(p[:2]), p[2]]))
    per_type = {row["articleType"]: row for row in report.per_type}
    assert per_type["A"]["items"] == 7 and per_type["A"]["in_macro"] and per_type["A"]["queries"] == 2
    assert per_type["C"]["items"] == 4 and not per_type["C"]["in_macro"]
    assert [row["articleType"] for row in weakest_types(report)] == ["B", "A"]


def test_per_type_rows_are_biggest_type_first_with_rounded_figures():
    searchable = items(*["A"] * 3, *["B"] * 6)
    queries = items("A", "B", "B")
    results = np.array([[0, 3, 4], [3, 4, 0], [0, 1, 2]])
    report = evaluate_rankings(queries, results, searchable, min_items=1)
    assert [row["articleType"] for row in report.per_type] == ["B", "A"]  # 8 items before 4
    b = report.per_type[0]
    assert b["queries"] == 2 and b["p@3_articleType"] == round((2 / 3 + 0) / 2, 4)
    assert set(b) == {"articleType", "items", "queries", "in_macro", "p@3_articleType", "p@3_masterCategory",
                      "p@3_baseColour", "p@3_gender", "map@3_articleType"}


def test_unknown_query_labels_are_left_out_and_empty_labels_never_match():
    searchable = items("A", "A", colour="")
    queries = items("A", colour="") + items("A", colour="Red")
    report = evaluate_rankings(queries, np.array([[0, 1], [0, 1]]), searchable, min_items=1)
    assert report.precision["baseColour"]["micro"] == 0.0  # only the query with a known colour counts
    assert report.precision["articleType"]["micro"] == 1.0
    all_unknown = evaluate_rankings(items("A", colour=""), np.array([[0, 1]]), searchable, min_items=1)
    assert math.isnan(all_unknown.precision["baseColour"]["micro"])
    precision = all_unknown.to_json()["precision_at_2"]
    assert isinstance(precision, dict) and precision["baseColour"]["micro"] is None  # NaN is not JSON
    json.dumps(all_unknown.to_json(), allow_nan=False)


def test_a_query_among_its_own_results_is_refused():
    with pytest.raises(ValueError, match="own row"):
        evaluate_rankings(items("A"), np.array([[0, 1]]), items("A", "A"), query_rows_in_searchable=[0], min_items=1)


def test_the_query_itself_is_not_counted_as_available():
    # Leave-one-out: the query is row 0 of the searchable items; only row 2 is another A.
    searchable = items("A", "B", "A", "B")
    report = evaluate_rankings(items("A"), np.array([[2, 1]]), searchable, query_rows_in_searchable=[0], min_items=1)
    assert report.map_at_k["articleType"] == 1.0  # 1 relevant item available, found first
    unseen = evaluate_rankings(items("A"), np.array([[2, 1]]), searchable, query_rows_in_searchable=[None], min_items=1)
    assert unseen.map_at_k["articleType"] == pytest.approx(1 / 2)  # 2 available, one found


def test_malformed_calls_are_refused():
    with pytest.raises(ValueError, match="k must be at least 1"):
        evaluate_rankings(items("A"), np.array([[0]]), items("A"), k=0)
    with pytest.raises(ValueError, match="one entry per query"):
        evaluate_rankings(items("A", "A"), np.array([[0], [0]]), items("A"), query_rows_in_searchable=[-1])


def test_macro_average_ignores_nan_and_ineligible_groups():
    values = np.array([1.0, 0.0, np.nan, 0.5, 0.25])
    groups = ["A", "A", "B", "B", "C"]
    assert macro_average(values, groups, {"A", "B"}) == pytest.approx((0.5 + 0.5) / 2)
    assert macro_average(values, groups, {"C"}) == pytest.approx(0.25)
    assert math.isnan(macro_average(values, groups, set()))
    assert math.isnan(macro_average(np.array([np.nan]), ["A"], {"A"}))


def test_nanmean_skips_nan_and_is_nan_when_nothing_is_left():
    assert nanmean(np.array([1.0, np.nan, 0.0])) == 0.5
    assert math.isnan(nanmean(np.array([np.nan])))
    assert math.isnan(nanmean(np.array([])))
