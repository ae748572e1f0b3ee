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

import numpy as np

from recommender.search import ExactSearcher
from recommender.vectors import l2_normalize


def timed(call, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(1000 * (time.perf_counter() - started))
    return times


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
        searcher = ExactSearcher().fit(vectors)
        searcher.search(queries[:1], args.k)
        searcher.search_sklearn(queries[:1], args.k)
        position = iter(range(10**9))
        fast = timed(lambda: searcher.search(queries[next(position) % args.repeats][None], args.k), args.repeats)
        position = iter(range(10**9))
        slow = timed(lambda: searcher.search_sklearn(queries[next(position) % args.repeats][None], args.k), max(20, args.repeats // 10))
        same = all(
            np.array_equal(searcher.search(q[None], args.k)[0], searcher.search_sklearn(q[None], args.k)[0]) for q in queries[:50]
        )
        p95 = sorted(fast)[int(0.95 * (len(fast) - 1))]
        print(
            f"{args.n} x {dim}: one query, matmul+argpartition {statistics.median(fast):.1f} ms (p95 {p95:.1f}); "
            f"NearestNeighbors.kneighbors {statistics.median(slow):.1f} ms; same neighbours: {same}; "
            f"target < 10 ms {'MET' if statistics.median(fast) < 10 else 'MISSED'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
