#!/usr/bin/env python
"""Search backends at catalogue sizes up to a million: build time, memory, latency, recall, in one run.

    python benchmarks/scale.py --index DIR [--sizes 44000 200000 1000000] [--dims 1280 2048]
                               [--backends exact ann] [--queries 200] [--time-limit 3600] [--json FILE]

``--index`` is an index of real photos (e.g. ``lookalike-build-index`` on ``../shared``'s 4k catalogue
with MobileNetV2, ``--head none --refine none``): its vectors and articleType/gender labels seed the
generator below. For every dimension and size, the script writes the vectors to ``--work`` (as an
index stores them), computes the exact top 5 of each query, then for each backend, in a fresh
process so that memory is its own: builds it (timed, peak memory), loads it as the bot does
(memory-mapped), and measures one query at a time (p50, p95), batches of 32 (queries/s), recall@5
against exact, and recall@5 with a filter (the products of women, about 40 %).

**The generator** (random vectors say nothing about recall on clustered image features): each
vector mixes two real products of the same articleType, ``w·a + (1-w)·b`` with ``w ~ U(0, 1)``, plus
Gaussian noise of ``--spread`` times that type's own per-dimension standard deviation, measured in the
real vectors, then is normalised; it inherits ``a``'s labels. ``--spread 0.5`` makes a generated set of
the real set's size as tight as the real one (median similarity to the nearest and 5th-nearest
neighbour; the script prints both for the real and a generated set). Queries are further draws.
There are no real ResNet50 weights here, so the 2048-d vectors are the same generated vectors through
one fixed random 1280→2048 linear map (neighbourhoods survive a random linear map, nearly), normalised.

Targets (issue 10, ann): recall@5 ≥ 0.95, p50 < 10 ms and memory < 4 GB at 1M, built in < 15 min.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

K = 5
BATCH = 32
_BLOCK = 65_536
FILTER_COLUMN, FILTER_VALUE = "gender", "Women"


class Generator:
    """Vectors like the real ones, in any number (see the module docstring)."""

    def __init__(self, vectors: np.ndarray, types: list[str], genders: list[str], spread: float, seed: int = 0) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        names, self.type_of = np.unique(np.asarray(types), return_inverse=True)
        self.women = np.asarray([gender == FILTER_VALUE for gender in genders])
        self.by_type = np.argsort(self.type_of, kind="stable")
        self.counts = np.bincount(self.type_of, minlength=len(names))
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        overall = self.vectors.std(axis=0)
        self.spread = np.stack(
            [self.vectors[self.type_of == t].std(axis=0) if self.counts[t] > 1 else overall for t in range(len(names))]
        ).astype(np.float32) * np.float32(spread)  # fmt: skip
        self.seed = seed

    def draw(self, count: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` vectors and whether each is a woman's product; ``stream`` seeds an independent draw."""
        vectors, first = self.draw_from(count, stream)
        return vectors, self.women[first]

    def draw_from(self, count: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` vectors and the real product each one inherits its labels from."""
        rng = np.random.default_rng([self.seed, stream])
        first = rng.integers(0, len(self.vectors), count)
        types = self.type_of[first]
        second = self.by_type[self.starts[types] + rng.integers(0, self.counts[types])]
        weight = rng.uniform(0.0, 1.0, (count, 1)).astype(np.float32)
        noise = rng.standard_normal((count, self.vectors.shape[1]), dtype=np.float32) * self.spread[types]
        mixed = weight * self.vectors[first] + (1 - weight) * self.vectors[second] + noise
        return mixed / np.linalg.norm(mixed, axis=1, keepdims=True), first


def neighbour_similarity(vectors: np.ndarray) -> tuple[float, float]:
    """Median cosine similarity to the nearest and to the 5th-nearest other vector."""
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -2.0)
    top = -np.sort(-scores, axis=1)[:, :K]
    return float(np.median(top[:, 0])), float(np.median(top[:, K - 1]))


def write_set(generator: Generator, size: int, lift: np.ndarray | None, path: Path) -> np.ndarray:
    """Write ``size`` generated vectors to ``path`` (.npy, block by block); returns the women mask."""
    dim = generator.vectors.shape[1] if lift is None else lift.shape[1]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(size, dim))
    women = np.empty(size, dtype=bool)
    for block, start in enumerate(range(0, size, _BLOCK)):
        vectors, women[start : start + _BLOCK] = generator.draw(min(_BLOCK, size - start), stream=1000 + block)
        out[start : start + _BLOCK] = lifted(vectors, lift)
    out.flush()
    del out
    return women


def lifted(vectors: np.ndarray, lift: np.ndarray | None) -> np.ndarray:
    if lift is None:
        return vectors
    out = vectors @ lift
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def exact_top(vectors: np.ndarray, queries: np.ndarray, allowed: np.ndarray | None = None) -> np.ndarray:
    """The exact top ``K`` rows per query, reading the (memory-mapped) vectors block by block."""
    best_scores = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), K), dtype=np.int64)
    for start in range(0, len(vectors), _BLOCK):
        scores = queries @ np.asarray(vectors[start : start + _BLOCK]).T
        if allowed is not None:
            scores[:, ~allowed[start : start + _BLOCK]] = -np.inf
        scores = np.concatenate([best_scores, scores], axis=1)
        rows = np.concatenate([best_rows, np.broadcast_to(np.arange(start, start + scores.shape[1] - K), (len(queries), scores.shape[1] - K))], axis=1)
        top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
        best_scores, best_rows = np.take_along_axis(scores, top, axis=1), np.take_along_axis(rows, top, axis=1)
    return best_rows


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(found, truth)]))


def _memory() -> tuple[float, float]:
    """(resident, peak resident) MB of this process and its children (Milvus Lite's server is one)."""
    resident = peak = 0.0
    for status in [Path("/proc/self/status"), *_children()]:
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:  # the child exited meanwhile
            continue
        resident += int(fields["VmRSS"].split()[0]) / 1024
        peak += int(fields["VmHWM"].split()[0]) / 1024
    return resident, peak


def _children() -> list[Path]:
    import os

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.append(stat.with_name("status"))
        except (OSError, IndexError, ValueError):
            continue
    return found


def measure(backend: str, work: str, dim: int, size: int, nprobes: list[int] | None = None) -> list[dict[str, Any]]:
    """In a fresh process: build the backend on the written set, load it as the bot does, query it
    (ann: once per ``nprobes`` value when given, else with its default)."""
    import dataclasses

    from recommender import ann_search
    from recommender.search import ExactSearcher

    folder = Path(work)
    vectors = np.load(folder / f"vectors-{dim}-{size}.npy", mmap_mode="r")
    queries = np.load(folder / f"queries-{dim}.npy")
    women = np.load(folder / f"women-{dim}-{size}.npy")
    result: dict[str, Any] = {"backend": backend, "dim": dim, "size": size}
    started = time.perf_counter()
    if backend == "ann":
        settings = ann_search.AnnSettings.for_count(size)
        built = ann_search.build(vectors, settings)
        built.save(folder)
        result.update(build_s=time.perf_counter() - started, build_peak_mb=_memory()[1], settings=settings.to_json(),
                      file_mb=(folder / ann_search.ANN_FILE).stat().st_size / 2**20)  # fmt: skip
        del built
        base = _memory()[0]
        started = time.perf_counter()
        ann = ann_search.AnnIndex.load(folder, {**settings.to_json(), "trained_on": size}, size, dim, mmap=True)
        searcher: Any = ann_search.AnnSearcher(ann).fit(vectors)
    elif backend == "milvus":
        searcher = _milvus(folder, vectors, women, dim, size, result)
        base = result.pop("base_mb")
    else:
        result.update(build_s=0.0, build_peak_mb=_memory()[1], file_mb=0.0)
        base = _memory()[0]
        searcher = ExactSearcher().fit(vectors)
        searcher.prepare_projection()  # what the bot does after start-up
    result["load_s"] = time.perf_counter() - started
    if backend != "ann" or not nprobes:
        return [{**result, **_queries(searcher, queries, women, base)}]
    results = []
    for nprobe in nprobes:
        searcher.ann.settings = dataclasses.replace(searcher.ann.settings, nprobe=nprobe)
        results.append({**result, "settings": searcher.ann.settings.to_json(), **_queries(searcher, queries, women, base)})
    return results


def _queries(searcher: Any, queries: np.ndarray, women: np.ndarray, base: float) -> dict[str, Any]:
    """One query at a time (p50, p95), batches, and the filtered answers, on one BLAS thread as the bot searches."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        searcher.search(queries[:1], K)
        single = []
        rows = np.empty((len(queries), K), dtype=np.int64)
        for i in range(len(queries)):
            began = time.perf_counter()
            rows[i] = searcher.search(queries[i : i + 1], K)[0][0]
            single.append(1000 * (time.perf_counter() - began))
        began = time.perf_counter()
        for start in range(0, len(queries), BATCH):
            searcher.search(queries[start : start + BATCH], K)
        batched = len(queries) / (time.perf_counter() - began)
        where = (("gender", frozenset({FILTER_VALUE.casefold()})),)
        filtered = searcher.search(queries, K, allowed=women, where=where)[0]
    resident, _ = _memory()
    return dict(
        p50_ms=float(np.percentile(single, 50)), p95_ms=float(np.percentile(single, 95)), batch_qps=batched,
        memory_mb=resident - base, rows=rows.tolist(), filtered_rows=filtered.tolist(),
    )  # fmt: skip


def _milvus(folder: Path, vectors: np.ndarray, women: np.ndarray, dim: int, size: int, result: dict[str, Any]) -> Any:
    """Write the set into Milvus Lite as a build does (batches, then flush), and open it as the bot does."""
    import shutil

    from recommender.manifest import Manifest, ModelIdentity
    from recommender.milvus_search import LOCAL_DB, MilvusPlan, MilvusSearcher, MilvusWriter, milvus_identity

    store = folder / f"milvus-{dim}-{size}"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir()
    manifest = Manifest(
        model=ModelIdentity("generated", "scale-benchmark", 224, "avg", dim), weights="none", count=size, vector_dim=dim,
        images_root="/", created_at="",
    )  # fmt: skip
    ids = [str(row) for row in range(size)]
    labels = [{"gender": FILTER_VALUE if woman else "Men"} for woman in women]
    started = time.perf_counter()
    entry, _ = MilvusWriter(MilvusPlan(), store, milvus_identity(manifest)).write(store, vectors, ids, labels, ["gender"], None, None, False)
    result.update(build_s=time.perf_counter() - started, build_peak_mb=_memory()[1], index=entry["index"],
                  file_mb=sum(f.stat().st_size for f in (store / LOCAL_DB).rglob("*") if f.is_file()) / 2**20)  # fmt: skip
    result["base_mb"] = _memory()[0]
    return MilvusSearcher(manifest.updated(search=entry), store, ids).fit(vectors)


def in_fresh_process(backend: str, work: Path, dim: int, size: int, nprobes: list[int] | None) -> list[dict[str, Any]]:
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(measure, (backend, str(work), dim, size, nprobes))


def load_seed(index: Path) -> tuple[np.ndarray, list[str], list[str]]:
    vectors = np.load(index / "vectors.npy")
    with (index / "products.csv").open(newline="", encoding="utf-8") as handle:
        products = list(csv.DictReader(handle))
    if len(products) != len(vectors) or not products or "articleType" not in products[0]:
        sys.exit(f"{index} must be an index with articleType labels (products.csv) matching its vectors.npy")
    return vectors, [p["articleType"] for p in products], [p.get(FILTER_COLUMN, "") for p in products]


def write_servable_index(seed: Path, generator: Generator, size: int, out: Path, backend: str) -> None:
    """An index the bot can serve (``benchmarks/bot_latency.py --index OUT``): ``size`` generated vectors,
    each product row a copy of the real product its vector came from (its photo, its labels, the id
    suffixed), the seed's own model, and the search backend built as a build would."""
    from recommender import ann_search
    from recommender.fileio import read_json, write_json_atomic

    out.mkdir(parents=True, exist_ok=False)
    with (seed / "products.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, products = list(reader.fieldnames or []), list(reader)
    vectors = np.lib.format.open_memmap(out / "vectors.npy", mode="w+", dtype=np.float32, shape=(size, generator.vectors.shape[1]))
    with (out / "products.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for block, start in enumerate(range(0, size, _BLOCK)):
            drawn, first = generator.draw_from(min(_BLOCK, size - start), stream=5000 + block)
            vectors[start : start + len(drawn)] = drawn
            for offset, source in enumerate(first.tolist()):
                writer.writerow({**products[source], "id": f"{products[source]['id']}-{start + offset}"})
    vectors.flush()
    manifest = read_json(seed / "manifest.json")
    manifest.update(count=size, vector_dim=generator.vectors.shape[1])
    manifest.pop("local_features", None)
    manifest.pop("search", None)
    if (seed / "model.onnx").exists():
        (out / "model.onnx").write_bytes((seed / "model.onnx").read_bytes())
    if backend == "ann":
        built = ann_search.build(vectors, ann_search.AnnSettings.for_count(size))
        built.save(out)
        manifest["search"] = built.describe()
    (out / "skipped.csv").write_text("id,reason\n")
    write_json_atomic(out / "manifest.json", manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="an index of real photos whose vectors seed the generator")
    parser.add_argument("--sizes", type=int, nargs="+", default=[44_000, 200_000, 1_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[1280, 2048], help="the seed's own length and/or longer (lifted)")
    parser.add_argument("--backends", nargs="+", default=["exact", "ann"], choices=["exact", "ann", "milvus"],
                        help="milvus (Milvus Lite) takes minutes per 100k vectors to write: give it the smaller sizes")  # fmt: skip
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--spread", type=float, default=0.5, help="noise, in each type's own standard deviations")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lookalike-scale"), help="folder for the generated sets (GBs)")
    parser.add_argument("--time-limit", type=float, default=3600.0, help="seconds; later steps are skipped once over")
    parser.add_argument("--json", type=Path, help="write every figure here too")
    parser.add_argument("--ann-nprobe", type=int, nargs="+", help="ann: measure each of these nprobe values (one build)")
    parser.add_argument("--write-index", type=Path, metavar="OUT",
                        help="instead: write a bot-servable index of the first --sizes products to OUT (for bot_latency.py)")
    parser.add_argument("--index-backend", default="ann", choices=["exact", "ann"], help="with --write-index")  # fmt: skip
    args = parser.parse_args(argv)
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    seed_vectors, types, genders = load_seed(args.index)
    generator = Generator(seed_vectors, types, genders, args.spread)
    if args.write_index:
        write_servable_index(args.index, generator, args.sizes[0], args.write_index, args.index_backend)
        print(f"Wrote a {args.index_backend} index of {args.sizes[0]:,} generated products to {args.write_index}.")
        return 0
    real = neighbour_similarity(seed_vectors)
    fake = neighbour_similarity(generator.draw(len(seed_vectors), stream=1)[0])
    print(f"Seed: {len(seed_vectors)} real vectors of {seed_vectors.shape[1]} values from {args.index}.")
    print(f"Median similarity to the nearest / 5th-nearest neighbour: real {real[0]:.3f} / {real[1]:.3f}, "
          f"generated (same size, spread {args.spread}) {fake[0]:.3f} / {fake[1]:.3f}.")  # fmt: skip
    results: list[dict[str, Any]] = []
    for dim in args.dims:
        lift = None
        if dim != seed_vectors.shape[1]:
            lift = np.random.default_rng(7).standard_normal((seed_vectors.shape[1], dim)).astype(np.float32)
        queries, _ = generator.draw(args.queries, stream=2)
        np.save(args.work / f"queries-{dim}.npy", lifted(queries, lift))
        for size in args.sizes:
            if time.perf_counter() - started > args.time_limit:
                print(f"{dim}-d, {size:,}: skipped (over --time-limit {args.time_limit:.0f}s)")
                continue
            path = args.work / f"vectors-{dim}-{size}.npy"
            women = write_set(generator, size, lift, path)
            np.save(args.work / f"women-{dim}-{size}.npy", women)
            vectors = np.load(path, mmap_mode="r")
            truth = exact_top(vectors, np.load(args.work / f"queries-{dim}.npy"))
            truth_women = exact_top(vectors, np.load(args.work / f"queries-{dim}.npy"), women)
            del vectors
            for backend in args.backends:
                for result in in_fresh_process(backend, args.work, dim, size, args.ann_nprobe):
                    result["recall_at_5"] = recall(np.asarray(result.pop("rows")), truth)
                    result["filtered_recall_at_5"] = recall(np.asarray(result.pop("filtered_rows")), truth_women)
                    results.append(result)
                    print(_line(result), flush=True)
            path.unlink()
    if args.json:
        args.json.write_text(json.dumps({"seed_neighbour_similarity": real, "generated_neighbour_similarity": fake,
                                         "spread": args.spread, "results": results}, indent=2))  # fmt: skip
    print(f"Done in {time.perf_counter() - started:.0f}s.")
    return 0


def _line(r: dict[str, Any]) -> str:
    built = f"built in {r['build_s']:.0f}s (peak {r['build_peak_mb']:,.0f} MB, files {r['file_mb']:,.0f} MB), " if r["backend"] != "exact" else ""
    if r["backend"] == "ann":
        built = f"nlist {r['settings']['nlist']} nprobe {r['settings']['nprobe']}, " + built
    return (
        f"{r['dim']}-d, {r['size']:>9,} {r['backend']:>5}: {built}loaded in {r['load_s']:.1f}s, "
        f"one query p50 {r['p50_ms']:.2f} ms / p95 {r['p95_ms']:.2f} ms, batches of {BATCH}: {r['batch_qps']:,.0f} q/s, "
        f"memory +{r['memory_mb']:,.0f} MB, recall@5 {r['recall_at_5']:.3f} (women only: {r['filtered_recall_at_5']:.3f})"
    )


if __name__ == "__main__":
    sys.exit(main())
