"""A small colour descriptor of the product itself, not of the background around it.

ImageNet features know shapes far better than colours, so the label-aware refinement adds this:
a 5x8x8 CIE-Lab histogram of the product's pixels, Hellinger-normalised (square root, then unit
length), cheap enough to compute beside every forward pass.

Which pixels are the product is the foreground estimate, and an index records the one it used
(:func:`describe`, read back by :func:`method_of`) so that queries are described the same way:

* ``white-threshold`` (indexes built before the method was recorded): every pixel whose darkest
  channel is above :data:`WHITE_THRESHOLD` is background. Right for studio photos, wrong for a
  shopper's photo, whose carpet or bedspread then counts as the product's colour.
* ``border-background``: the background is whatever connects to the image border through pixels
  close in colour to the border's dominant colours (white on a studio photo, so the mask is the
  studio one; the carpet and the white letterbox padding on a phone photo). A centre prior
  weights each product pixel, since a shopper frames the garment roughly in the middle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

#: Pixels whose darkest channel is above this count as white background (or padding).
WHITE_THRESHOLD = 245
L_BINS, AB_BINS, AB_RANGE = 5, 8, 64.0
#: Every second pixel of the 224x224 model input is plenty for a histogram.
STEP = 2
#: Length of one histogram.
DIM = L_BINS * AB_BINS * AB_BINS
#: Below this share of foreground pixels the estimate is not trusted and every pixel counts.
MIN_FOREGROUND = 0.02

WHITE_THRESHOLD_METHOD = "white-threshold"
BORDER_METHOD = "border-background"
METHODS = (WHITE_THRESHOLD_METHOD, BORDER_METHOD)
#: What a new index is built with.
DEFAULT_METHOD = BORDER_METHOD
#: What an index that records no method was built with.
UNRECORDED_METHOD = WHITE_THRESHOLD_METHOD

#: Width, in histogram pixels, of the frame whose colours are the background's samples.
BORDER_WIDTH = 3
#: Side of a coarse Lab cell (L, a and b units) when grouping the border's colours.
BORDER_CELL = 12.0
#: A border cell holding at least this share of the frame is a background colour.
BORDER_COLOUR_SHARE = 0.04
#: A pixel this close (Lab distance) to a background colour may be background.
BACKGROUND_TOLERANCE = 14.0
#: Box-blur radius (model-input pixels) before the mask: textures are judged by their mean colour.
SMOOTHING_RADIUS = 2
#: Standard deviation of the centre prior, as a share of the image side.
CENTRE_SIGMA = 0.3

_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
    dtype=np.float32,
)
_WHITE_POINT = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)
_LEVELS = np.arange(256, dtype=np.float32) / 255.0
#: sRGB level → linear light, computed once: the power law is the costly part of a conversion.
_LINEAR = np.where(_LEVELS <= 0.04045, _LEVELS / 12.92, ((_LEVELS + 0.055) / 1.055) ** 2.4).astype(np.float32)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 sRGB → ``(..., 3)`` float32 CIE-Lab (D65)."""
    c = _LINEAR[np.asarray(rgb, dtype=np.uint8)]
    xyz = c @ _RGB_TO_XYZ.T / _WHITE_POINT
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def _darkest(rgb: np.ndarray) -> np.ndarray:
    """Each pixel's darkest channel (``min(axis=-1)``, several times slower on a strided grid)."""
    return np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def describe(method: str = DEFAULT_METHOD) -> dict[str, Any]:
    """The histogram's parameters, as an index's manifest records them."""
    checked_method(method)
    description: dict[str, Any] = {"method": method, "space": "CIE-Lab", "bins": [L_BINS, AB_BINS, AB_BINS],
                                   "white_threshold": WHITE_THRESHOLD, "step": STEP}  # fmt: skip
    if method == BORDER_METHOD:
        description.update(border_width=BORDER_WIDTH, border_cell=BORDER_CELL, border_colour_share=BORDER_COLOUR_SHARE,
                           background_tolerance=BACKGROUND_TOLERANCE, smoothing_radius=SMOOTHING_RADIUS,
                           centre_sigma=CENTRE_SIGMA)  # fmt: skip
    return description


def method_of(refinement: Mapping[str, Any]) -> str:
    """The method an index's refinement description records under ``colour_histogram``.

    An index built before the method was recorded used the white threshold.
    """
    recorded = refinement.get("colour_histogram") or {}
    return checked_method(str(recorded.get("method", UNRECORDED_METHOD)))


def checked_method(method: str) -> str:
    """``method`` itself; ``ValueError`` when it is not one of :data:`METHODS`."""
    if method not in METHODS:
        raise ValueError(f"unknown colour-histogram method {method!r} (known: {', '.join(METHODS)})")
    return method


def border_connected(candidate: np.ndarray) -> np.ndarray:
    """The pixels of ``candidate`` (bool, H x W) reachable from the border through ``candidate`` (4-connected)."""
    labels, count = ndimage.label(candidate)  # scipy's default structure in 2-D: the 4-connected cross
    touching = np.zeros(count + 1, dtype=bool)
    touching[labels[0, :]] = touching[labels[-1, :]] = touching[labels[:, 0]] = touching[labels[:, -1]] = True
    touching[0] = False  # label 0: not a candidate
    return touching[labels]


