"""Decode untrusted image bytes into the one canonical model input.

Build and query must see pixels prepared identically (same decoder, same padding, same resize
filter), otherwise catalogue and query features drift apart. Everything that turns a file into
model input therefore goes through :func:`load_image`.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Largest encoded image accepted, in bytes (Telegram's own bot download limit is 20 MB).
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
#: Largest decoded image accepted, in pixels (guards against decompression bombs).
DEFAULT_MAX_PIXELS = 40_000_000
#: Catalogue photos sit on white studio backgrounds; transparent areas and padding become white.
BACKGROUND = (255, 255, 255)
#: What Pillow's plugins raise on damaged or truncated input, while opening (headers) as well as
#: while decoding: e.g. a JPEG cut inside its header raises ``OSError("Truncated File Read")`` from
#: ``Image.open``, a cut WebP ``OSError("could not create decoder object")``.
DECODER_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError, KeyError)

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "MPO", "TIFF")


class ImageDecodeError(ValueError):
    """The bytes are not an image we can use; the message is safe to show to a user."""


def _open_limited(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # Pillow warns (and above 2x raises) on huge images; we apply our own limit instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.MAX_IMAGE_PIXELS = None  # type: ignore[attr-defined]
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("This file is not an image I can read (JPEG, PNG, WebP, GIF or BMP).") from exc
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("This image is too large (too many pixels).") from exc
    except DECODER_ERRORS as exc:
        raise ImageDecodeError("This image is damaged or incomplete and cannot be decoded.") from exc
    if image.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(f"Unsupported image format {image.format}; please send a JPEG, PNG or WebP.")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError("This image is empty.")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"This image is too large ({width}x{height} pixels; the limit is {max_pixels / 1e6:.3g} megapixels)."
        )
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode (palette, grayscale, CMYK, 16-bit, alpha) to RGB on a white background."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(array * (255.0 / peak), 0, 255).astype(np.uint8), mode="L")
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        canvas = Image.new("RGB", image.size, BACKGROUND)
        canvas.paste(image, mask=image.getchannel("A"))
        return canvas
    if image.mode == "CMYK":
        # JPEG CMYK from Photoshop is often stored inverted; Pillow's convert handles the common case.
        return image.convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def _square_resize(image: Image.Image, size: int) -> np.ndarray:
    """Pad to a white square (keeps the product's shape), then resize bilinearly to size x size."""
    width, height = image.size
    side = max(width, height)
    if width != height:
        canvas = Image.new("RGB", (side, side), BACKGROUND)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        image = canvas
    if side != size:
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def read_image_bytes(source: str | os.PathLike[str] | bytes | bytearray | BinaryIO, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read raw bytes from a path, bytes or file object, refusing anything over ``max_bytes``."""
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            size = path.stat().st_size
            data = path.read_bytes() if size <= max_bytes else b""
        except OSError as exc:
            raise ImageDecodeError(f"Cannot read image file {path.name}: {exc.strerror or exc}.") from exc
        if size > max_bytes:
            raise ImageDecodeError(f"This image file is too big ({size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB).")
    else:
        data = source.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageDecodeError(f"This image file is too big (the limit is {max_bytes / 1e6:.0f} MB).")
    if not data:
        raise ImageDecodeError("This file is empty.")
    return data


def decode_image(
    source: str | os.PathLike[str] | bytes | bytearray | BinaryIO,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> Image.Image:
    """Decode to an upright RGB Pillow image, or raise :class:`ImageDecodeError`.

    EXIF orientation is applied, GIFs use their first frame, every mode becomes RGB on white.
    With ``min_side``, large JPEGs are decoded at a reduced DCT scale (1/2, 1/4, 1/8) that still
    leaves both sides at least ``min_side`` pixels: a phone photo decodes several times faster.
    """
    data = read_image_bytes(source, max_bytes)
    image = _open_limited(data, max_pixels)
    try:
        image.seek(0)
        if min_side and image.format in ("JPEG", "MPO"):
            image.draft(None, (min_side, min_side))
        image.load()
        image = ImageOps.exif_transpose(image) or image
        return _to_rgb(image)
    except (*DECODER_ERRORS, Image.DecompressionBombError) as exc:
        raise ImageDecodeError("This image is damaged or incomplete and cannot be decoded.") from exc


def load_image(
    source: str | os.PathLike[str] | bytes | bytearray | BinaryIO,
    size: int = 224,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode and prepare one image as a ``(size, size, 3)`` uint8 array ready for the extractor."""
    image = decode_image(source, max_bytes=max_bytes, max_pixels=max_pixels, min_side=2 * size)
    try:
        return _square_resize(image, size)
    except DECODER_ERRORS as exc:
        raise ImageDecodeError("This image is damaged or incomplete and cannot be decoded.") from exc
