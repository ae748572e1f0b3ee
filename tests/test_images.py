"""recommender/images.py: every supported format and mode becomes the same canonical RGB model input,
and anything unusable raises ImageDecodeError with a message fit for a user (nothing else escapes)."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from recommender.images import ImageDecodeError, decode_image, load_image
from tests.recommender_helpers import encode

RED = (220, 20, 30)
BLUE = (20, 40, 210)


def close(pixel, expected, tolerance: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, expected))


def assert_model_input(array: np.ndarray) -> None:
    assert array.shape == (224, 224, 3)
    assert array.dtype == np.uint8


# --- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, options",
    [("JPEG", {"quality": 95}), ("PNG", {}), ("WEBP", {"quality": 95}), ("GIF", {}), ("BMP", {})],
)
def test_every_supported_format_decodes(fmt, options):
    data = encode(Image.new("RGB", (64, 64), RED), fmt, **options)
    array = load_image(data)
    assert_model_input(array)
    assert close(array[112, 112], RED), array[112, 112]
    assert close(array[0, 0], RED) and close(array[223, 223], RED)  # square: no padding


@pytest.mark.parametrize("fmt, options", [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True})])
def test_animations_use_their_first_frame(fmt, options):
    frames = [Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2  # really animated (APNG for PNG)
    assert close(load_image(data)[112, 112], RED)


def test_exif_orientation_is_applied():
    # Stored landscape 40x20: left half red, right half blue. Orientation 6 = "rotate 90 degrees
    # clockwise to display", so the upright photo is portrait 20x40 with red on top.
    stored = Image.new("RGB", (40, 20), RED)
    stored.paste(BLUE, (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored, "JPEG", quality=95, exif=exif.tobytes())

    upright = decode_image(data)
    assert upright.size == (20, 40)
    assert close(upright.getpixel((10, 5)), RED) and close(upright.getpixel((10, 35)), BLUE)

    array = load_image(data)  # portrait → white bars left and right
    assert close(array[40, 112], RED) and close(array[184, 112], BLUE)
    assert close(array[112, 10], (255, 255, 255), 2) and close(array[112, 213], (255, 255, 255), 2)


def test_exif_orientation_is_applied_to_large_reduced_photos():
    """A phone photo is reduced (DCT scale, box filter) before it is turned upright."""
    stored = Image.new("RGB", (4000, 2000), RED)
    stored.paste(BLUE, (2000, 0, 4000, 2000))
    exif = Image.Exif()
    exif[0x0112] = 6
    for fmt in ("JPEG", "PNG"):
        array = load_image(encode(stored, fmt, exif=exif.tobytes()))
        assert close(array[40, 112], RED) and close(array[184, 112], BLUE), fmt
        assert close(array[112, 10], (255, 255, 255), 2), fmt


# --- modes ------------------------------------------------------------------------------------


def _palette_image(transparent_index: int | None) -> bytes:
    image = Image.new("P", (16, 16), 0)
    image.putpalette([*RED, *BLUE] + [0] * (256 * 3 - 6))
    image.paste(1, (8, 0, 16, 16))  # right half blue
    options = {"transparency": transparent_index} if transparent_index is not None else {}
    return encode(image, "PNG", **options)


def _i16_image() -> bytes:
    values = np.array([[0, 32768], [65535, 65535]], dtype=np.uint16).repeat(8, 0).repeat(8, 1)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    data = encode(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"  # really stored as 16-bit
    return data


@pytest.mark.parametrize(
    "name, data, left, right",
    [
        ("P", _palette_image(None), RED, BLUE),
        ("P+transparency", _palette_image(0), (255, 255, 255), BLUE),  # transparent red → white
        ("L", encode(Image.new("L", (16, 16), 90), "PNG"), (90, 90, 90), (90, 90, 90)),
        ("LA transparent", encode(Image.new("LA", (16, 16), (0, 0)), "PNG"), (255, 255, 255), (255, 255, 255)),
        ("LA opaque", encode(Image.new("LA", (16, 16), (40, 255)), "PNG"), (40, 40, 40), (40, 40, 40)),
        ("CMYK", encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95), (255, 0, 0), (255, 0, 0)),
        ("RGBA transparent", encode(Image.new("RGBA", (16, 16), (200, 0, 0, 0)), "PNG"), (255, 255, 255), (255, 255, 255)),
        ("RGBA opaque", encode(Image.new("RGBA", (16, 16), (*RED, 255)), "PNG"), RED, RED),
        ("RGBA WebP", encode(Image.new("RGBA", (16, 16), (0, 0, 200, 0)), "WEBP", lossless=True), (255, 255, 255), (255, 255, 255)),
        ("1-bit", encode(Image.new("1", (16, 16), 0), "BMP"), (0, 0, 0), (0, 0, 0)),
    ],
)
def test_every_mode_becomes_rgb(name, data, left, right):
    image = decode_image(data)
    assert image.mode == "RGB"
    assert close(image.getpixel((2, 8)), left), (name, image.getpixel((2, 8)))
    assert close(image.getpixel((13, 8)), right), (name, image.getpixel((13, 8)))
    assert_model_input(load_image(data))


def test_16_bit_grayscale_is_scaled_not_clipped():
    image = decode_image(_i16_image())
    assert image.mode == "RGB"
    assert image.getpixel((2, 2)) == (0, 0, 0)
    assert close(image.getpixel((12, 2)), (128, 128, 128), 2)  # 32768 of 65535 → mid grey, not white
    assert image.getpixel((2, 12)) == (255, 255, 255)


def test_partial_alpha_is_composited_on_white():
    image = decode_image(encode(Image.new("RGBA", (8, 8), (0, 0, 0, 128)), "PNG"))
    assert close(image.getpixel((4, 4)), (127, 127, 127), 2)


# --- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(100, 50), (50, 100)])
def test_non_square_images_are_padded_with_white(size):
    array = load_image(encode(Image.new("RGB", size, (0, 0, 0)), "PNG"))
    assert_model_input(array)
    assert close(array[112, 112], (0, 0, 0), 2)
    if size[0] > size[1]:  # landscape: white bars above and below, black across the middle
        bars, inside = [array[5, 112], array[218, 112]], [array[112, 5], array[112, 218]]
    else:  # portrait: white bars left and right
        bars, inside = [array[112, 5], array[112, 218]], [array[5, 112], array[218, 112]]
    assert all(close(pixel, (255, 255, 255), 2) for pixel in bars)
    assert all(close(pixel, (0, 0, 0), 2) for pixel in inside)


def _photo_like(size: tuple[int, int]) -> Image.Image:
    """Smooth colour fields with edges, at ``size`` (upscaled from a small random picture)."""
    small = np.random.default_rng(7).integers(0, 256, (12, 9, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def _padded_then_resized(image: Image.Image, size: int = 224) -> np.ndarray:
    """The reference pipeline: pad the full-size image to a white square, then one bilinear resize."""
    side = max(image.size)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return np.asarray(canvas.resize((size, size), Image.Resampling.BILINEAR))


@pytest.mark.parametrize("size", [(3000, 2000), (1170, 2532), (8000, 400)])
def test_large_images_are_reduced_first_with_the_same_result(size):
    """Reducing before padding (no full-size square canvas) changes the model input imperceptibly."""
    image = _photo_like(size)
    difference = np.abs(load_image(encode(image, "PNG")).astype(int) - _padded_then_resized(image).astype(int))
    assert difference.mean() < 0.6 and np.percentile(difference, 99) <= 8, (difference.mean(), difference.max())


@pytest.mark.parametrize("size", [(400, 20), (20, 400)])
def test_aspect_ratio_up_to_20_to_1_is_accepted(size):
    assert_model_input(load_image(encode(Image.new("RGB", size, RED), "PNG")))


@pytest.mark.parametrize("size", [(421, 20), (20, 421), (100_000, 1)])
def test_extreme_aspect_ratios_are_refused(size):
    with pytest.raises(ImageDecodeError) as exc_info:
        load_image(encode(Image.new("L", size, 0), "PNG"))
    assert_human_error(exc_info, "long and thin", f"{size[0]}x{size[1]}")


def test_size_and_sources(tmp_path):
    data = encode(Image.new("RGB", (30, 30), RED), "PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    from_bytes = load_image(data, 96)
    assert from_bytes.shape == (96, 96, 3)
    np.testing.assert_array_equal(load_image(path, 96), from_bytes)
    np.testing.assert_array_equal(load_image(str(path), 96), from_bytes)
    np.testing.assert_array_equal(load_image(io.BytesIO(data), 96), from_bytes)
    np.testing.assert_array_equal(load_image(bytearray(data), 96), from_bytes)


# --- errors -----------------------------------------------------------------------------------


def assert_human_error(exc_info: pytest.ExceptionInfo[ImageDecodeError], *words: str) -> None:
    message = str(exc_info.value)
    assert message and message[0].isupper() and message.endswith("."), message
    assert "Error" not in message and "errno" not in message.lower(), message
    for word in words:
        assert word in message.lower(), message


def _real_jpeg() -> bytes:
    rng = np.random.default_rng(1)
    return encode(Image.fromarray(rng.integers(0, 256, (80, 60, 3), dtype=np.uint8)), "JPEG", quality=90)


@pytest.mark.parametrize("cut", [2, 20, 150, 400, -200], ids=lambda cut: f"cut{cut}")
def test_truncated_jpeg(cut):
    data = _real_jpeg()
    with pytest.raises(ImageDecodeError) as exc_info:
        load_image(data[:cut])
    assert_human_error(exc_info)


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", ["empty"]),
        (bytes(random.Random(3).randrange(256) for _ in range(5000)), ["not an image"]),
        (b"GIF89a" + b"\x00" * 10, []),
        (b"Just some notes about the collection\n" * 20, ["not an image"]),
    ],
    ids=["empty", "random-bytes", "gif-header-only", "text"],
)
def test_not_images(data, words):
    with pytest.raises(ImageDecodeError) as exc_info:
        load_image(data)
    assert_human_error(exc_info, *words)


def test_text_file_and_missing_file(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo\n", encoding="utf-8")
    with pytest.raises(ImageDecodeError) as exc_info:
        load_image(text)
    assert_human_error(exc_info, "not an image")
    with pytest.raises(ImageDecodeError) as exc_info:
        load_image(tmp_path / "missing.jpg")
    assert_human_error(exc_info, "missing.jpg")
    with pytest.raises(ImageDecodeError):
        load_image(tmp_path)  # a directory


def test_pixel_limit():
    data = encode(Image.new("RGB", (200, 100), RED), "PNG")
    load_image(data, max_pixels=20_000)  # exactly at the limit is fine
    with pytest.raises(ImageDecodeError) as exc_info:
        load_image(data, max_pixels=19_999)
    assert_human_error(exc_info, "too large", "200x100")


def test_byte_limit(tmp_path):
    data = encode(Image.new("RGB", (64, 64), RED), "BMP")
    path = tmp_path / "big.bmp"
    path.write_bytes(data)
    load_image(data, max_bytes=len(data))
    for source in (data, path, io.BytesIO(data)):
        with pytest.raises(ImageDecodeError) as exc_info:
            load_image(source, max_bytes=len(data) - 1)
        assert_human_error(exc_info, "too big")


@pytest.mark.parametrize("fmt", ["PPM", "TIFF", "ICO", "PCX"])
def test_unsupported_formats_are_refused_naming_the_supported_ones(fmt):
    """Only JPEG, PNG, WebP, GIF and BMP are opened at all (TIFF's many codecs are left out)."""
    data = encode(Image.new("RGB", (16, 16), RED), fmt)
    with pytest.raises(ImageDecodeError) as exc_info:
        load_image(data)
    assert_human_error(exc_info, "not an image i can read", "jpeg", "png")


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about corrupt EXIF/TIFF tags
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_damaged_files_raise_only_image_decode_error(fmt):
    """Seeded corruption (truncation, flipped bytes): the result is an image or ImageDecodeError."""
    rng = random.Random(fmt)
    source = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    data = encode(source, fmt)
    decoded = failed = 0
    for _ in range(60):
        damaged = bytearray(data)
        if rng.random() < 0.4:
            damaged = damaged[: rng.randrange(1, len(damaged))]
        else:
            for _ in range(rng.randint(1, 12)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        try:
            assert_model_input(load_image(bytes(damaged), max_pixels=250_000))  # keep corrupt headers cheap
            decoded += 1
        except ImageDecodeError as exc:
            assert str(exc)
            failed += 1
    assert failed > 0  # the corruption did hit something
