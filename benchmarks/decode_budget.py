#!/usr/bin/env python
"""Decode time and peak memory of every hostile image in tests/hostile_corpus.py.

    python benchmarks/decode_budget.py [--decoder OLD_IMAGES_PY] [--cap-mb 4096] [--only NAME ...]

Each case runs in a fresh child process (so its peak RSS is its own): ``load_image`` on the file,
then one line: accepted/refused, seconds, and peak RSS above the child's RSS before the case (the
bytes read from disk count). Budget (issue #7): every *accepted* input of up to 20 MB decodes in
under 1 s with under 200 MB extra peak memory; refusals are listed with their message. A crash
(MemoryError, killed, any other exception) is a failure whatever the budget. ``--decoder`` runs
another copy of recommender/images.py (e.g. ``git show HEAD~1:recommender/images.py > old.py``)
for a before/after comparison. Exit status 1 when anything is over budget or crashed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from standin_bot_api.hostile_photos import decode_in_child, write_corpus

REPO = Path(__file__).resolve().parents[1]

BUDGET_SECONDS = 1.0
BUDGET_MB = 200.0


def run_case(path: Path, decoder: str | None, cap_mb: float, timeout: float) -> dict[str, object]:
    try:
        done, results = decode_in_child([path], cap_mb=cap_mb, timeout=timeout, decoder=decoder)
    except subprocess.TimeoutExpired:
        return {"name": path.name, "outcome": f"crashed:timeout>{timeout:.0f}s", "message": "", "seconds": timeout, "peak_extra_mb": float("nan")}
    if done.returncode != 0 or path.name not in results:
        tail = (done.stderr.strip().splitlines() or [""])[-1][:200]
        return {"name": path.name, "outcome": f"crashed:exit {done.returncode}", "message": tail, "seconds": float("nan"), "peak_extra_mb": float("nan")}
    return results[path.name]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decoder", help="a copy of recommender/images.py to measure instead of the current one")
    parser.add_argument("--cap-mb", type=float, default=4096, help="address-space cap per child above its imports (safety net)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per case before it counts as a crash")
    parser.add_argument("--only", nargs="+", help="case names to run")
    parser.add_argument("--corpus", type=Path, help="where to write the corpus (default: a temporary folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="hostile-corpus-") as scratch:
        corpus = write_corpus(args.corpus or Path(scratch), args.only)
        print(f"{'case':34} {'size':>9}  {'outcome':20} {'seconds':>8} {'peak MB':>8}  note")
        worst_seconds = worst_mb = 0.0
        failures = 0
        for case, path in corpus:
            result = run_case(path, args.decoder, args.cap_mb, args.timeout)
            outcome, seconds, peak = str(result["outcome"]), float(result["seconds"]), float(result["peak_extra_mb"])  # type: ignore[arg-type]
            over = outcome == "accepted" and (seconds >= BUDGET_SECONDS or peak >= BUDGET_MB)
            failed = outcome.startswith(("crashed", "wrong")) or over
            failures += failed
            if outcome == "accepted":
                worst_seconds, worst_mb = max(worst_seconds, seconds), max(worst_mb, peak)
            note = "OVER BUDGET" if over else (str(result["message"])[:90] if outcome != "accepted" else case.why)
            size = path.stat().st_size
            print(f"{case.name:34} {size / 1e6:8.2f}M  {outcome:20} {seconds:8.3f} {peak:8.1f}  {'!! ' if failed else ''}{note}", flush=True)
    print(f"\naccepted inputs: max decode time {worst_seconds:.3f} s, max extra peak memory {worst_mb:.1f} MB"
          f" (budget {BUDGET_SECONDS:g} s, {BUDGET_MB:g} MB); {failures} case(s) over budget or crashed")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
