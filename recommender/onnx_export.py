"""Build time: export the Keras backbone to ONNX once, quantise it to int8 when asked, and check int8.

The index build keeps Keras as the model's source (ImageNet, a weights file or seeded random
weights) and hands the rest of the build, the head's views and every later query to ONNX Runtime:

* **export** (fp32): ``tf2onnx`` converts the extractor's own compiled forward function (uint8
  pixels → preprocessing → backbone → pooled, normalised features), so the graph is the one the
  TensorFlow path runs;
* **int8**: ONNX Runtime's static quantisation (per-channel weights, QDQ), calibrated on a sample of
  the catalogue's own photos;
* **fidelity guard**: int8 features of *other* catalogue photos are compared with fp32 ones
  (cosine, and whether each photo's five nearest neighbours among the sample stay the same); below
  :data:`MIN_MEDIAN_COSINE`, :data:`MIN_LOW_COSINE` or :data:`MIN_TOP5_OVERLAP` the build keeps fp32.

Conversion, calibration and the fidelity check take seconds to tens of seconds, so all three are
cached by the model's fingerprint (and the digests of the calibration and check photos) under
:func:`cache_dir`; later builds reuse them, and ``--update`` runs the index's own model file.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BuildError, ImageDecodeError
from .extractor import FeatureExtractor
from .fileio import read_json, temporary_sibling, write_json_atomic
from .images import load_image
from .onnx_graph import fold_channel_flip, fold_zero_pads, preprocessing_nodes
from .onnx_model import FP32, INT8, OnnxExtractor

#: int8 is kept only if fp32 and int8 features of the fidelity photos agree this well (cosine:
#: median and 1st percentile; top-5 overlap: each photo's five nearest among the fidelity photos)
MIN_MEDIAN_COSINE = 0.95
MIN_LOW_COSINE = 0.80
MIN_TOP5_OVERLAP = 0.60
#: catalogue photos that calibrate int8, and as many others that check it
CALIBRATION_PHOTOS = 256
OPSET = 17
#: part of every cached file's name: bumped when the export or quantisation changes what they hold
#: (2: zero pads and the channel flip folded into convolutions and poolings, preprocessing left in fp32)
GRAPH_REVISION = 2


@dataclass(frozen=True)
class PhotoSample:
    """Evenly spread catalogue photos: ``offset`` 0 calibrates int8, ``offset`` 1 (other photos) checks it.

    The caches are keyed by the photos' bytes (:meth:`digest`, milliseconds), so a build whose
    int8 model and fidelity figures are cached decodes none of them (:meth:`pixels`, seconds).
    """

    paths: Sequence[Path]
    size: int

    def chosen(self, count: int, offset: int) -> list[Path]:
        spread = np.unique(np.linspace(0, len(self.paths) - 1, num=min(len(self.paths), 2 * count)).astype(int))
        chosen = [self.paths[int(row)] for row in spread[offset::2][:count]]
        return chosen or ([] if offset == 0 else self.chosen(count, 0))  # too few photos for two sets: check on the first

    def digest(self, count: int, offset: int) -> str:
        digest = hashlib.sha256(f"{self.size}".encode())
        for path in self.chosen(count, offset):
            try:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            except OSError:
                digest.update(b"unreadable")
        return digest.hexdigest()[:16]

    def pixels(self, count: int, offset: int) -> np.ndarray:
        """``(n, S, S, 3)`` uint8, ``n <= count``: unreadable photos are left out."""
        pixels = []
        for path in self.chosen(count, offset):
            try:
                pixels.append(load_image(path, self.size))
            except ImageDecodeError:
                continue
        return np.stack(pixels) if pixels else np.zeros((0, self.size, self.size, 3), np.uint8)


def cache_dir() -> Path:
    """``$LOOKALIKE_CACHE_DIR``, else ``$XDG_CACHE_HOME/lookalike``, else ``~/.cache/lookalike``."""
    configured = os.environ.get("LOOKALIKE_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lookalike"


@dataclass
class RuntimeReport:
    """What preparing the runtime did; recorded in the manifest and printed by the build."""

    runtime: str
    precision: str
    requested_precision: str
    export_seconds: float = 0.0
    calibration_seconds: float = 0.0
    cached: bool = False
    fidelity: dict[str, float] = field(default_factory=dict)
    #: why int8 was refused (empty when it was kept or not asked for)
    refused: str = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.runtime,
            "precision": self.precision,
            "requested_precision": self.requested_precision,
            "export_seconds": round(self.export_seconds, 2),
            "calibration_seconds": round(self.calibration_seconds, 2),
        }
        if self.fidelity:
            data["fidelity"] = {key: round(value, 4) for key, value in self.fidelity.items()}
        if self.refused:
            data["int8_refused"] = self.refused
        return data


def _atomic_copy(produce: Callable[[Path], None], target: Path) -> None:
    """Run ``produce(temporary path)`` and move the result to ``target``: a crash leaves no half file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(target, "partial")
    try:
        produce(temporary)
        os.replace(temporary, target)
    finally:
        if temporary.exists():
            temporary.unlink()


