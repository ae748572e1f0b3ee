"""A small colour descriptor of the product itself (not its white studio background).

ImageNet features know shapes far better than colours, so the label-aware refinement adds this:
a 5x8x8 CIE-Lab histogram of the non-white pixels, Hellinger-normalised (square root, then unit
length), cheap enough to compute beside every forward pass.
"""

from __future__ import annotations

import numpy as np

#: Pixels whose darkest channel is above this count as white background (or padding).
WHITE_THRESHOLD = 245
L_BINS, AB_BINS, AB_RANGE = 5, 8, 64.0
#: Every second pixel of the 224x224 model input is plenty for a histogram.
STEP = 2
#: Length of one histogram.
DIM = L_BINS * AB_BINS * AB_BINS

_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
    dtype=np.float32,
)
_WHITE_POINT = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 sRGB → ``(..., 3)`` float32 CIE-Lab (D65)."""
    c = rgb.astype(np.float32) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = c @ _RGB_TO_XYZ.T / _WHITE_POINT
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def colour_histogram(image: np.ndarray) -> np.ndarray:
    """One ``(S, S, 3)`` uint8 model input → ``(DIM,)`` float32 unit vector."""
    rgb = np.asarray(image, dtype=np.uint8)[::STEP, ::STEP]
    foreground = rgb.min(axis=-1) <= WHITE_THRESHOLD
    if foreground.mean() < 0.02:  # (almost) no foreground: a white product on white, use every pixel
        foreground = np.ones(foreground.shape, dtype=bool)
    lab = srgb_to_lab(rgb[foreground])
    l_bin = np.clip((lab[:, 0] / 100.0 * L_BINS).astype(int), 0, L_BINS - 1)
    a_bin = np.clip(((lab[:, 1] + AB_RANGE) / (2 * AB_RANGE) * AB_BINS).astype(int), 0, AB_BINS - 1)
    b_bin = np.clip(((lab[:, 2] + AB_RANGE) / (2 * AB_RANGE) * AB_BINS).astype(int), 0, AB_BINS - 1)
    counts = np.bincount((l_bin * AB_BINS + a_bin) * AB_BINS + b_bin, minlength=DIM).astype(np.float32)
    histogram = np.sqrt(counts / counts.sum())
    return histogram / np.linalg.norm(histogram)


def colour_histograms(images: np.ndarray) -> np.ndarray:
    """``(N, S, S, 3)`` uint8 → ``(N, DIM)`` float32."""
    if len(images) == 0:
        return np.zeros((0, DIM), dtype=np.float32)
    return np.stack([colour_histogram(image) for image in images]).astype(np.float32)
