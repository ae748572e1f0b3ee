"""Shopper-like phone photos made from catalogue photos, to measure and train for real queries.

Catalogue photos show a centred product on a white studio background; shoppers send phone photos
of the garment on a bed, a chair or a person, off-centre, tilted, in warm or cold light, then
recompressed by the phone and the messenger. :func:`shopper_photo` turns one catalogue photo into
such a photo, deterministically from a numpy ``Generator``, and returns JPEG bytes so that the
query goes through the same decode path as a real shopper's photo. :func:`shopper_image` stops
before the JPEG step (for training augmentation that wants pixels).

Steps and parameter ranges (all drawn from the generator, uniform unless said otherwise):

* **mask**: the product's own near-white background (every channel >= ``WHITE_LEVEL``) that
  touches the photo's border is background; the rest is the product. The mask is feathered by a
  Gaussian blur (``FEATHER`` of the product's size). A photo with (almost) no such background is
  pasted whole, like a photo of a printed page.
* **background**, one of :data:`BACKGROUND_KINDS` (equal odds; ``catalogue`` only with a pool):

  - ``noise``: a base colour with multi-scale coloured noise (carpet, concrete, bedspread);
  - ``gradient``: a linear gradient between two colours at any angle, with mild noise (walls);
  - ``stripes``: two-colour sine stripes bent by low-frequency noise (wood grain, fabric);
  - ``room``: a wall and a floor of different colours and 3-7 blurred rectangles and ellipses
    (furniture out of focus);
  - ``catalogue``: a crop of the central 30-60 % of ANOTHER catalogue photo scaled up to fill the
    frame (a neighbouring garment or a print fills the background).

  Every background is scaled so that no pixel is brighter than ``BACKGROUND_MAX`` on all channels,
  so it never passes for the studio white that the colour descriptor ignores.
* **geometry**: product height 40-85 % of the frame (width at most 95 %), rotation -12..12
  degrees, perspective: each corner moved by up to 6 % of the product's size, centre anywhere
  that keeps the product's box inside the frame (off-centre is the rule, not the exception).
* **light**: colour temperature, red gain ``1 + t`` and blue gain ``1 - t`` with t in
  -0.15..0.15; exposure gain 2 ** (-0.6..0.4); a soft shadow under the product (opacity
  0.15-0.4).
* **camera**: Gaussian blur radius 0-1.8 px, sensor noise sigma 0-6 grey levels, JPEG quality
  55-92 (4:2:0 chroma).
* **size**: ``(width, height)``, portrait 960 x 1280 by default (a phone photo). The scene is
  composed at half that size and scaled up at the end; the cost grows with the pixel count, so
  training augmentation, which feeds a 224 x 224 model anyway, can ask for a small frame such as
  240 x 320 and skip the JPEG step with :func:`shopper_image`.

:func:`rng_for` derives a generator from a run's seed and a product id (stable across processes,
unlike ``hash``), so the same product gets the same shopper photo in every run with that seed.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Sequence
from typing import Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .colour import border_connected

#: What a catalogue photo may be given as: a decoded RGB array, a Pillow image or a file path.
PhotoLike = Union[np.ndarray, Image.Image, str, "os.PathLike[str]"]

DEFAULT_SIZE = (960, 1280)
BACKGROUND_KINDS = ("noise", "gradient", "stripes", "room", "catalogue")
#: A catalogue pixel whose every channel is at least this is studio background (when it touches the border).
WHITE_LEVEL = 232
#: Below this share of background pixels the photo is pasted whole (no usable studio background).
MIN_BACKGROUND_SHARE = 0.03
#: Feathering of the mask, as a share of the product's longer side.
FEATHER = 0.012
#: The brightest a background pixel may be on every channel (studio white starts above it).
BACKGROUND_MAX = 225
#: The mask is computed on a copy whose longer side is at most this (catalogue photos can be large).
MASK_SIDE = 256

HEIGHT_SHARE = (0.40, 0.85)
MAX_WIDTH_SHARE = 0.95
ROTATION_DEGREES = 12.0
PERSPECTIVE_SHARE = 0.06
TEMPERATURE = 0.15
EXPOSURE_STOPS = (-0.6, 0.4)
SHADOW_OPACITY = (0.15, 0.4)
BLUR_RADIUS = (0.0, 1.8)
NOISE_SIGMA = (0.0, 6.0)
JPEG_QUALITY = (55, 92)
CATALOGUE_CROP = (0.30, 0.60)


def rng_for(seed: int, key: str) -> np.random.Generator:
    """A generator for one product in one run: the same ``(seed, key)`` always gives the same draws."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(str(key).encode("utf-8"))])


