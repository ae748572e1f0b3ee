#!/usr/bin/env python
"""Index-building speed: the original projects' per-image loop versus this project's pipeline.

    python benchmarks/build_speed.py [--images 256] [--repeats 3] [--backbone resnet50] [--weights none]
                                     [--runtime tensorflow|onnx] [--precision fp32|int8]

On the same photos (the first N of ../shared/data/fashion-products-4k, or the demo catalogue when
../shared is absent) and the same backbone, measures images per second for:

  1. naive     the original projects' loop: for each photo keras.utils.load_img(path,
               target_size=(224, 224)), img_to_array, preprocess_input, model.predict(x[None])
  2. bare      the model alone: FeatureExtractor.extract on pre-decoded arrays, batches of 32
  3. pipeline  recommender.builder.build_index over the photos (decode, pad, resize, colour
               histograms, batching, checkpoint chunks, final index files), batch size 32

each repeated R times (median reported), then the ratio pipeline/naive (target >= 3x; >= 10x
with ``--runtime onnx``) and the pipeline's overhead over the bare forward pass, (bare - pipeline)
/ bare (target < 15 %). With ``--runtime onnx`` the bare pass and the pipeline run ONNX Runtime;
the one-off export (and int8 calibration) is timed once, apart, then cached as every build caches it.
Random weights (--weights none, the default) are as fast as real ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from recommender import FeatureExtractor, build_index, load_catalogue
from recommender.catalogue import Catalogue
from recommender.images import load_image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before the naive loop's first TensorFlow import
ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "fashion-products-4k"
BATCH = 32
NAIVE_TARGET = 3.0
ONNX_TARGET = 10.0
OVERHEAD_TARGET = 0.15


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="how many photos (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; the median is reported (default 3)")
    parser.add_argument("--backbone", default="resnet50", choices=["resnet50", "mobilenet_v2"])
    parser.add_argument("--weights", default="none", help="'none' (random, default), 'imagenet' or a weights file")
    parser.add_argument("--runtime", default="tensorflow", choices=["tensorflow", "onnx"])
    parser.add_argument("--precision", default="int8", choices=["fp32", "int8"], help="with --runtime onnx (default int8)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    return parser.parse_args()


def choose_catalogue(count: int, work: Path) -> Catalogue:
    if (SHARED / "styles.csv").is_file():
        catalogue = load_catalogue(SHARED / "images", SHARED / "styles.csv")
        source = f"{SHARED}"
    else:
        from recommender.demo import make_demo_catalogue

        variants = max(1, -(-count // 49))  # the demo draws 49 products per variant
        images, styles = make_demo_catalogue(work / "demo", variants=variants)
        catalogue = load_catalogue(images, styles)
        source = "the demo catalogue (../shared not found)"
    items = catalogue.items[:count]
    print(f"Photos: {len(items)} from {source}")
    return dataclasses.replace(catalogue, items=items, missing_images=[], unlabelled=[])


def naive_model(backbone: str, weights: str) -> tuple[Any, Callable[[Any], Any]]:
    """The original projects' model: a Keras application called with ``model.predict``."""
    import keras

    reference = FeatureExtractor(backbone, weights)  # only for its backbone spec and weights source
    spec, source = reference.spec, reference.weights_source
    application = getattr(keras.applications, spec.builder)
    preprocess = getattr(keras.applications, spec.preprocess_module).preprocess_input
    model = application(
        weights=None if source == "none" else source, include_top=False, input_shape=(224, 224, 3), pooling="avg"
    )
    return model, preprocess


def run_naive(paths: list[Path], model: Any, preprocess: Callable[[Any], Any]) -> None:
    import keras

    for path in paths:
        image = keras.utils.load_img(path, target_size=(224, 224))
        x = keras.utils.img_to_array(image)
        x = preprocess(x)
        model.predict(x[None], verbose=0)


def run_bare(extractor: FeatureExtractor, pixels: np.ndarray) -> None:
    for start in range(0, len(pixels), BATCH):
        extractor.extract(pixels[start : start + BATCH])


def run_pipeline(extractor: FeatureExtractor, catalogue: Catalogue, out: Path, runtime: str = "tensorflow", precision: str = "fp32") -> str:
    shutil.rmtree(out, ignore_errors=True)
    # exact_items off: the comparison is of embedding pipelines; the keypoints stage is timed apart (run_keypoints)
    report = build_index(
        catalogue, out, extractor, batch_size=BATCH, runtime=runtime, precision=precision if runtime == "onnx" else None, exact_items=False
    )
    assert report.count == len(catalogue.items), report
    return report.refinement