def export_fp32(extractor: FeatureExtractor, target: Path) -> None:
    """Convert the extractor's compiled forward function to an ONNX file at ``target``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import onnx
    import tensorflow as tf
    import tf2onnx

    forward = extractor.load().forward_function()
    size = extractor.input_size
    signature = (tf.TensorSpec([None, size, size, 3], tf.uint8),)  # the forward function's own signature

    def produce(path: Path) -> None:
        model, _ = tf2onnx.convert.from_function(forward, input_signature=signature, opset=OPSET)
        fold_zero_pads(model)  # exact; saves int8 a dequantise/pad/quantise round trip per pad
        fold_channel_flip(model)  # ResNet50's RGB→BGR: into conv1's weights instead of a copy of every photo
        onnx.save(model, str(path))

    try:
        _atomic_copy(produce, target)
    except Exception as exc:  # tf2onnx raises many types for graphs it cannot convert
        raise BuildError(f"Could not export {extractor.backbone} to ONNX ({type(exc).__name__}: {exc}); build with --runtime tensorflow.") from exc


def quantize_int8(fp32_path: Path, pixels: np.ndarray, target: Path) -> None:
    """Static int8 quantisation (per-channel, QDQ) of ``fp32_path``, calibrated on ``pixels``."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        """Feeds the calibrator one batch of catalogue pixels at a time."""

        def __init__(self, name: str, batch: int = 32) -> None:
            self._batches = iter([{name: pixels[start : start + batch]} for start in range(0, len(pixels), batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    def produce(path: Path) -> None:
        prepared = temporary_sibling(path, "prepared")
        try:
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            model = onnx.load(str(prepared))
            constants = {tensor.name for tensor in model.graph.initializer}
            (pixels_input,) = [value.name for value in model.graph.input if value.name not in constants]
            float_nodes = preprocessing_nodes(model)  # a few float ops on the input, not int8 round trips
            quantize_static(
                str(prepared), str(path), Reader(pixels_input), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,  # u8 x s8: what VNNI and AVX2 multiply fastest
                nodes_to_exclude=float_nodes,
            )  # fmt: skip
        finally:
            if prepared.exists():
                prepared.unlink()

    _atomic_copy(produce, target)


def fidelity(fp32: np.ndarray, int8: np.ndarray, k: int = 5) -> dict[str, float]:
    """How far int8 features stray from fp32 ones, on the same photos (rows).

    ``top5_overlap`` (each photo's ``k`` nearest among the others, fp32 vs int8) needs more than
    ``k + 1`` photos; a catalogue smaller than that is judged on the cosines alone.
    """
    cosine = np.sum(fp32 * int8, axis=1)
    figures = {"cosine_median": float(np.median(cosine)), "cosine_p1": float(np.percentile(cosine, 1)), "photos": float(len(fp32))}
    if len(fp32) > k + 1:

        def neighbours(vectors: np.ndarray) -> np.ndarray:
            similarity = vectors @ vectors.T
            np.fill_diagonal(similarity, -np.inf)
            return np.argsort(-similarity, axis=1)[:, :k]

        ours, theirs = neighbours(fp32), neighbours(int8)
        figures["top5_overlap"] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ours, theirs)]))
    return figures


def refusal(figures: dict[str, float]) -> str:
    """Why these fidelity figures keep fp32 ('' when int8 may be used)."""
    reasons = []
    if figures["cosine_median"] < MIN_MEDIAN_COSINE:
        reasons.append(f"median cosine {figures['cosine_median']:.3f} < {MIN_MEDIAN_COSINE}")
    if figures["cosine_p1"] < MIN_LOW_COSINE:
        reasons.append(f"1st-percentile cosine {figures['cosine_p1']:.3f} < {MIN_LOW_COSINE}")
    if figures.get("top5_overlap", 1.0) < MIN_TOP5_OVERLAP:
        reasons.append(f"top-5 overlap {figures['top5_overlap']:.2f} < {MIN_TOP5_OVERLAP}")
    return "; ".join(reasons)


def prepare_onnx(extractor: FeatureExtractor, precision: str, sample: PhotoSample, *, batch_size: int = 32) -> tuple[OnnxExtractor, Path, RuntimeReport]:
    """Export (and quantise) ``extractor``'s model, from the cache when it holds them.

    Returns the ONNX extractor the build embeds with, its model file (to copy into the index)
    and what was done. ``sample`` gives the catalogue photos that calibrate int8 and check it.
    """
    if precision not in (FP32, INT8):
        raise BuildError(f"Unknown --precision {precision!r}; choose {FP32} or {INT8}.")
    report = RuntimeReport("onnx", precision, precision)
    identity = extractor.identity
    stem = f"{identity.backbone}-{identity.input_size}-{identity.pooling}-{identity.weights_fingerprint[:20]}-g{GRAPH_REVISION}"
    fp32_path = cache_dir() / "onnx" / f"{stem}-fp32.onnx"
    started = time.perf_counter()
    report.cached = fp32_path.is_file()
    if not report.cached:
        export_fp32(extractor, fp32_path)
    report.export_seconds = time.perf_counter() - started

    def onnx_extractor(path: Path, kind: str) -> OnnxExtractor:  # opens its session on first use
        return OnnxExtractor(path, identity, kind, weights=extractor.weights_source, batch_size=batch_size)

    fp32 = onnx_extractor(fp32_path, FP32)
    if precision == FP32:
        return fp32.load(), fp32_path, report

    int8_path = fp32_path.with_name(f"{stem}-int8-{sample.digest(CALIBRATION_PHOTOS, 0)}.onnx")
    started = time.perf_counter()
    if not int8_path.is_file():
        report.cached = False
        calibration = sample.pixels(CALIBRATION_PHOTOS, 0)
        if len(calibration) == 0:
            report.precision, report.refused = FP32, "no catalogue photo could be read for calibration"
            return fp32.load(), fp32_path, report
        try:
            quantize_int8(fp32_path, calibration, int8_path)
        except Exception as exc:  # onnxruntime's quantiser raises many types
            report.precision, report.refused = FP32, f"quantisation failed ({type(exc).__name__}: {exc})"
            return fp32.load(), fp32_path, report
    report.calibration_seconds = time.perf_counter() - started
    int8 = onnx_extractor(int8_path, INT8)
    checked = int8_path.with_name(
        f"{int8_path.stem}-fidelity-{sample.digest(CALIBRATION_PHOTOS, 1)}.json"
    )  # an fp32 pass costs seconds: once
    try:
        report.fidelity = {str(key): float(value) for key, value in read_json(checked).items()}
    except (OSError, ValueError, AttributeError):
        check = sample.pixels(CALIBRATION_PHOTOS, 1)
        report.fidelity = fidelity(fp32.extract(check), int8.extract(check))
        write_json_atomic(checked, report.fidelity)
    report.refused = refusal(report.fidelity)
    if report.refused:
        report.precision = FP32
        return fp32.load(), fp32_path, report
    return int8.load(), int8_path, report
