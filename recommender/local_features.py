"""Local features (SIFT keypoints and descriptors) of catalogue photos, made at build time and stored.

The global vector finds products that look alike; telling *the same product* from a look-alike
needs evidence that survives a phone photo's rotation, tilt, light and background: SIFT keypoints
(OpenCV, scale- and rotation-invariant, normalised against light) matched and checked for one
consistent geometry (recommender/exact_match.py). The catalogue side is computed once per product
at build time, so a query pays only for its own photo and the matching.

Sizes: a catalogue photo is scaled so that its longer side is :data:`CATALOGUE_SIDE` pixels
(the reference catalogue's 60 x 80 photos are upscaled 4x; a full-size photo is reduced), and
keeps its :data:`MAX_CATALOGUE_POINTS` strongest keypoints; a shopper's photo is scaled to
:data:`QUERY_SIDE`, where a product filling 40-85 % of the frame is about as large as the
catalogue's.

On disk (an index directory, no pickle)::

    local_offsets.npy      int64 (N + 1,)  product i's keypoints are rows offsets[i]:offsets[i+1]
    local_points.npy       float32 (K, 2)  keypoint positions in the scaled photo
    local_descriptors.npy  uint8 (K, 128)  SIFT descriptors (OpenCV's are whole numbers 0-255)
    local_boxes.npy        float32 (N, 4)  the product's box in the scaled photo (not its studio background)
    local_colours.npy      uint8 (K, 3)    the photo's RGB around each keypoint (SIFT sees grey levels only)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageFilter

from .errors import IndexCorruptError
from .shopper_photos import product_mask

METHOD = "sift"
CATALOGUE_SIDE = 320
#: 400 until issue 13's latest round. At 320 (the catalogue's own side; OpenCV's SIFT works on the photo
#: doubled, so the side sets most of its cost) the photo's keypoints took 17-30 ms instead of 21-44 ms
#: (one and two threads), and found the product first for 81.45 % of photos against 81.57 % (seeds 0-19,
#: 6,000 photos); its false exact matches are held by 15 agreeing matches instead of 14 (exact_match.py)
QUERY_SIDE = 320
MAX_CATALOGUE_POINTS = 200
MAX_QUERY_POINTS = 1000
#: SIFT's contrast threshold (OpenCV's default 0.04 for the catalogue, whose keypoints are stored).
#: A phone photo is blurred, noisy and often dim: at 0.02 it keeps the keypoints of a plain
#: garment's seams and folds. Product first 78.0 → 83.0 % (seed 0, 300 photos; 0.03: 82.7 %, 0.015:
#: 83.0 %, 0.01: 82.7 %), false exact matches 0.7 % either way
CATALOGUE_CONTRAST = 0.04
QUERY_CONTRAST = 0.02
DESCRIPTOR_SIZE = 128

OFFSETS = "local_offsets.npy"
POINTS = "local_points.npy"
DESCRIPTORS = "local_descriptors.npy"
BOXES = "local_boxes.npy"
COLOURS = "local_colours.npy"
FILES = (OFFSETS, POINTS, DESCRIPTORS, BOXES, COLOURS)
#: blur before a keypoint's colour is read, pixels of the scaled photo (a keypoint sits on an edge)
COLOUR_BLUR = 3.0


@dataclass(frozen=True)
class LocalFeatures:
    """One photo's keypoints: positions ``(n, 2)``, descriptors ``(n, 128)``, the photo's size (w, h)
    and the RGB colour around each keypoint ``(n, 3)``."""

    points: np.ndarray
    descriptors: np.ndarray
    size: tuple[int, int]
    colours: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint8))

    def __len__(self) -> int:
        return len(self.points)


def _sift(image: Image.Image, side: int, limit: int, contrast: float = CATALOGUE_CONTRAST) -> tuple[LocalFeatures, Image.Image]:
    import cv2  # imported on first use: the bot and the build pay for OpenCV only when they verify

    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    scaled = image.convert("RGB").resize(size, Image.Resampling.BICUBIC if scale > 1 else Image.Resampling.BILINEAR)
    sift = cv2.SIFT_create(nfeatures=limit, contrastThreshold=contrast)  # type: ignore[attr-defined]
    keypoints, descriptors = sift.detectAndCompute(np.asarray(scaled.convert("L")), None)
    if descriptors is None or not keypoints:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_SIZE), np.uint8), size), scaled
    order = np.argsort([-keypoint.response for keypoint in keypoints], kind="stable")[:limit]
    points = np.asarray([keypoints[i].pt for i in order], dtype=np.float32).reshape(-1, 2)
    descriptors = np.clip(np.rint(descriptors[order]), 0, 255).astype(np.uint8)
    return LocalFeatures(points, descriptors, size, _colours_at(scaled, points)), scaled


def _colours_at(image: Image.Image, points: np.ndarray) -> np.ndarray:
    """The blurred photo's RGB at each keypoint, ``(n, 3)`` uint8."""
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(COLOUR_BLUR)))
    columns = np.clip(np.rint(points[:, 0]).astype(np.int64), 0, image.width - 1)
    rows = np.clip(np.rint(points[:, 1]).astype(np.int64), 0, image.height - 1)
    return pixels[rows, columns].astype(np.uint8).reshape(-1, 3)


def catalogue_features(image: Image.Image) -> tuple[LocalFeatures, np.ndarray]:
    """A catalogue photo's keypoints and its product's box ``(left, top, right, bottom)`` in the scaled photo."""
    features, scaled = _sift(image, CATALOGUE_SIDE, MAX_CATALOGUE_POINTS)
    box = product_mask(scaled).point(lambda v: 255 if v > 127 else 0).getbbox() or (0, 0, *scaled.size)
    return features, np.asarray(box, dtype=np.float32)