def run_keypoints(paths: list[Path]) -> None:
    """The exact-item stage a default build adds after the embeddings (recommender/local_features.py)."""
    from recommender.local_features import compute_rows

    compute_rows(paths)


def timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> int:
    args = parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="build-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        catalogue = choose_catalogue(args.images, work)
        paths = [catalogue.images_dir / item.image for item in catalogue.items]
        count = len(paths)

        print(f"Loading {args.backbone} ({args.weights} weights) twice: the extractor and the naive model ...", flush=True)
        extractor = FeatureExtractor(args.backbone, args.weights).load()
        model, preprocess = naive_model(args.backbone, args.weights)
        pixels = np.stack([load_image(path, extractor.input_size) for path in paths])
        bare: FeatureExtractor = extractor
        if args.runtime == "onnx":
            os.environ["LOOKALIKE_CACHE_DIR"] = str(work / "cache")  # a cold cache: the one-off costs are measured
            one_off = build_index(catalogue, work / "one-off", extractor, batch_size=BATCH, runtime="onnx", precision=args.precision)
            assert one_off.runtime_report is not None
            costs = one_off.runtime_report
            print(
                f"One-off: ONNX export {costs.export_seconds:.1f}s, int8 calibration {costs.calibration_seconds:.1f}s "
                f"(kept: {costs.precision}{'; ' + costs.refused if costs.refused else ''}); cached for every later build"
            )
            from recommender import Recommender

            bare = Recommender(work / "one-off").load().extractor or extractor

        # Warm-up (graph tracing, first-call allocations), not timed.
        run_naive(paths[:2], model, preprocess)
        run_bare(bare, pixels[:BATCH])
        refinement = run_pipeline(extractor, dataclasses.replace(catalogue, items=catalogue.items[:BATCH]), work / "warmup", args.runtime, args.precision)

        rates: dict[str, list[float]] = {"naive": [], "bare": [], "pipeline": [], "keypoints": []}
        for repeat in range(1, args.repeats + 1):
            rates["naive"].append(count / timed(lambda: run_naive(paths, model, preprocess)))
            rates["bare"].append(count / timed(lambda: run_bare(bare, pixels)))
            rates["pipeline"].append(count / timed(lambda: run_pipeline(extractor, catalogue, work / "index", args.runtime, args.precision)))
            rates["keypoints"].append(count / timed(lambda: run_keypoints(paths)))
            print(
                f"  run {repeat}: naive {rates['naive'][-1]:6.1f} img/s   bare {rates['bare'][-1]:6.1f} img/s"
                f"   pipeline {rates['pipeline'][-1]:6.1f} img/s   keypoints {rates['keypoints'][-1]:6.1f} img/s",
                flush=True,
            )

        median = {name: statistics.median(values) for name, values in rates.items()}
        speedup = median["pipeline"] / median["naive"]
        overhead = (median["bare"] - median["pipeline"]) / median["bare"]
        print()
        runtime = args.runtime if args.runtime == "tensorflow" else f"onnx {args.precision}"
        print(f"{args.backbone}, {count} photos, batch {BATCH}, runtime {runtime}, refinement {refinement}, median of {args.repeats}, {os.cpu_count()} CPUs")
        print(f"  1. naive loop (load_img + predict per photo) {median['naive']:8.1f} img/s")
        print(f"  2. bare forward pass (extract, batch {BATCH})     {median['bare']:8.1f} img/s")
        print(f"  3. pipeline (build_index, --exact-items off) {median['pipeline']:7.1f} img/s")
        print(f"  4. exact-item keypoints alone (2 threads)   {median['keypoints']:8.1f} img/s"
              f"  (a default build adds {1000 / median['keypoints']:.1f} s per 1,000 photos)")
        target = NAIVE_TARGET if args.runtime == "tensorflow" else ONNX_TARGET
        print(f"  pipeline / naive   = {speedup:5.2f}x   (target >= {target:.0f}x: {'met' if speedup >= target else 'NOT met'})")
        print(
            f"  pipeline overhead  = {overhead * 100:5.1f} %  (target < {OVERHEAD_TARGET * 100:.0f} %:"
            f" {'met' if overhead < OVERHEAD_TARGET else 'NOT met'})"
        )
        return 0
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
