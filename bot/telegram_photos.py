"""Catalogue photos in a form Telegram accepts as a photo.

Telegram refuses photo uploads over 10 MB, with width + height over 10000 or a side more than 20
times the other (``PHOTO_INVALID_DIMENSIONS``), and files it cannot decode
(``IMAGE_PROCESS_FAILED``). A catalogue photo that breaks a rule is replaced by a JPEG made from it
(at most 2560 px a side, Telegram's own largest size; padded with white to 20:1 when it is a
banner), made once, off the event loop, and kept under ``cache_dir`` by a name derived from the
product id's hash and the source's size and mtime, never from a name anyone chose. A photo that
cannot be decoded at all is unusable: the album goes out without it.

Everything here is blocking; callers run it in a worker thread.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from recommender.errors import UnusablePhoto
from recommender.fileio import atomic_file

log = logging.getLogger(__name__)

MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_SIDES_SUM = 10_000
MAX_RATIO = 20
#: Telegram stores photos at most this large; a bigger upload only costs bandwidth.
MAX_SIDE = 2560
#: Sources with more pixels (after JPEG's reduced-scale decoding) are not converted.
MAX_SOURCE_PIXELS = 40_000_000
#: Conversions running at once (each may hold a large decoded source photo in memory).
_CONVERSIONS = threading.BoundedSemaphore(2)
#: Formats sent as they are; anything else is converted to JPEG.
SENDABLE_FORMATS = ("JPEG", "PNG")
#: Formats the converter opens (the catalogue's image suffixes).
READABLE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
JPEG_QUALITY = 87


@dataclass(frozen=True)
class PhotoUpload:
    """Bytes to upload for one product photo."""

    data: bytes
    filename: str
    converted: bool  # a JPEG made from the original, not the original itself


def copy_name(product_id: str, stat: os.stat_result) -> str:
    """File name of the conforming copy: product hash + source size/mtime (a changed photo gets a new one)."""
    return f"{_product_hash(product_id)}-{stat.st_size}-{stat.st_mtime_ns}.jpg"


def _product_hash(product_id: str) -> str:
    return hashlib.sha256(product_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def conforms(width: int, height: int, size: int) -> bool:
    """Whether Telegram takes a photo of this size and byte count as it is."""
    return (
        size <= MAX_PHOTO_BYTES
        and 0 < width
        and 0 < height
        and width + height <= MAX_SIDES_SUM
        and max(width, height) <= MAX_RATIO * min(width, height)
    )


def photo_for_upload(product_id: str, image_path: Path, cache_dir: Path | None = None, *, force_copy: bool = False) -> PhotoUpload:
    """The bytes to upload for a catalogue photo: the original if Telegram takes it, else a conforming copy.

    ``force_copy`` skips the original (Telegram refused it although it looked fine).
    Raises :class:`UnusablePhoto` when neither works.
    """
    try:
        stat = os.stat(image_path)
        if not force_copy and stat.st_size <= MAX_PHOTO_BYTES:
            data = Path(image_path).read_bytes()
            fmt = _sendable_format(data)
            if fmt is not None:
                return PhotoUpload(data, f"photo.{'jpg' if fmt == 'JPEG' else 'png'}", False)
    except OSError as exc:
        raise UnusablePhoto(f"cannot read {image_path.name}: {exc}") from None
    return PhotoUpload(_conforming_copy(product_id, image_path, stat, cache_dir), "photo.jpg", True)


def _sendable_format(data: bytes) -> str | None:
    """The format if Telegram takes these bytes as a photo unchanged (intact JPEG/PNG within limits)."""
    try:
        with Image.open(io.BytesIO(data), formats=SENDABLE_FORMATS) as image:
            if not conforms(image.width, image.height, len(data)):
                return None
            fmt = image.format
            if fmt == "JPEG":
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()  # a truncated JPEG fails here, cheaply at 1/8 scale
            else:
                image.verify()  # PNG: chunk CRCs and a complete stream
            return fmt
    except Exception:
        return None


def _conforming_copy(product_id: str, image_path: Path, stat: os.stat_result, cache_dir: Path | None) -> bytes:
    target = cache_dir / copy_name(product_id, stat) if cache_dir is not None else None
    kept = _read_kept(target)
    if kept is not None:
        return kept
    with _CONVERSIONS:
        kept = _read_kept(target)  # made meanwhile for another chat?
        if kept is not None:
            return kept
        try:
            data = make_conforming_jpeg(image_path)
        except UnusablePhoto:
            raise
        except Exception as exc:
            raise UnusablePhoto(f"{image_path.name} cannot be decoded ({type(exc).__name__}: {exc})") from None
        if target is not None:
            _keep(target, data, product_id)
    return data


def _read_kept(target: Path | None) -> bytes | None:
    if target is None:
        return None
    try:
        data = target.read_bytes()
    except OSError:
        return None
    return data or None


def make_conforming_jpeg(image_path: Path) -> bytes:
    """A JPEG of the photo that Telegram accepts: ≤ 2560 px a side, ≤ 20:1, ≤ 10 MB."""
    with Image.open(image_path, formats=READABLE_FORMATS) as source:
        width, height = source.size
        if width <= 0 or height <= 0:
            raise UnusablePhoto(f"{image_path.name} has no pixels")
        scale = min(1.0, MAX_SIDE / max(width, height))
        if source.format == "JPEG":  # decode at a reduced DCT scale: a fraction of the memory
            source.draft("RGB", (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))))
        if source.width * source.height > MAX_SOURCE_PIXELS:
            raise UnusablePhoto(f"{image_path.name} is too large to convert ({width}x{height})")
        image = ImageOps.exif_transpose(source)
        image = _rgb_on_white(image)
    width, height = image.size
    scale = min(1.0, MAX_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    image = _pad_to_ratio(image)
    for quality in (JPEG_QUALITY, 75, 60):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, optimize=True)
        if buffer.tell() <= MAX_PHOTO_BYTES:
            return buffer.getvalue()
    raise UnusablePhoto(f"{image_path.name} does not fit in 10 MB even as a JPEG")  # pragma: no cover - 2560x2560 cannot


def _rgb_on_white(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _pad_to_ratio(image: Image.Image) -> Image.Image:
    """Pad the short side with white so that the long side is at most 20 times it."""
    width, height = image.size
    if max(width, height) <= MAX_RATIO * min(width, height):
        return image
    if width >= height:
        size = (width, math.ceil(width / MAX_RATIO))
    else:
        size = (math.ceil(height / MAX_RATIO), height)
    padded = Image.new("RGB", size, "white")
    padded.paste(image, ((size[0] - width) // 2, (size[1] - height) // 2))
    return padded


def _keep(target: Path, data: bytes, product_id: str) -> None:
    """Store the copy atomically and drop copies made from earlier versions of the photo."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(target) as handle:
            handle.write(data)
    except OSError as exc:
        log.warning("Could not keep the Telegram-ready copy %s: %s", target, exc)
        return
    for old in target.parent.glob(f"{_product_hash(product_id)}-*.jpg"):
        if old != target:
            old.unlink(missing_ok=True)