def _border_colours(lab: np.ndarray, white: np.ndarray) -> np.ndarray:
    """``(K, 3)`` Lab means of the coarse colour cells that fill a good share of the image's frame.

    White is left out: the white threshold already covers it, and a tolerance around white would
    take the light greys and creams of a product for background.
    """
    frame = np.ones(lab.shape[:2], dtype=bool)
    frame[BORDER_WIDTH:-BORDER_WIDTH, BORDER_WIDTH:-BORDER_WIDTH] = False
    size = int(frame.sum())
    samples = lab[frame & ~white]
    cells = np.floor(samples / BORDER_CELL).astype(np.int64) + 64  # Lab / 12 lies within -11 .. 10: 0 .. 127 now
    keys = (cells[:, 0] * 128 + cells[:, 1]) * 128 + cells[:, 2]  # one integer per cell, in the cells' own order
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    kept = np.flatnonzero(counts >= BORDER_COLOUR_SHARE * size)
    sums = np.stack([np.bincount(inverse, weights=samples[:, channel], minlength=len(counts)) for channel in range(3)], axis=1)
    return (sums[kept] / counts[kept, None]).astype(np.float32)


def _near(lab: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Bool mask of the ``lab`` pixels within :data:`BACKGROUND_TOLERANCE` of one of ``colours``."""
    near = np.zeros(lab.shape[:2], dtype=bool)
    lightness, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    for colour in colours:  # one colour at a time: no (H, W, K, 3) temporary
        near |= (lightness - colour[0]) ** 2 + (a - colour[1]) ** 2 + (b - colour[2]) ** 2 <= BACKGROUND_TOLERANCE**2
    return near


def background_mask(image: np.ndarray, lab: np.ndarray | None = None) -> np.ndarray:
    """``(S, S, 3)`` uint8 model input → bool ``(S/STEP, S/STEP)`` mask of the border-connected background.

    Near-white pixels are always candidates (the letterbox padding of a non-square photo and the
    studio background), so on a studio photo this is the white-threshold rule, except for white
    inside the product, which no longer reaches the border. Border colours are judged on a
    blurred copy (a texture's grain averages out) and on the pixels themselves (the blur mixes
    the product into the background along its outline). ``lab``: the histogram grid's Lab
    pixels, when the caller has them already.
    """
    rgb = np.asarray(image, dtype=np.uint8)
    grid = rgb[::STEP, ::STEP]
    lab = srgb_to_lab(grid) if lab is None else lab
    smooth = srgb_to_lab(np.asarray(Image.fromarray(rgb, "RGB").filter(ImageFilter.BoxBlur(SMOOTHING_RADIUS)))[::STEP, ::STEP])
    candidate = _darkest(grid) > WHITE_THRESHOLD
    colours = _border_colours(smooth, candidate)
    if len(colours):
        candidate |= _near(smooth, colours) | _near(lab, colours)
    return border_connected(candidate)


def _centre_prior(shape: tuple[int, int]) -> np.ndarray:
    rows, cols = shape
    y = (np.arange(rows, dtype=np.float32) - (rows - 1) / 2) / (CENTRE_SIGMA * rows)
    x = (np.arange(cols, dtype=np.float32) - (cols - 1) / 2) / (CENTRE_SIGMA * cols)
    return np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2))


def _histogram(lab: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``(P, 3)`` Lab pixels (optionally weighted) → ``(DIM,)`` float32 unit Hellinger histogram."""
    l_bin = np.clip((lab[:, 0] / 100.0 * L_BINS).astype(int), 0, L_BINS - 1)
    a_bin = np.clip(((lab[:, 1] + AB_RANGE) / (2 * AB_RANGE) * AB_BINS).astype(int), 0, AB_BINS - 1)
    b_bin = np.clip(((lab[:, 2] + AB_RANGE) / (2 * AB_RANGE) * AB_BINS).astype(int), 0, AB_BINS - 1)
    counts = np.bincount((l_bin * AB_BINS + a_bin) * AB_BINS + b_bin, weights=weights, minlength=DIM).astype(np.float32)
    histogram = np.sqrt(counts / counts.sum())
    return (histogram / np.linalg.norm(histogram)).astype(np.float32)


def colour_histogram(image: np.ndarray, method: str = DEFAULT_METHOD) -> np.ndarray:
    """One ``(S, S, 3)`` uint8 model input → ``(DIM,)`` float32 unit vector."""
    checked_method(method)
    rgb = np.asarray(image, dtype=np.uint8)[::STEP, ::STEP]
    if method == WHITE_THRESHOLD_METHOD:
        foreground = _darkest(rgb) <= WHITE_THRESHOLD
        if foreground.mean() < MIN_FOREGROUND:  # (almost) no foreground: a white product on white, use every pixel
            foreground = np.ones(foreground.shape, dtype=bool)
        return _histogram(srgb_to_lab(rgb[foreground]))
    lab = srgb_to_lab(rgb)
    foreground = ~background_mask(image, lab)
    if foreground.mean() < MIN_FOREGROUND:  # nothing stands out from the background: judge the whole frame
        foreground = np.ones(foreground.shape, dtype=bool)
    return _histogram(lab[foreground], _centre_prior(foreground.shape)[foreground])


def colour_histograms(images: np.ndarray, method: str = DEFAULT_METHOD) -> np.ndarray:
    """``(N, S, S, 3)`` uint8 → ``(N, DIM)`` float32."""
    checked_method(method)
    if len(images) == 0:
        return np.zeros((0, DIM), dtype=np.float32)
    return np.stack([colour_histogram(image, method) for image in images]).astype(np.float32)
