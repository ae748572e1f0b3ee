#!/usr/bin/env python
"""Check an index before going live: print the most similar products for some photos.

    python scripts/query.py IMAGE [IMAGE ...] --index DIR [--k K] [--json] [--where COLUMN=VALUE[,VALUE...] ...]

``--where gender=Women,Unisex --where masterCategory=Footwear`` keeps only the products whose
gender is Women or Unisex and whose masterCategory is Footwear (any case), ranked exactly as
without the filter. Any number of photos (e.g. a held-out tenth of a 44k catalogue): they are decoded and embedded a
batch at a time and each answer is printed as soon as its batch is done.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from scripts._cli import positive_int, run_cli


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Show the catalogue products most similar to each image.")
    parser.add_argument("images", nargs="+", help="photos to look up")
    parser.add_argument("--index", required=True, type=Path, help="index directory built by build_index.py")
    parser.add_argument("--k", type=positive_int, default=5, help="results per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object: image path → ranked results")
    parser.add_argument("--backbone", help="override the index's backbone (must match it)")
    parser.add_argument("--weights", help="override where the weights come from (must match the index's)")
    parser.add_argument("--exact-crops", action="store_true",
                        help="the exact-item search also looks at two crops of each photo, as the bot does with EXACT_CROPS=on")
    parser.add_argument(
        "--where", action="append", default=[], metavar="COLUMN=VALUE[,VALUE...]",
        help="only products whose COLUMN is one of the values (any case); repeat for more columns, which must all match",
    )  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from recommender import Recommender
    from recommender.filters import canonical, describe, parse_option

    where: dict[str, list[str]] = {}
    for option in args.where:
        column, values = parse_option(option)
        where.setdefault(column, []).extend(values)
    recommender = Recommender(args.index, backbone=args.backbone, weights=args.weights, exact_crops=args.exact_crops).load()
    allowed = recommender.allowed(where)  # an unknown column is refused here, before any photo is read
    if allowed is not None:
        passing = int(allowed.sum())
        print(f"Filter {describe(canonical(where))}: {passing} of {len(recommender)} products pass.", file=sys.stderr)
        if not passing:
            print("No product passes this filter: every answer below is empty. Check the values against products.csv.", file=sys.stderr)
    # Answers stream out a batch at a time: thousands of photos never sit in memory together,
    # and the operator sees results from the first seconds on.
    answers = zip(args.images, recommender.iter_recommend(args.images, k=args.k, where=where))
    failures = 0
    if args.json:
        print("{", end="")
        for number, (image, answer) in enumerate(answers):
            if isinstance(answer, Exception):
                failures += 1
                value: object = {"error": str(answer)}
            else:
                value = [match.to_dict() for match in answer]
            entry = f"{json.dumps(image, ensure_ascii=False)}: {json.dumps(value, indent=2, ensure_ascii=False)}"
            print(("," if number else "") + "\n  " + entry.replace("\n", "\n  "), end="", flush=True)
        print("\n}")
    else:
        for image, answer in answers:
            print(f"\n{image}")
            if isinstance(answer, Exception):
                failures += 1
                print(f"  error: {answer}", flush=True)
                continue
            if not answer:
                print("  (no product passes the filter)", flush=True)
                continue
            print(f"  {'#':>2}  {'score':>6}  {'id':>8}  product")
            for match in answer:
                details = replace(match, exact=False).caption().replace("\n", "  |  ")
                exact = "  (exact match: this very product, verified by its keypoints)" if match.exact else ""
                print(f"  {match.rank + 1:>2}  {match.score:6.3f}  {match.id:>8}  {details}{exact}")
            sys.stdout.flush()
    return 1 if failures == len(args.images) else 0


def cli() -> int:
    """Console entry point: operator mistakes become one ``error:`` line and exit status 2."""
    return run_cli(main)


if __name__ == "__main__":
    sys.exit(cli())
