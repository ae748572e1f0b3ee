"""A generated corpus of hostile images: small files that ask a decoder for far too much.

Shared by ``tests/test_hostile_images.py`` (each case decodes under a memory cap) and
``benchmarks/decode_budget.py`` (time and peak memory per case). Nothing binary is committed:
every file is built here, most of them by hand (PNG chunks, JPEG scans) so that a 36-megapixel
image costs the generator a few hundred kilobytes and a fraction of a second, not the 144 MB a
Pillow ``Image.new`` would.

Each case says what ``load_image`` must do with it: ``accept`` (a model input comes back),
``refuse`` (``ImageDecodeError``) or ``either`` (both are fine, as long as nothing else happens).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import re
import resource
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

ACCEPT, REFUSE, EITHER = "accept", "refuse", "either"


@dataclass(frozen=True)
class Case:
    """One hostile file: how to make it, what ``load_image`` must do with it, and why it is here."""

    name: str
    make: Callable[[], bytes]
    expect: str
    why: str
    #: False for realistic worst cases that only the benchmark needs (slow to generate, not hostile)
    in_test: bool = True


# --- PNG by hand --------------------------------------------------------------------------------



def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """Encode a Pillow image to bytes in ``fmt``."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()

def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _rows(row: bytes, height: int, level: int = 1) -> bytes:
    """zlib stream of ``height`` copies of one scanline (filter byte 0 + ``row``), streamed."""
    compressor = zlib.compressobj(level)
    line = b"\x00" + row
    block = line * max(1, (1 << 20) // len(line))  # ~1 MB at a time: fast and small
    per_block = len(block) // len(line)
    parts = []
    left = height
    while left >= per_block:
        parts.append(compressor.compress(block))
        left -= per_block
    parts.append(compressor.compress(line * left))
    parts.append(compressor.flush())
    return b"".join(parts)


def png(
    width: int,
    height: int,
    *,
    colour_type: int = 2,
    bit_depth: int = 8,
    row: bytes | None = None,
    idat: bytes | None = None,
    before_idat: Iterable[bytes] = (),
    after_idat: Iterable[bytes] = (),
) -> bytes:
    """A PNG whose every scanline is ``row`` (default: a red-to-blue ramp), or raw ``idat``."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    if idat is None:
        if row is None:
            bytes_per_row = (width * channels * bit_depth + 7) // 8
            ramp = np.linspace(0, 255, bytes_per_row).astype(np.uint8)
            row = ramp.tobytes()
        idat = _rows(row, height)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"".join(
        [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), *before_idat, _chunk(b"IDAT", idat), *after_idat, _chunk(b"IEND", b"")]
    )


def _ztxt(size: int, index: int) -> bytes:
    return _chunk(b"zTXt", b"Comment%d\x00\x00" % index + zlib.compress(b"a" * size, 9))


def _itxt(size: int, compressed: bool = False, index: int = 0) -> bytes:
    """iTXt of ``size`` bytes of text; compressed, it is ASCII plus one emoji (stored 4 bytes a character)."""
    if not compressed:
        return _chunk(b"iTXt", b"Description\x00\x00\x00\x00\x00" + "\u00e9".encode() * (size // 2))
    text = "\U0001f600".encode() + b"a" * (size - 4)
    return _chunk(b"iTXt", b"Note%d\x00\x01\x00\x00\x00" % index + zlib.compress(text, 9))


def apng(width: int, height: int, frames: int) -> bytes:
    """An animated PNG with ``frames`` frames (alternating red and blue), hand-assembled."""
    red, blue = _rows(b"\xdc\x14\x1e" * width, height, 9), _rows(b"\x14\x28\xd2" * width, height, 9)
    parts = [_chunk(b"acTL", struct.pack(">II", frames, 0))]
    sequence = 0
    for index in range(frames):
        parts.append(_chunk(b"fcTL", struct.pack(">IIIIIHHBB", sequence, width, height, 0, 0, 1, 50, 0, 0)))
        sequence += 1
        data = red if index % 2 == 0 else blue
        if index == 0:
            parts.append(_chunk(b"IDAT", data))
        else:
            parts.append(_chunk(b"fdAT", struct.pack(">I", sequence) + data))
            sequence += 1
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join([b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", header), *parts, _chunk(b"IEND", b"")])


# --- other formats ------------------------------------------------------------------------------


def _frames(count: int, size: tuple[int, int], mode: str = "RGB") -> list[Image.Image]:
    """Alternating red and blue frames (identical neighbours would be merged by the encoders)."""
    if mode == "P":  # palette frames: the GIF encoder need not quantise (36x faster)
        frames = [Image.new("P", size, i % 2) for i in range(count)]
        for frame in frames:
            frame.putpalette([220, 20, 30, 20, 40, 210] + [0] * 762)
        return frames
    colours = [(220, 20, 30), (20, 40, 210)]
    return [Image.new("RGB", size, colours[i % 2]) for i in range(count)]


def gif_frames(count: int, size: tuple[int, int] = (16, 16)) -> bytes:
    """An animated GIF: Pillow encodes two frames, their blocks are repeated (fast at any size)."""
    frames = _frames(2, size, "P")
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=20, loop=0)
    first = data.index(b"\x21\xf9")  # each frame: graphic control extension, image descriptor, pixels
    second = data.index(b"\x21\xf9", data.index(b"\x2c", first))
    pair = data[first:-1]  # both frames, without the trailer
    return data[:first] + pair * (count // 2) + (data[first:second] if count % 2 else b"") + b"\x3b"


def webp_frames(count: int, size: tuple[int, int] = (16, 16)) -> bytes:
    frames = _frames(count, size)
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=20, lossless=True, method=0)


def webp_declaring(width: int, height: int) -> bytes:
    """A lossless WebP header that declares ``width`` x ``height`` followed by junk."""
    bits = (width - 1) | ((height - 1) << 14)
    body = b"\x2f" + struct.pack("<I", bits) + bytes(64)
    chunk = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def jpeg_flat(size: tuple[int, int], mode: str = "RGB", **options: object) -> bytes:
    colour = (0, 200, 200, 0) if mode == "CMYK" else (200, 30, 30)
    return encode(Image.new(mode, size, colour), "JPEG", quality=90, **options)


def jpeg_noise(max_bytes: int, seed: int = 0, **options: object) -> bytes:
    """A noise JPEG (the slowest kind to decode: every coefficient is busy) just under ``max_bytes``."""
    rng = np.random.default_rng(seed)

    def noise(width: int) -> bytes:
        pixels = rng.integers(0, 256, (width * 3 // 4, width, 3), dtype=np.uint8)
        return encode(Image.fromarray(pixels), "JPEG", quality=90, **options)

    per_pixel = len(noise(800)) / (800 * 600)
    width = int((max_bytes * 0.97 / per_pixel / 0.75) ** 0.5)
    while len(data := noise(width)) > max_bytes:
        width = int(width * 0.97)
    return data


def jpeg_scan_bomb(scans: int) -> bytes:
    """A progressive JPEG whose last scan is repeated ``scans`` times: each pass re-reads every block."""
    data = encode(Image.new("RGB", (2048, 2048), (90, 120, 150)), "JPEG", quality=90, progressive=True)
    last = data.rindex(b"\xff\xda")
    return data[:last] + data[last:-2] * scans + b"\xff\xd9"


def png_noise(max_bytes: int, seed: int = 1) -> bytes:
    """A noise PNG (incompressible, so the largest pixel count a 20 MB file can hold)."""
    side = int((max_bytes * 0.95 / 3) ** 0.5)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (side, side * 3), dtype=np.uint8)
    raw = np.concatenate([np.zeros((side, 1), np.uint8), rows], axis=1).tobytes()
    return png(side, side, idat=zlib.compress(raw, 1))


def bmp_palette(size: tuple[int, int]) -> bytes:
    image = Image.new("P", size, 1)
    image.putpalette([255, 255, 255, 220, 20, 30] + [0] * 762)
    return encode(image, "BMP")


def tiff(size: tuple[int, int]) -> bytes:
    return encode(Image.new("RGB", size, (200, 30, 30)), "TIFF", compression="tiff_deflate")


def gif_with_extensions(count: int) -> bytes:
    """A 16x16 GIF preceded by ``count`` empty comment extensions (3 bytes each)."""
    data = encode(Image.new("P", (16, 16), 0), "GIF")
    flags = data[10]
    header = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    return data[:header] + b"\x21\xfe\x00" * count + data[header:]


def jpeg_with_segments(count: int) -> bytes:
    """A 64x64 JPEG preceded by ``count`` empty APP1 segments (4 bytes each)."""
    data = jpeg_flat((64, 64))
    return data[:2] + b"\xff\xe1\x00\x02" * count + data[2:]


def bmp_rle8(width: int, height: int) -> bytes:
    """An 8-bit RLE BMP made of 1-pixel runs: Pillow decodes RLE in Python, a run at a time."""
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    body = (b"\x01\x07" * width + b"\x00\x00") * height + b"\x00\x01"
    offset = 14 + 40 + len(palette)
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(body), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + dib + palette + body


def truncated(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


# --- the corpus ---------------------------------------------------------------------------------


def cases() -> list[Case]:
    """Every hostile case, cheapest first. Names are file names (their suffix is the format)."""
    big_png = lambda: png(6000, 6000)  # noqa: E731 - 36 MP RGB ramp, ~0.2 MB
    return [
        # extreme aspect ratios: a 275-byte 1x100000 PNG asked the old code for a 100000x100000 canvas
        Case("tall-1x100000.png", lambda: png(1, 100_000), REFUSE, "aspect 100000:1"),
        Case("wide-100000x1.png", lambda: png(100_000, 1), REFUSE, "aspect 100000:1"),
        Case("banner-16000x250.png", lambda: png(16_000, 250), REFUSE, "aspect 64:1 (was 1.1 GB)"),
        Case("banner-8000x400.png", lambda: png(8_000, 400), ACCEPT, "aspect 20:1, the largest accepted"),
        Case("banner-12000x600.jpg", lambda: jpeg_flat((12_000, 600)), ACCEPT, "aspect 20:1 JPEG"),
        # pixel bombs: tiny files declaring huge images
        Case("bomb-30000x30000.png", lambda: png(30_000, 30_000, idat=zlib.compress(b"\x00" * 1000)), REFUSE, "900 MP declared"),
        Case("bomb-36mp.png", big_png, EITHER, "36 MP RGB PNG of 0.2 MB"),
        Case("bomb-36mp-rgba.png", lambda: png(6000, 6000, colour_type=6), EITHER, "36 MP RGBA PNG"),
        Case("bomb-40mp.jpg", lambda: jpeg_flat((7700, 5190)), ACCEPT, "40 MP baseline JPEG: reduced DCT decode"),
        Case("bomb-40mp-progressive.jpg", lambda: jpeg_flat((7700, 5190), progressive=True, subsampling=0), EITHER, "progressive 4:4:4 keeps all coefficients: 240 MB"),
        Case("bomb-40mp-progressive-420.jpg", lambda: jpeg_flat((7700, 5190), progressive=True), ACCEPT, "progressive 4:2:0: 120 MB of coefficients"),
        Case("bomb-40mp-cmyk.jpg", lambda: jpeg_flat((7700, 5190), "CMYK"), ACCEPT, "40 MP CMYK JPEG"),
        Case("bomb-36mp.webp", lambda: encode(Image.new("RGB", (6000, 6000), (200, 30, 30)), "WEBP", lossless=True, method=0), EITHER, "36 MP WebP of 38 bytes"),
        Case("largest-9mp.webp", lambda: encode(Image.new("RGB", (3600, 2600), (200, 30, 30)), "WEBP", lossless=True, method=0), ACCEPT, "the largest WebP accepted: 4 canvases"),
        Case("declares-12000x12000.webp", lambda: webp_declaring(12_000, 12_000), REFUSE, "144 MP declared: libwebp allocates canvases at open"),
        Case("declares-16383x16383.webp", lambda: webp_declaring(16_383, 16_383), REFUSE, "268 MP declared"),
        Case("bomb-36mp.gif", lambda: encode(Image.new("P", (6000, 6000), 0), "GIF"), ACCEPT, "36 MP GIF"),
        Case("bomb-19mb-palette.bmp", lambda: bmp_palette((4400, 4400)), ACCEPT, "19 MP 8-bit BMP near the byte limit"),
        Case("bomb-36mp.tif", lambda: tiff((6000, 6000)), REFUSE, "TIFF is not accepted (many codecs, many pages)"),
        Case("scan-bomb-3000.jpg", lambda: jpeg_scan_bomb(3000), REFUSE, "3000 progressive scans over 2048x2048"),
        # text-chunk bombs
        Case("ztxt-60x1mb.png", lambda: png(2000, 2000, before_idat=[_ztxt(1_000_000, i) for i in range(60)]), EITHER, "60 MB of text from 60 KB"),
        Case("ztxt-100mb.png", lambda: png(64, 64, before_idat=[_ztxt(100_000_000, 0)]), EITHER, "one zTXt inflating to 100 MB"),
        Case("itxt-15mb.png", lambda: png(64, 64, after_idat=[_itxt(15_000_000)]), EITHER, "15 MB iTXt after the pixels"),
        Case(
            "itxt-emoji-60x1mb.png",
            lambda: png(2000, 2000, after_idat=[_itxt(1_000_000, compressed=True, index=i) for i in range(60)]),
            EITHER, "60 M characters stored 4 bytes each: 240 MB from 60 KB",
        ),  # fmt: skip
        # header floods: Pillow parses these in Python, one block at a time
        Case("chunks-1.5m.png", lambda: png(64, 64, before_idat=[_chunk(b"abCd", b"") * 1_500_000]), REFUSE, "1.5 M empty chunks (was 6 s)"),
        Case("segments-4m.jpg", lambda: jpeg_with_segments(4_000_000), REFUSE, "4 M empty APP1 segments"),
        Case("extensions-6m.gif", lambda: gif_with_extensions(6_000_000), REFUSE, "6 M empty comment extensions"),
        Case("rle-1px-runs.bmp", lambda: bmp_rle8(2000, 2000), REFUSE, "RLE8 of 1-pixel runs, decoded in Python"),
        # many frames: only the first may ever be decoded
        Case("frames-3000.gif", lambda: gif_frames(3000), ACCEPT, "3000-frame GIF"),
        Case("frames-3000.webp", lambda: webp_frames(3000), ACCEPT, "3000-frame WebP"),
        Case("frames-3000-1000x1000.png", lambda: apng(1000, 1000, 3000), ACCEPT, "3000-frame APNG, 1 MP each"),
        Case("frames-100-2000x2000.gif", lambda: gif_frames(100, (2000, 2000)), ACCEPT, "100 frames of 4 MP"),
        # odd modes, large
        Case("mode-i16-36mp.png", lambda: png(6000, 6000, colour_type=0, bit_depth=16), ACCEPT, "I;16 (old: 288 MB float64 copy)"),
        Case("mode-rgb16-16mp.png", lambda: png(4000, 4000, colour_type=2, bit_depth=16), ACCEPT, "48-bit RGB"),
        Case("mode-la-36mp.png", lambda: png(6000, 6000, colour_type=4), EITHER, "LA (4 bytes a pixel in Pillow)"),
        Case(
            "mode-p-trns-36mp.png",
            lambda: png(6000, 6000, colour_type=3, row=bytes(range(256)) * 23 + bytes(112),
                        before_idat=[_chunk(b"PLTE", bytes(range(256)) * 3), _chunk(b"tRNS", bytes(range(256)))]),
            ACCEPT, "palette with transparency (old: 160 MB RGBA copy)",
        ),  # fmt: skip
        Case("mode-1bit-40mp.png", lambda: png(8000, 5000, colour_type=0, bit_depth=1, row=b"\xf0" * 1000), ACCEPT, "1-bit, 40 MP"),
        Case("mode-f.tif", lambda: encode(Image.new("F", (64, 64), 3.5), "TIFF"), REFUSE, "32-bit float (TIFF)"),
        # realistic worst cases at the 20 MB byte limit
        Case("noise-20mb.jpg", lambda: jpeg_noise(20 * 1024 * 1024), ACCEPT, "noise JPEG just under 20 MB", in_test=False),
        Case("noise-20mb-progressive.jpg", lambda: jpeg_noise(20 * 1024 * 1024, progressive=True), ACCEPT, "progressive noise JPEG under 20 MB", in_test=False),
        Case("noise-20mb.png", lambda: png_noise(20 * 1024 * 1024), ACCEPT, "noise PNG just under 20 MB", in_test=False),
        # truncated: the decoder allocates the whole image, then runs out of data
        Case("truncated-36mp.png", lambda: truncated(big_png(), 0.5), REFUSE, "half of a 36 MP PNG"),
        Case("truncated-40mp.jpg", lambda: truncated(jpeg_flat((7700, 5190)), 0.5), EITHER, "half of a 40 MP JPEG"),
        Case("truncated-header.webp", lambda: webp_declaring(4000, 4000)[:20], REFUSE, "cut inside the header"),
    ]


def write_corpus(directory: Path, names: Iterable[str] | None = None) -> list[tuple[Case, Path]]:
    """Write the corpus (or the named cases) into ``directory``; returns (case, path) pairs."""
    wanted = set(names) if names is not None else None
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for case in cases():
        if wanted is not None and case.name not in wanted:
            continue
        path = directory / case.name
        if not path.exists():
            path.write_bytes(case.make())
        written.append((case, path))
    return written


# --- decoding in a child process ----------------------------------------------------------------


def _status_mb(key: str) -> float:
    """A ``/proc/self/status`` figure (VmRSS, VmHWM, VmSize...) in MB (10^6 bytes)."""
    with open("/proc/self/status", encoding="ascii") as status:
        kib = int(re.search(rf"^{key}:\s+(\d+) kB", status.read(), re.M).group(1))  # type: ignore[union-attr]
    return kib * 1024 / 1e6


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak is this case's own."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
        clear_refs.write("5")


def decode_each(paths: Iterable[Path], decoder: ModuleType) -> Iterator[dict[str, object]]:
    """``decoder.load_image`` on each file: outcome, seconds and peak RSS above the start of the case."""
    for path in paths:
        _reset_peak()
        base = _status_mb("VmRSS")
        started = time.perf_counter()
        try:
            array = decoder.load_image(path)
            outcome, message = ("accepted" if array.shape == (224, 224, 3) and array.dtype == np.uint8 else "wrong-output"), ""
        except decoder.ImageDecodeError as exc:
            outcome, message = "refused", str(exc)
        except BaseException as exc:
            outcome, message = f"crashed:{type(exc).__name__}", str(exc)[:300]
        seconds = time.perf_counter() - started
        array = None
        yield {"name": path.name, "outcome": outcome, "message": message, "seconds": round(seconds, 4),
               "peak_extra_mb": round(_status_mb("VmHWM") - base, 1)}  # fmt: skip


def _load_decoder(path: str | None) -> ModuleType:
    """recommender.images, or a copy of it at ``path`` (to measure an older version)."""
    if path is None:
        from recommender import images

        return images
    spec = importlib.util.spec_from_file_location("decoder_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decode_in_child(
    paths: Iterable[Path], *, cap_mb: float, timeout: float, decoder: str | None = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, Any]]]:
    """Run :func:`main` on ``paths`` in a fresh process: its outcome, and each file's result by name.

    Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds.
    """
    command = [sys.executable, "-m", "standin_bot_api.hostile_photos", "--cap-mb", str(cap_mb), *map(str, paths)]
    if decoder:
        command += ["--decoder", decoder]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # no thread stacks in the cap
    child = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    records = (json.loads(line) for line in child.stdout.splitlines() if line.startswith("{"))
    return child, {record["name"]: record for record in records if "name" in record}


def main(argv: list[str] | None = None) -> int:
    """Child process: decode each file under an address-space cap, one JSON line per file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--cap-mb", type=float, help="address space allowed above what the imports use")
    parser.add_argument("--decoder", help="decode with this copy of recommender/images.py instead")
    args = parser.parse_args(argv)
    decoder = _load_decoder(args.decoder)
    print(json.dumps({"baseline_rss_mb": _status_mb("VmRSS"), "baseline_vm_mb": _status_mb("VmSize")}), flush=True)
    if args.cap_mb is not None:
        cap = int((_status_mb("VmSize") + args.cap_mb) * 1e6)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    for result in decode_each(args.paths, decoder):
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