def query_features(image: Image.Image) -> LocalFeatures:
    """A shopper photo's keypoints, descriptors as RootSIFT (ready for :func:`root_sift` matching)."""
    features, _ = _sift(image, QUERY_SIDE, MAX_QUERY_POINTS, QUERY_CONTRAST)
    return LocalFeatures(features.points, root_sift(features.descriptors), features.size, features.colours)


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelović & Zisserman 2012): L1-normalise, square root. Unit L2 length, so matching
    is a dot product; it matches better than raw SIFT (measured here: exact item first 55 → 63 %)."""
    values = np.asarray(descriptors, dtype=np.float32)
    values = values / np.maximum(values.sum(axis=1, keepdims=True), 1e-6)
    return np.sqrt(values)


@dataclass
class LocalFeatureStore:
    """Every product's catalogue keypoints, row-aligned with the index (memory-mapped when loaded)."""

    offsets: np.ndarray
    points: np.ndarray
    descriptors: np.ndarray
    boxes: np.ndarray
    colours: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @staticmethod
    def describe() -> dict[str, Any]:
        """What made the stored keypoints, for the manifest."""
        return {"method": METHOD, "catalogue_side": CATALOGUE_SIDE, "max_points": MAX_CATALOGUE_POINTS, "colour_blur": COLOUR_BLUR}

    def features(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Product ``row``'s ``(points, uint8 descriptors, box, keypoint colours)``."""
        start, end = int(self.offsets[row]), int(self.offsets[row + 1])
        return self.points[start:end], self.descriptors[start:end], self.boxes[row], self.colours[start:end]

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[LocalFeatures, np.ndarray]]) -> LocalFeatureStore:
        counts = np.array([len(features) for features, _ in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        points = np.concatenate([features.points for features, _ in rows]) if rows else np.zeros((0, 2), np.float32)
        descriptors = np.concatenate([features.descriptors for features, _ in rows]) if rows else np.zeros((0, DESCRIPTOR_SIZE), np.uint8)
        boxes = np.stack([box for _, box in rows]).astype(np.float32) if rows else np.zeros((0, 4), np.float32)
        colours = np.concatenate([features.colours.reshape(-1, 3) for features, _ in rows]) if rows else np.zeros((0, 3), np.uint8)
        return cls(offsets, points.astype(np.float32), descriptors.astype(np.uint8), boxes, colours.astype(np.uint8))

    def take(self, rows: Sequence[int]) -> list[tuple[LocalFeatures, np.ndarray]]:
        """Products ``rows`` as ``(features, box)`` pairs, e.g. to carry them into an updated index."""
        taken = []
        for row in rows:
            points, descriptors, box, colours = self.features(int(row))
            taken.append((LocalFeatures(np.array(points), np.array(descriptors), (0, 0), np.array(colours)), np.array(box)))
        return taken

    def save(self, directory: Path) -> None:
        for name, array in zip(FILES, (self.offsets, self.points, self.descriptors, self.boxes, self.colours)):
            np.save(directory / name, array, allow_pickle=False)

    @classmethod
    def load(cls, directory: Path, count: int, *, mmap: bool = True) -> LocalFeatureStore | None:
        """The store of an index directory, None when the index has none; refuses one that does not fit."""
        if not (directory / OFFSETS).exists():
            return None
        try:
            mode: Literal["r"] | None = "r" if mmap else None
            offsets, points, descriptors, boxes, colours = (np.load(directory / name, mmap_mode=mode, allow_pickle=False) for name in FILES)
        except (OSError, ValueError, EOFError) as exc:
            raise IndexCorruptError(f"{directory}: the local features are unreadable ({exc}); rebuild the index.") from exc
        store = cls(offsets, points, descriptors, boxes, colours)
        total = int(offsets[-1]) if offsets.ndim == 1 and len(offsets) else -1
        fits = (
            offsets.ndim == 1 and len(offsets) == count + 1 and np.issubdtype(offsets.dtype, np.integer)
            and int(offsets[0]) == 0 and bool(np.all(np.diff(offsets) >= 0))
            and points.shape == (total, 2) and points.dtype == np.float32
            and descriptors.shape == (total, DESCRIPTOR_SIZE) and descriptors.dtype == np.uint8
            and boxes.shape == (count, 4) and colours.shape == (total, 3) and colours.dtype == np.uint8
        )  # fmt: skip
        if not fits:
            raise IndexCorruptError(f"{directory}: the local features do not match the index's {count} products; rebuild the index.")
        return store


def compute_rows(
    paths: Sequence[str | os.PathLike[str]],
    *,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[LocalFeatures, np.ndarray]]:
    """Catalogue keypoints of every photo in ``paths`` (OpenCV releases the GIL: threads run in parallel).

    A photo that cannot be read gets no keypoints (it can never be an exact match) instead of
    failing the build: the build already read every photo once, so this is a photo changed since.
    """

    def one(path: str | os.PathLike[str]) -> tuple[LocalFeatures, np.ndarray]:
        try:
            with Image.open(path) as opened:
                return catalogue_features(opened.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError):
            return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_SIZE), np.uint8), (0, 0)), np.zeros(4, np.float32)

    workers = max(1, threads or os.cpu_count() or 1)
    results: list[tuple[LocalFeatures, np.ndarray]] = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sift") as pool:
        for done, result in enumerate(pool.map(one, paths), start=1):
            results.append(result)
            if progress is not None:
                progress(done)
    return results
