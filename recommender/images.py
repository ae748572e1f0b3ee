"""Decode untrusted image bytes into the one canonical model input.

Build and query must see pixels prepared identically (same decoder, same reduction, same padding,
same resize filter), otherwise catalogue and query features drift apart. Everything that turns a
file into model input therefore goes through :func:`load_image`.

The bytes come from strangers, so decoding is bounded before any pixel is decoded: only the
formats we support are opened, extreme aspect ratios and oversized images are refused from their
headers, a cheap walk over the file's structure refuses files built to make Pillow's header
parsers loop (millions of tiny PNG chunks, JPEG segments or GIF extensions, thousands of JPEG
scans), and the memory the decode will need is estimated from the header and refused above
:data:`MAX_DECODE_MEMORY`. Only the first frame of an animation is decoded. Large images are
reduced by an integer box filter *before* the mode conversion and the padding to a square, in
strips, so no full-size copy is ever made beyond the decoded image itself. Whatever still goes
wrong inside Pillow (any exception, ``MemoryError`` included) becomes :class:`ImageDecodeError`.
``benchmarks/decode_budget.py`` measures the time and memory each input of a hostile corpus takes.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from .errors import ImageDecodeError

#: Largest encoded image accepted, in bytes (Telegram's own bot download limit is 20 MB).
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
#: Largest decoded image accepted, in pixels (guards against decompression bombs).
DEFAULT_MAX_PIXELS = 40_000_000
#: Longest side over shortest side. Telegram itself refuses photos over 20:1; a product photo is
#: never that thin, and a 1x100000 strip would otherwise shrink to nothing inside a 224 square.
MAX_ASPECT_RATIO = 20
#: Estimated bytes one decode may hold at once (the file, the decoded image, Pillow's and the codec's
#: buffers, PNG text); an image that would need more is refused from its header.
MAX_DECODE_MEMORY = 160 * 1024 * 1024
#: Header blocks (PNG chunks, JPEG segments and fill bytes, GIF extension blocks) read before the
#: pixels. Pillow parses each in Python, so a file made of tiny blocks would keep it busy for seconds.
MAX_HEADER_BLOCKS = 50_000
#: JPEG scans x megapixels: each progressive scan passes over every block of the image, so the
#: decoding work grows with both. 16 scans at 40 MP, 160 at 4 MP.
MAX_JPEG_SCAN_MEGAPIXELS = 640
#: Full-size RGBA copies a WebP decode holds: libwebp's two canvases, the frame handed to Pillow, Pillow's image.
_WEBP_COPIES = 4
#: Pixels converted at a time when a large image is reduced (a few MB per strip).
STRIP_PIXELS = 1 << 19
#: Catalogue photos sit on white studio backgrounds; transparent areas and padding become white.
BACKGROUND = (255, 255, 255)

#: What the decoder opens. TIFF is left out on purpose: dozens of codecs, tiles, many pages and
#: float modes make it a large attack surface, and neither Telegram photos nor catalogues use it.
SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP")
#: The Pillow openers tried (MPO, a phone's multi-picture JPEG, comes out of the JPEG opener).
_OPENERS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
_UNREADABLE = "This file is not an image I can read (JPEG, PNG, WebP, GIF or BMP)."
_DAMAGED = "This image is damaged or incomplete and cannot be decoded."
_NO_MEMORY = "This image needs too much memory to decode; please send a smaller one."
_TOO_COMPLEX = "This image file is built in a way I cannot decode quickly; please send it as an ordinary JPEG or PNG."
#: EXIF orientation → the transpose that makes the photo upright (as ``ImageOps.exif_transpose``).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# --- reading ------------------------------------------------------------------------------------


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


# --- the structure walk: cheap, bounded, before Pillow parses anything --------------------------


def _too_many_blocks(count: int) -> None:
    if count > MAX_HEADER_BLOCKS:
        raise ImageDecodeError(_TOO_COMPLEX)


def _png_text_bytes(data: bytes) -> int:
    """Walk the chunks Pillow reads for the first frame; return a bound on the memory their text takes.

    Pillow inflates each zTXt/iTXt to at most ``MAX_TEXT_CHUNK`` bytes (zlib expands at most
    1032:1), and an iTXt string with one astral character is stored 4 bytes a character.
    """
    per_chunk = PngImagePlugin.MAX_TEXT_CHUNK
    position, blocks, text, animated, seen_pixels = 8, 0, 0, False, False
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        blocks += 1
        _too_many_blocks(blocks)
        body = position + 8
        if kind == b"tEXt":
            text += length
        elif kind == b"zTXt":
            text += min(1032 * length, per_chunk)
        elif kind == b"iTXt":
            keyword_end = data.find(b"\x00", body, body + min(length, 80))
            compressed = keyword_end >= 0 and keyword_end + 1 < len(data) and data[keyword_end + 1] == 1
            text += 4 * (min(1032 * length, per_chunk) if compressed else length)
        elif kind == b"acTL":
            animated = True
        elif kind in (b"IDAT", b"fdAT"):
            seen_pixels = True
        elif kind == b"IEND" or (kind == b"fcTL" and animated and seen_pixels):
            break  # Pillow stops at the next frame
        position = body + length + 4
    return min(text, 4 * PngImagePlugin.MAX_TEXT_MEMORY)


def _jpeg_scans(data: bytes) -> int:
    """Walk the segments before the first scan (as Pillow does, byte by byte over junk); count the scans.

    Inside entropy-coded data every 0xFF is stuffed, so each FF DA between the first scan and the
    end-of-image marker starts a scan (an MPO's second picture lies after that marker).
    """
    position, blocks, end = 2, 0, len(data)
    while position + 1 < end:
        blocks += 1
        _too_many_blocks(blocks)
        if data[position] != 0xFF:  # junk: Pillow steps over it one byte at a time
            following = data.find(b"\xff", position)
            following = end if following < 0 else following
            blocks += following - position - 1
            position = following
            continue
        marker = data[position + 1]
        if marker in (0x00, 0xFF) or 0xD0 <= marker <= 0xD8 or marker == 0x01:
            position += 1 if marker == 0xFF else 2  # fill byte, stuffed byte, or a marker without a length
            continue
        if marker == 0xDA:
            stop = data.find(b"\xff\xd9", position)
            return data.count(b"\xff\xda", position, end if stop < 0 else stop)
        if position + 4 > end:
            break
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return 0


def _gif_check(data: bytes) -> None:
    """Walk the blocks before the first image (Pillow reads each extension sub-block in Python)."""
    if len(data) < 13:
        return
    flags = data[10]
    position = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    blocks = 0
    while position < len(data):
        blocks += 1
        _too_many_blocks(blocks)
        tag = data[position]
        if tag in (0x2C, 0x3B):  # image descriptor or trailer
            return
        if tag != 0x21:  # junk, skipped a byte at a time
            position += 1
            continue
        position += 2  # "!" and the label, then sub-blocks until an empty one
        while position < len(data) and data[position]:
            blocks += 1
            _too_many_blocks(blocks)
            position += data[position] + 1
        position += 1


def _webp_declared_size(data: bytes) -> tuple[int, int] | None:
    """Canvas size from a WebP header: libwebp allocates two canvases this big when the file is opened."""
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


# --- opening: every check that needs only the header --------------------------------------------


def _check_geometry(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError("This image is empty.")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"This image is too large ({width}x{height} pixels; the limit is {max_pixels / 1e6:.3g} megapixels)."
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageDecodeError(
            f"This image is too long and thin ({width}x{height} pixels); please send a photo"
            f" at most {MAX_ASPECT_RATIO} times longer than it is wide."
        )


def _structure(data: bytes, max_pixels: int) -> int:
    """Walk the file's structure before Pillow does; returns PNG text bytes or JPEG scans (else 0)."""
    if data.startswith(b"\x89PNG"):
        return _png_text_bytes(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_scans(data)
    if data.startswith(b"GIF8"):
        _gif_check(data)
    elif (declared := _webp_declared_size(data)) is not None:
        # libwebp allocates its canvases when the file is opened: check before Pillow opens it
        _check_geometry(*declared, max_pixels)
        _check_memory(len(data) + _WEBP_COPIES * 4 * declared[0] * declared[1], declared)
    return 0


def _open_limited(data: bytes, max_pixels: int) -> Image.Image:
    """Open (headers only) a supported format whose geometry passes the limits."""
    try:
        with warnings.catch_warnings():
            # Pillow warns (and above 2x raises) on huge images; we apply our own limit instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_OPENERS)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(_UNREADABLE) from exc
    if image.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(_UNREADABLE)
    _check_geometry(*image.size, max_pixels)
    if image.format == "BMP" and image.tile and image.tile[0].codec_name == "bmp_rle":
        # Pillow's RLE decoder is pure Python: a file of 1-pixel runs would take seconds.
        raise ImageDecodeError("Compressed (RLE) BMP files are not supported; please send a JPEG or PNG.")
    return image


def _bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow stores per pixel: 1 for 1/L/P, 2 for 16-bit grey, 4 for everything else."""
    return 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4


def _check_decode_cost(image: Image.Image, data: bytes, full_size: tuple[int, int], structure: int) -> None:
    """Refuse before decoding when the estimated memory or the JPEG scan work is over the limits.

    ``image`` is opened (and for JPEG, drafted to its reduced decode size); ``full_size`` is the
    size its header declares; ``structure`` what :func:`_structure` found.
    """
    width, height = image.size
    pixels = width * height * _bytes_per_pixel(image.mode)
    needed = len(data) + pixels
    if image.format == "WEBP":
        needed += (_WEBP_COPIES - 1) * pixels
    elif image.format == "PNG":
        needed += structure  # the text chunks
    elif image.format in ("JPEG", "MPO"):
        scans = structure
        megapixels = full_size[0] * full_size[1] / 1e6
        if scans * megapixels > MAX_JPEG_SCAN_MEGAPIXELS:
            raise ImageDecodeError(_TOO_COMPLEX)
        if scans > 1 or image.info.get("progressive"):
            needed += _coefficient_bytes(image, full_size)
    _check_memory(needed, full_size)


def _check_memory(needed: int, size: tuple[int, int]) -> None:
    if needed > MAX_DECODE_MEMORY:
        raise ImageDecodeError(
            f"This image is too large to process ({size[0]}x{size[1]} pixels);"
            " please send a smaller version, a JPEG photo is best."
        )


def _coefficient_bytes(image: Image.Image, full_size: tuple[int, int]) -> int:
    """libjpeg keeps every DCT coefficient of a multi-scan JPEG (2 bytes each), whatever the scale."""
    layers = getattr(image, "layer", None) or [("", 1, 1, 0)] * 3
    h_max = max(layer[1] for layer in layers) or 1
    v_max = max(layer[2] for layer in layers) or 1
    total = 0
    for _, h, v, _ in layers:
        columns = -(-full_size[0] * h // h_max) + 7
        rows = -(-full_size[1] * v // v_max) + 7
        total += (columns // 8) * (rows // 8) * 64 * 2
    return total


# --- decoding: reduce first, then convert, in strips --------------------------------------------


def _reduction(width: int, height: int, min_side: int | None) -> int:
    """Integer factor that keeps the short side >= ``min_side`` or the long side >= 2 x ``min_side``.

    For ordinary photos this is the short-side rule the JPEG draft always used; for banners the
    long-side rule still shrinks them to a few megabytes.
    """
    if not min_side:
        return 1
    return max(1, min(width, height) // min_side, max(width, height) // (2 * min_side))


#: Grey modes wider than 8 bits whose white point depends on the image (see :func:`_grey_peak`).
_INTEGER_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _grey_peak(image: Image.Image) -> float:
    """White point of a 16-bit or 32-bit integer grey image, from the whole image (strips must agree)."""
    if image.mode in _INTEGER_GREY_MODES:
        _, high = image.getextrema()
        return 65535.0 if float(high) > 255 else 255.0  # type: ignore[arg-type]
    return 255.0


def _to_rgb(image: Image.Image, peak: float = 255.0) -> Image.Image:
    """Convert any mode (palette, grayscale, CMYK, 16-bit, alpha) to RGB on a white background."""
    if image.mode in _INTEGER_GREY_MODES or image.mode == "F":
        array = np.asarray(image, dtype=np.float32)  # float images are already 0-255: their peak is 255
        image = Image.fromarray(np.clip(array * (255.0 / peak), 0, 255).astype(np.uint8), mode="L")
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


def _reduced_rgb(image: Image.Image, factor: int) -> Image.Image:
    """RGB on white, box-reduced by ``factor``; non-RGB images are converted a strip at a time.

    Box reduction of strips whose height is a multiple of ``factor`` equals reducing the whole
    image, so a large palette PNG never exists as a full-size RGBA copy.
    """
    if factor == 1:
        return _to_rgb(image, _grey_peak(image))
    if image.mode == "RGB":
        return image.reduce(factor)
    width, height = image.size
    peak = _grey_peak(image)
    rows = max(factor, STRIP_PIXELS // width // factor * factor)
    reduced = Image.new("RGB", (-(-width // factor), -(-height // factor)), BACKGROUND)
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(height, top + rows)))
        reduced.paste(_to_rgb(strip, peak).reduce(factor), (0, top // factor))
    return reduced


def _decode(data: bytes, max_pixels: int, min_side: int | None) -> Image.Image:
    structure = _structure(data, max_pixels)
    image = _open_limited(data, max_pixels)
    image.seek(0)  # first frame only; animations are never walked
    full_size = image.size
    factor = _reduction(*full_size, min_side)
    if factor > 1 and image.format in ("JPEG", "MPO"):
        # libjpeg decodes at 1/2, 1/4 or 1/8 scale directly: the draft picks the largest <= factor.
        image.draft(None, (full_size[0] // factor, full_size[1] // factor))
    _check_decode_cost(image, data, full_size, structure)
    image.load()
    orientation = image.getexif().get(0x0112)
    rgb = _reduced_rgb(image, _reduction(*image.size, min_side))
    if rgb is not image:
        image.close()  # free the full-size pixels before the padding
    method = _ORIENTATION.get(orientation) if isinstance(orientation, int) else None
    return rgb.transpose(method) if method is not None else rgb


def decode_image(
    source: str | os.PathLike[str] | bytes | bytearray | BinaryIO,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> Image.Image:
    """Decode to an upright RGB Pillow image, or raise :class:`ImageDecodeError`.

    EXIF orientation is applied, animations use their first frame, every mode becomes RGB on
    white. With ``min_side``, large images are reduced while their short side stays at least
    ``min_side`` pixels (or their long side at least twice that): JPEGs at a reduced DCT scale
    (1/2, 1/4, 1/8: a phone photo decodes several times faster), then by an integer box filter.
    """
    data = read_image_bytes(source, max_bytes)
    try:
        return _decode(data, max_pixels, min_side)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("This image is too large (too many pixels).") from exc
    except MemoryError as exc:
        raise ImageDecodeError(_NO_MEMORY) from exc
    except Exception as exc:
        raise ImageDecodeError(_DAMAGED) from exc


def square_resize(image: Image.Image, size: int) -> np.ndarray:
    """Pad the (already reduced) image to a white square, then resize bilinearly to size x size."""
    width, height = image.size
    side = max(width, height)
    if width != height:
        canvas = Image.new("RGB", (side, side), BACKGROUND)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        image = canvas
    if side != size:
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def load_image(
    source: str | os.PathLike[str] | bytes | bytearray | BinaryIO,
    size: int = 224,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode and prepare one image as a ``(size, size, 3)`` uint8 array ready for the extractor.

    Reduced first (short side >= 2 x ``size`` or long side >= 4 x ``size``), so the square canvas
    is at most a few megabytes whatever the photo's shape.
    """
    image = decode_image(source, max_bytes=max_bytes, max_pixels=max_pixels, min_side=2 * size)
    try:
        return square_resize(image, size)
    except MemoryError as exc:
        raise ImageDecodeError(_NO_MEMORY) from exc
    except Exception as exc:
        raise ImageDecodeError(_DAMAGED) from exc