def _as_rgb(photo: PhotoLike) -> Image.Image:
    if isinstance(photo, Image.Image):
        return photo.convert("RGB")
    if isinstance(photo, np.ndarray):
        array = np.asarray(photo, dtype=np.uint8)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB array, got shape {array.shape}")
        return Image.fromarray(array, "RGB")
    with Image.open(photo) as image:
        return image.convert("RGB")


def product_mask(photo: PhotoLike) -> Image.Image:
    """The product's mask (``L``, photo size, 255 = product): not the white studio background around it.

    Near-white pixels count as background only where they connect to the border, so a white
    print or a white shirt's inside stays product. Feathered, so the paste has no hard edge.
    """
    image = _as_rgb(photo)
    small = image.copy()
    small.thumbnail((MASK_SIDE, MASK_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(small)
    background = border_connected(pixels.min(axis=2) >= WHITE_LEVEL)
    if background.mean() < MIN_BACKGROUND_SHARE:
        return Image.new("L", image.size, 255)
    mask = Image.fromarray(np.where(background, 0, 255).astype(np.uint8), "L").filter(ImageFilter.MinFilter(3))
    mask = mask.resize(image.size, Image.Resampling.BILINEAR)
    return mask.filter(ImageFilter.GaussianBlur(max(0.5, FEATHER * max(image.size))))


def _colour(rng: np.random.Generator, low: int = 25, high: int = 215) -> np.ndarray:
    return rng.uniform(low, high, 3).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Noise in [-1, 1] varying over about ``cells`` cells across the longer side (bicubic upsampled)."""
    height, width = shape
    cells_h = max(2, round(cells * height / max(shape)))
    cells_w = max(2, round(cells * width / max(shape)))
    coarse = Image.fromarray(rng.uniform(0, 255, (cells_h, cells_w)).astype(np.uint8), "L")
    return np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32) / 127.5 - 1.0


def _noise_background(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    base = _colour(rng)
    tint = rng.uniform(-1, 1, 3).astype(np.float32)
    texture = sum(rng.uniform(0.3, 1.0) * _smooth_noise(rng, shape, cells) for cells in (4, 16, 64, 160))
    fine = _smooth_noise(rng, shape, 160)
    amplitude = rng.uniform(10, 35)
    return base + amplitude * np.asarray(texture)[..., None] * (1 + 0.3 * tint) + 8 * fine[..., None] * tint


def _gradient_background(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (x / width - 0.5) * np.cos(angle) + (y / height - 0.5) * np.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    first, second = _colour(rng), _colour(rng)
    return first + ramp[..., None] * (second - first) + 6 * _smooth_noise(rng, shape, 48)[..., None]


def _stripes_background(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    angle = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    across = x * np.cos(angle) + y * np.sin(angle)
    period = rng.uniform(0.02, 0.15) * max(shape)
    bend = rng.uniform(0.0, 3.0) * _smooth_noise(rng, shape, 6)
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * across / period + bend)
    if rng.uniform() < 0.5:  # hard-edged fabric stripes rather than soft wood grain
        wave = (wave > 0.5).astype(np.float32)
    first, second = _colour(rng), _colour(rng)
    return first + wave[..., None] * (second - first) + 10 * _smooth_noise(rng, shape, 120)[..., None]


def _room_background(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    wall, floor = _colour(rng), _colour(rng, 20, 180)
    canvas = Image.new("RGB", (width, height), tuple(int(c) for c in wall))
    draw = ImageDraw.Draw(canvas)
    horizon = int(height * rng.uniform(0.45, 0.8))
    draw.rectangle([0, horizon, width, height], fill=tuple(int(c) for c in floor))
    for _ in range(int(rng.integers(3, 8))):
        left, top = rng.uniform(-0.2, 0.9) * width, rng.uniform(-0.1, 0.9) * height
        box = [left, top, left + rng.uniform(0.15, 0.6) * width, top + rng.uniform(0.1, 0.5) * height]
        fill = tuple(int(c) for c in _colour(rng, 10, 220))
        (draw.ellipse if rng.uniform() < 0.4 else draw.rectangle)(box, fill=fill)
    blurred = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.01, 0.04) * max(shape)))
    return np.asarray(blurred, dtype=np.float32) + 5 * _smooth_noise(rng, shape, 64)[..., None]


def _catalogue_background(rng: np.random.Generator, shape: tuple[int, int], photo: Image.Image) -> np.ndarray:
    height, width = shape
    share = rng.uniform(*CATALOGUE_CROP)
    crop_w = max(2, round(photo.width * share))
    crop_h = max(2, round(min(photo.height, crop_w * height / width)))
    left = round((photo.width - crop_w) * rng.uniform(0.3, 0.7))
    top = round((photo.height - crop_h) * rng.uniform(0.3, 0.7))
    crop = photo.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.Resampling.BICUBIC)
    crop = crop.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    return np.asarray(crop, dtype=np.float32)


def _pick_from_pool(rng: np.random.Generator, pool: Sequence[PhotoLike], avoid: object) -> Image.Image | None:
    for _ in range(4):
        choice = pool[int(rng.integers(len(pool)))]
        if choice is avoid or (isinstance(choice, (str, os.PathLike)) and isinstance(avoid, (str, os.PathLike)) and os.fspath(choice) == os.fspath(avoid)):
            continue
        return _as_rgb(choice)
    return None


def background(
    kind: str,
    rng: np.random.Generator,
    size: tuple[int, int] = DEFAULT_SIZE,
    *,
    pool_photo: PhotoLike | None = None,
) -> Image.Image:
    """One background of ``kind`` (see :data:`BACKGROUND_KINDS`) at ``size`` = (width, height).

    Drawn at half the size and scaled up (backgrounds are out of focus anyway), then
    capped below studio white.
    """
    width, height = size
    shape = (max(8, height // 2), max(8, width // 2))
    if kind == "noise":
        pixels = _noise_background(rng, shape)
    elif kind == "gradient":
        pixels = _gradient_background(rng, shape)
    elif kind == "stripes":
        pixels = _stripes_background(rng, shape)
    elif kind == "room":
        pixels = _room_background(rng, shape)
    elif kind == "catalogue":
        if pool_photo is None:
            raise ValueError("a catalogue background needs another catalogue photo")
        pixels = _catalogue_background(rng, shape, _as_rgb(pool_photo))
    else:
        raise ValueError(f"unknown background kind {kind!r}; expected one of {BACKGROUND_KINDS}")
    pixels = np.clip(pixels, 0, 255)
    brightest = float(pixels.min(axis=2).max())
    if brightest > BACKGROUND_MAX:
        pixels = pixels * (BACKGROUND_MAX / brightest)
    small = Image.fromarray(pixels.astype(np.uint8), "RGB")
    return small.resize(size, Image.Resampling.BILINEAR)


def _perspective_coefficients(source: np.ndarray, target: np.ndarray) -> list[float]:
    """Pillow PERSPECTIVE coefficients mapping output corners ``target`` back to input corners ``source``."""
    rows = []
    for (x, y), (u, v) in zip(target, source):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    solution = np.linalg.solve(np.asarray(rows, dtype=np.float64), source.reshape(8).astype(np.float64))
    return [float(c) for c in solution]


def _warp(product: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotate and tilt the (RGBA) product in one perspective transform: each corner moves a little."""
    width, height = product.size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    moved = corners + rng.uniform(-PERSPECTIVE_SHARE, PERSPECTIVE_SHARE, (4, 2)) * [width, height]
    angle = np.deg2rad(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (moved - [width / 2, height / 2]) @ rotation.T
    moved -= moved.min(axis=0)
    out_size = (max(1, int(np.ceil(moved[:, 0].max()))), max(1, int(np.ceil(moved[:, 1].max()))))
    return product.transform(out_size, Image.Transform.PERSPECTIVE, _perspective_coefficients(corners, moved), Image.Resampling.BILINEAR)


def _light_table(rng: np.random.Generator) -> list[int]:
    """A per-channel lookup table: colour temperature and exposure in one ``Image.point`` pass."""
    t = rng.uniform(-TEMPERATURE, TEMPERATURE)
    exposure = 2.0 ** rng.uniform(*EXPOSURE_STOPS)
    levels = np.arange(256, dtype=np.float32)
    table = [np.clip(levels * exposure * gain, 0, 255) for gain in (1 + t, 1.0, 1 - t)]
    return [int(v) for v in np.concatenate(table).round()]


def _placed_product(source: Image.Image, rng: np.random.Generator, frame: tuple[int, int]) -> Image.Image:
    """The masked product (RGBA), scaled, rotated and tilted, fitting inside ``frame``."""
    width, height = frame
    mask = product_mask(source)
    box = mask.point(lambda v: 255 if v > 16 else 0).getbbox() or (0, 0, source.width, source.height)
    product = source.crop(box)
    product.putalpha(mask.crop(box))
    scale = rng.uniform(*HEIGHT_SHARE) * height / product.height
    scale = min(scale, MAX_WIDTH_SHARE * width / product.width)
    target = (max(1, round(product.width * scale)), max(1, round(product.height * scale)))
    if scale < 1:  # warp at the smaller of the two resolutions: the cost is the warp's pixel count
        product = _warp(product.resize(target, Image.Resampling.BICUBIC), rng)
    else:
        warped = _warp(product, rng)
        product = warped.resize((max(1, round(warped.width * scale)), max(1, round(warped.height * scale))), Image.Resampling.BICUBIC)
    if product.width > width or product.height > height:
        product.thumbnail((width, height), Image.Resampling.BILINEAR)
    return product


def shopper_image(
    photo: PhotoLike,
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    background_pool: Sequence[PhotoLike] | None = None,
    avoid: object = None,
) -> Image.Image:
    """The shopper-like photo as a Pillow RGB image of ``size`` (before JPEG recompression).

    ``background_pool``: other catalogue photos, of which one may become the background (a
    member that ``is`` ``avoid``, or the same path, is never chosen: pass the query's own photo).
    The scene is composed at half the output size and scaled up at the end: a phone photo is soft
    at pixel level anyway, and every step costs a quarter.
    """
    width, height = size
    frame = (max(8, width // 2), max(8, height // 2))
    source = _as_rgb(photo)

    kinds = [kind for kind in BACKGROUND_KINDS if kind != "catalogue" or background_pool]
    kind = kinds[int(rng.integers(len(kinds)))]
    pool_photo = _pick_from_pool(rng, background_pool, avoid) if kind == "catalogue" and background_pool else None
    if kind == "catalogue" and pool_photo is None:
        kind = "noise"
    canvas = background(kind, rng, frame, pool_photo=pool_photo)

    product = _placed_product(source, rng, frame)
    left = int(rng.integers(0, frame[0] - product.width + 1))
    top = int(rng.integers(0, frame[1] - product.height + 1))
    alpha = product.getchannel("A")
    opacity = rng.uniform(*SHADOW_OPACITY)
    small_alpha = alpha.resize((max(1, alpha.width // 4), max(1, alpha.height // 4)), Image.Resampling.BILINEAR)
    shadow = small_alpha.filter(ImageFilter.GaussianBlur(max(1.0, 0.0075 * max(product.size)))).point(lambda v: int(v * opacity))
    shadow = shadow.resize(alpha.size, Image.Resampling.BILINEAR)  # a soft shadow needs no detail
    offset = (round(rng.uniform(-0.02, 0.02) * frame[0]), round(rng.uniform(0.005, 0.03) * frame[1]))
    canvas.paste((0, 0, 0), (left + offset[0], top + offset[1]), shadow)
    canvas.paste(product, (left, top), product)

    canvas = canvas.point(_light_table(rng))
    radius = rng.uniform(*BLUR_RADIUS) / 2  # half-size frame: half the radius
    if radius > 0.1:
        canvas = canvas.filter(ImageFilter.GaussianBlur(radius))
    sigma = rng.uniform(*NOISE_SIGMA)
    if sigma > 0.5:  # sensor grain, one value per 2x2 output pixels
        grain = rng.normal(0.0, sigma, (frame[1], frame[0])).round().astype(np.int16)
        canvas = Image.fromarray((np.asarray(canvas, dtype=np.int16) + grain[..., None]).clip(0, 255).astype(np.uint8), "RGB")
    return canvas.resize(size, Image.Resampling.BILINEAR)


def shopper_photo(
    photo: PhotoLike,
    rng: np.random.Generator,
    *,
    size: tuple[int, int] = DEFAULT_SIZE,
    background_pool: Sequence[PhotoLike] | None = None,
    avoid: object = None,
) -> bytes:
    """A shopper-like phone photo of ``photo`` as JPEG bytes (see the module docstring for the ranges)."""
    image = shopper_image(photo, rng, size=size, background_pool=background_pool, avoid=avoid)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)), subsampling=2)
    return buffer.getvalue()
