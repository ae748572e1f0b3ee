#!/usr/bin/env python
"""Exact search speed for ONE query over a 44k catalogue (the size of Kaggle's full dataset).

    python benchmarks/search_speed.py [--n 44441] [--dims 2048 2368] [--repeats 200]

Prints per-query milliseconds (median and p95) of the path the bot uses for one query
(float32 matrix product + argpartition) and of scikit-learn's ``NearestNeighbors.kneighbors``
on the same vectors, and checks they return the same neighbours. Target: one query < 10 ms.
2048 is ResNet50's plain feature size, 2368 the label-refined vectors (2048 + 320 colour bins).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from recommender.search import ExactSearcher
from recommender.vectors import l2_normalize


def timed(call: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - started))
    return times


def one_query_at_a_time(searcher: ExactSearcher, queries: np.ndarray, k: int, repeats: int) -> list[float]:
    """Milliseconds per single-query search, cycling through ``queries``."""
    position = iter(range(10**9))
    return timed(lambda: searcher.search(queries[next(position) % len(queries)][None], k), repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=44_441)
    parser.add_argument("--dims", type=int, nargs="+", default=[2048, 2368])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for dim in args.dims:
        # Clustered like real features (products of one type are close), not uniform noise.
        centres = rng.standard_normal((100, dim)).astype(np.float32)
        vectors = l2_normalize(centres[rng.integers(0, 100, args.n)] + 0.5 * rng.standard_normal((args.n, dim)).astype(np.float32))
        queries = l2_normalize(vectors[rng.integers(0, args.n, args.repeats)] + 0.1 * rng.standard_normal((args.repeats, dim)).astype(np.float32))
        searcher = ExactSearcher().fit(vectors)  # what the bot uses: one query takes the matrix product
        reference = ExactSearcher(batch_threshold=0).fit(vectors)  # always NearestNeighbors.kneighbors
        searcher.search(queries[:1], args.k)
        reference.search(queries[:1], args.k)
        fast = one_query_at_a_time(searcher, queries, args.k, args.repeats)
        slow = one_query_at_a_time(reference, queries, args.k, max(20, args.repeats // 10))
        same = all(np.array_equal(searcher.search(q[None], args.k)[0], reference.search(q[None], args.k)[0]) for q in queries[:50])
        p95 = sorted(fast)[int(0.95 * (len(fast) - 1))]
        print(
            f"{args.n} x {dim}: one query, matmul+argpartition {statistics.median(fast):.1f} ms (p95 {p95:.1f}); "
            f"NearestNeighbors.kneighbors {statistics.median(slow):.1f} ms; same neighbours: {same}; "
            f"target < 10 ms {'MET' if statistics.median(fast) < 10 else 'MISSED'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
