#!/usr/bin/env python
"""Event-loop time the file_id cache costs per album, at the full catalogue's size (44k entries).

    python benchmarks/file_id_cache_save.py [--entries 44441] [--albums 300] [--baseline-rev REV]

Fills a cache with ``--entries`` photos, saves it, then sends ``--albums`` albums: five photos
uploaded anew (replaced photos) and ``save()``, as ``send_album`` does. Prints, per album, the
CPU time spent on the event loop's thread (median / p95 / max; work in worker threads excluded)
and the longest the loop was held up (lateness of a 1 ms ticker, GIL contention included), plus
the bytes written. ``--baseline-rev`` also measures ``bot/file_id_cache.py`` as of that git
revision (e.g. the one before the journal) on the same data.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

from bot.file_id_cache import FileIdCache

ROOT = Path(__file__).resolve().parents[1]


def old_module(rev: str) -> types.ModuleType | None:
    """``bot/file_id_cache.py`` at a git revision, imported on its own (None if git cannot give it)."""
    try:
        source = subprocess.run(
            ["git", "show", f"{rev}:bot/file_id_cache.py"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"baseline {rev}: not available ({exc})")
        return None
    spec = importlib.util.spec_from_loader(f"file_id_cache_{rev}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{rev}:bot/file_id_cache.py", "exec"), module.__dict__)
    return module


def file_id(n: int) -> str:
    return f"AgACAgIAAxkDAAIB{n:08d}" + "x" * 52  # the length of real photo file_ids


async def measure(cache_class: type, folder: Path, entries: int, albums: int) -> dict[str, float]:
    path = folder / "ids.json"
    cache = cache_class(path, 4242)
    await cache.load()
    for n in range(entries):
        cache.put(f"{10000 + n}:{40000 + n}:1700000000{n:09d}", file_id(n))
    await cache.save()

    lag = 0.0
    running = True

    async def ticker() -> None:
        nonlocal lag
        while running:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            lag = max(lag, time.perf_counter() - before - 0.001)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    lag = 0.0
    cpu: list[float] = []
    written_before = sum(p.stat().st_size for p in folder.iterdir())
    for album in range(albums):
        started = time.thread_time()
        for i in range(5):
            n = (album * 5 + i) % entries  # a replaced photo: same product, new size and mtime
            cache.put(f"{10000 + n}:{50000 + album}:1800000000{album:09d}", file_id(entries + album * 5 + i))
        await cache.save()
        cpu.append(time.thread_time() - started)
        await asyncio.sleep(0)
    running = False
    await tick
    size_after = sum(p.stat().st_size for p in folder.iterdir())
    cpu.sort()
    return {
        "median_ms": 1000 * statistics.median(cpu),
        "p95_ms": 1000 * cpu[int(0.95 * (len(cpu) - 1))],
        "max_ms": 1000 * cpu[-1],
        "lag_ms": 1000 * lag,
        "files_kb": size_after / 1024,
        "grew_kb": (size_after - written_before) / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=44_441)
    parser.add_argument("--albums", type=int, default=300)
    parser.add_argument("--baseline-rev", default=None, help="git revision whose file_id cache to compare with")
    args = parser.parse_args()
    if args.entries < 5 or args.albums < 1:
        print("error: --entries must be at least 5 and --albums at least 1", file=sys.stderr)
        return 2
    candidates: list[tuple[str, type]] = []
    if args.baseline_rev:
        module = old_module(args.baseline_rev)
        if module is not None:
            candidates.append((f"{args.baseline_rev} (whole-file rewrite)", module.FileIdCache))
    candidates.append(("current (journal)", FileIdCache))
    print(f"{args.entries} cached file_ids, {args.albums} albums of 5 new uploads each; per album on the loop's thread:")
    for name, cache_class in candidates:
        with tempfile.TemporaryDirectory() as folder:
            result = asyncio.run(measure(cache_class, Path(folder), args.entries, args.albums))
        print(
            f"  {name:34s} CPU median {result['median_ms']:6.2f} ms  p95 {result['p95_ms']:6.2f} ms  "
            f"max {result['max_ms']:6.2f} ms  | longest loop stall {result['lag_ms']:6.1f} ms  "
            f"| files {result['files_kb']:7.0f} KiB (+{result['grew_kb']:.0f} KiB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
