#!/usr/bin/env python
"""Index a product catalogue for the bot.

    python scripts/build_index.py --images DIR [--styles CSV] --out DIR
        [--backbone resnet50|mobilenet_v2] [--weights imagenet|none|PATH] [--batch-size N] [--update] [--wait]
        [--refine auto|label-centroids|none] [--head auto|none|labels] [--runtime auto|tensorflow|onnx] [--precision fp32|int8]

Interrupted builds resume where they stopped when the same command is run again. Only an empty
folder or an earlier index is replaced; one build at a time per output folder (``--wait`` queues).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scripts._cli import fail, positive_int, run_cli

if TYPE_CHECKING:
    from recommender import BuildReport, Catalogue, FeatureExtractor
    from recommender.onnx_export import RuntimeReport


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from recommender.extractor import BACKBONES

    parser = argparse.ArgumentParser(description="Build a catalogue index of product photos for the bot.")
    parser.add_argument("--images", required=True, type=Path, help="folder of product photos (Kaggle: images/)")
    parser.add_argument("--styles", type=Path, help="styles.csv with an 'id' column matching the file names")
    parser.add_argument(
        "--out", required=True, type=Path,
        help="index directory to create, or an earlier index to replace (any other non-empty folder is refused)",
    )  # fmt: skip
    parser.add_argument("--backbone", default="resnet50", choices=sorted(BACKBONES), help="feature model (default resnet50)")
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="'imagenet' (Keras downloads them once; needs internet), 'none' (random, for tests) or a .h5 weights file",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default 32)")
    parser.add_argument(
        "--refine",
        default="auto",
        choices=["auto", "label-centroids", "none"],
        help="label-aware refinement learned from styles.csv (articleType + baseColour); auto = on when both labels exist",
    )
    parser.add_argument(
        "--head",
        default="auto",
        choices=["auto", "none", "labels"],
        help="labels: train an embedding head on the backbone features from styles.csv labels and shopper-like views of "
        "the photos (replaces the refinement; minutes of build time, capped by training on at most 6,000 products). "
        "auto (default): labels on a new index whose styles.csv has articleType, baseColour or gender, unless --refine "
        "says otherwise; with --update, what the index has (its head re-trained with the settings it recorded). "
        "--head none with --update drops the head",
    )
    parser.add_argument(
        "--runtime",
        choices=["auto", "tensorflow", "onnx"],
        default="auto",
        help="what runs the model for this build and every query: onnx (the model exported once to ONNX, cached, stored "
        "in the index and run by ONNX Runtime: faster, and the bot never imports TensorFlow) or tensorflow. "
        "auto (default): onnx on a new index; with --update, what the index has",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "int8"],
        default=None,
        help="with --runtime onnx: int8 (default; quantised on a sample of this catalogue and kept only if its features "
        "agree with fp32 on other photos) or fp32 (exact)",
    )
    parser.add_argument(
        "--exact-items",
        choices=["on", "off"],
        default=None,
        help="on: store each product's SIFT keypoints so that a shopper's photo of a catalogue product can be verified as "
        "that very product (first in the album, captioned 'Exact match'; about 11 ms per photo at build time, 50 KB per "
        "product on disk). Default: on for a new index; with --update, what the index has",
    )
    parser.add_argument(
        "--backend",
        choices=["exact", "ann", "milvus"],
        default=None,
        help="how the bot searches the catalogue: exact (every vector compared; right up to a few hundred thousand "
        "products), ann (faiss' inverted file with exact re-scoring, in the bot's process: hundreds of thousands to "
        "millions) or milvus (a Milvus collection: embedded Milvus Lite, or a server for catalogues beyond one "
        "machine; see --milvus-uri). Default: exact for a new index; with --update, what the index has",
    )
    parser.add_argument("--ann-nlist", type=positive_int, help="ann: clusters of the inverted file (default about 4*sqrt(products))")
    parser.add_argument("--ann-nprobe", type=positive_int, help="ann: clusters each query scans (default nlist/64, at least 8)")
    parser.add_argument(
        "--milvus-uri",
        help="milvus: a local path (Milvus Lite there) or http(s)://host:19530 (a Milvus server; its token from the "
        "MILVUS_TOKEN environment variable). Default: Milvus Lite in milvus.db inside the index (with --update, "
        "what the index has)",
    )
    parser.add_argument("--milvus-collection", help="milvus: the collection's name on a server (default: from --out)")
    parser.add_argument("--update", action="store_true", help="add new photos to an existing index, reusing old vectors")
    parser.add_argument("--checkpoint-every", type=positive_int, default=512, help="save progress every N images (default 512)")
    parser.add_argument("--wait", action="store_true", help="if another build is running on --out, wait for it instead of stopping")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from recommender.backends import BackendChoice
    from recommender.operator_build import BuildEvents, build_from_folder

    bar: tqdm | None = None
    extracting = False  # the model is loaded: an interrupt from here on leaves work to resume

    def building(catalogue: Catalogue, extractor: FeatureExtractor) -> None:
        nonlocal extracting
        extracting = True

    def started(total: int, done: int) -> None:
        nonlocal bar
        if done:
            print(f"Resuming an interrupted build: {done} images already done.")
        bar = tqdm(total=total, initial=done, unit="img", desc="Extracting", disable=args.quiet, smoothing=0.1)

    def head_training(training: int, products: int) -> None:
        if bar:
            bar.close()
        of = f" (a type-balanced sample of the {products})" if training < products else ""
        print(f"Training the embedding head on {training} products{of}, with shopper-like views of their photos...", flush=True)

    def local_features(count: int) -> None:
        if bar:
            bar.close()
        print(f"Making the keypoints of {count} photos for exact-item search...", flush=True)

    events = BuildEvents(
        catalogue_loaded=lambda catalogue: _print_catalogue(args, catalogue),
        waiting=lambda: print(f"Waiting for another build on {args.out} to finish...", flush=True),
        loading_model=lambda extractor: print(f"Loading {extractor.backbone} ({extractor.weights_source} weights)..."),
        building=building,
        started=started,
        progress=lambda count: bar.update(count) if bar else None,
        head_training=head_training,
        runtime_ready=_print_runtime,
        local_features=local_features,
    )
    try:
        report = build_from_folder(
            args.images,
            args.styles,
            args.out,
            backbone=args.backbone,
            weights=args.weights,
            batch_size=args.batch_size,
            update=args.update,
            checkpoint_every=args.checkpoint_every,
            refine=args.refine,
            head=args.head,
            runtime=args.runtime,
            precision=args.precision,
            exact_items=None if args.exact_items is None else args.exact_items == "on",
            search=BackendChoice(args.backend, args.ann_nlist, args.ann_nprobe, args.milvus_uri, args.milvus_collection),
            lock_wait=None if args.wait else 0.0,
            events=events,
        )
    except KeyboardInterrupt:
        if not extracting:
            raise  # run_cli says "interrupted."
        if bar:
            bar.close()
        fail("interrupted. Finished work is saved; run the same command again to resume.", code=130)
    if bar:
        bar.close()
    _print_report(report)
    return 0


def _print_catalogue(args: argparse.Namespace, catalogue: Catalogue) -> None:
    print(f"Catalogue: {len(catalogue)} images in {args.images}" + (f", labels from {args.styles}" if args.styles else ""))
    if catalogue.missing_images:
        print(f"  note: {len(catalogue.missing_images)} styles.csv rows have no image (e.g. {', '.join(catalogue.missing_images[:5])})")
    if catalogue.unlabelled:
        print(f"  note: {len(catalogue.unlabelled)} images have no styles.csv row (indexed without labels)")


def _print_runtime(report: RuntimeReport) -> None:
    how = "from the cache" if report.cached else f"exported in {report.export_seconds:.1f}s"
    if report.calibration_seconds and not report.cached:
        how += f", calibrated in {report.calibration_seconds:.1f}s"
    print(f"ONNX Runtime model: {report.precision} ({how}).")
    if report.fidelity:
        figures = report.fidelity
        overlap = f", top-5 overlap {figures['top5_overlap']:.2f}" if "top5_overlap" in figures else ""
        print(
            f"  int8 against fp32 on {figures['photos']:.0f} photos: cosine median {figures['cosine_median']:.3f}, "
            f"1st percentile {figures['cosine_p1']:.3f}{overlap}."
        )
    if report.refused:
        print(f"  int8 refused ({report.refused}): keeping fp32.")


def _print_report(report: BuildReport) -> None:
    extracting = report.seconds - report.head_seconds - report.runtime_seconds - report.local_seconds - report.search_seconds  # other steps are reported apart
    rate = report.extracted / extracting if extracting > 0 else 0.0
    print(
        f"Index written to {report.out_dir}: {report.count} products "
        f"({report.extracted} extracted at {rate:.1f} img/s, {report.reused} reused, {report.resumed} from checkpoint"
        f"{f', {report.removed} removed' if report.removed else ''}) in {report.seconds:.1f}s."
    )
    if report.runtime_seconds >= 1.0:
        print(f"Preparing the ONNX model took {report.runtime_seconds:.1f}s of it (once per model and catalogue sample: cached).")
    if report.refinement != "none":
        print(f"Refinement: {report.refinement} (learned from this catalogue's articleType and baseColour labels).")
    if report.head != "none":
        print(
            f"Embedding head: {report.head} (trained on {report.head_products} products' labels and shopper-like views "
            f"of their photos{', with the instance head for exact-item search,' if report.exact_items else ''} in {report.head_seconds:.1f}s, included above)."
        )
    if report.exact_items:
        print(f"Exact-item search: keypoints of {report.local_computed} photos made in {report.local_seconds:.1f}s"
              f"{f', {report.count - report.local_computed} reused' if report.local_computed < report.count else ''}.")
    if report.search_note:
        print(f"Search backend {report.backend}: {report.search_note} in {report.search_seconds:.1f}s.")
    if report.shop_problems:
        print(f"{len(report.shop_problems)} malformed link or price value(s) left out (shoppers never see them):")
        for item_id, column, value in report.shop_problems[:20]:
            print(f"  {item_id}: {column} {value[:80]!r}")
        if len(report.shop_problems) > 20:
            print(f"  ... and {len(report.shop_problems) - 20} more")
    if report.skipped:
        print(f"Skipped {len(report.skipped)} unreadable image(s) (listed in {report.out_dir / 'skipped.csv'}):")
        for item_id, reason in report.skipped[:20]:
            print(f"  {item_id}: {reason}")
        if len(report.skipped) > 20:
            print(f"  ... and {len(report.skipped) - 20} more")


def cli() -> int:
    """Console entry point: operator mistakes become one ``error:`` line and exit status 2."""
    return run_cli(main)


if __name__ == "__main__":
    sys.exit(cli())
