"""Catalogue photos made acceptable to Telegram (``bot/telegram_photos.py``): originals sent as they are
when Telegram takes them, conforming JPEG copies made once otherwise, damaged photos refused."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from bot.telegram_photos import MAX_PHOTO_BYTES, PhotoUpload, UnusablePhoto, conforms, make_conforming_jpeg, photo_for_upload

COPY_NAME = re.compile(r"[0-9a-f]{32}-\d+-\d+\.jpg")


def jpeg_file(path: Path, width: int = 400, height: int = 600, color: tuple[int, int, int] = (200, 40, 40)) -> Path:
    Image.new("RGB", (width, height), color).save(path, "JPEG", quality=90)
    return path


@pytest.mark.parametrize(
    ("width", "height", "size", "accepted"),
    [
        (400, 600, 50_000, True),
        (5000, 5000, 50_000, True),  # width + height at the limit
        (5001, 5000, 50_000, False),
        (2000, 100, 50_000, True),  # 20:1
        (2001, 100, 50_000, False),
        (400, 600, MAX_PHOTO_BYTES + 1, False),
        (0, 600, 50_000, False),
    ],
)
def test_telegrams_photo_rules(width: int, height: int, size: int, accepted: bool) -> None:
    assert conforms(width, height, size) is accepted


def test_conforming_copies_of_other_formats_and_slivers(tmp_path: Path) -> None:
    webp = tmp_path / "shoe.webp"
    Image.new("RGBA", (300, 200), (0, 0, 0, 0)).save(webp, "WEBP")
    sliver = tmp_path / "belt.png"
    Image.new("L", (1, 5000), 80).save(sliver)
    fine = jpeg_file(tmp_path / "fine.jpg")
    assert photo_for_upload("fine", fine, tmp_path / "copies") == PhotoUpload(fine.read_bytes(), "photo.jpg", False)
    for source, size in ((webp, (300, 200)), (sliver, (128, 2560))):
        upload = photo_for_upload(source.stem, source, tmp_path / "copies")
        with Image.open(io.BytesIO(upload.data)) as made:
            assert upload.converted and (made.format, made.size) == ("JPEG", size)
            if source is webp:  # transparency becomes white, as the shopper would see it
                assert made.convert("RGB").getpixel((150, 100)) == (255, 255, 255)
    assert len(list((tmp_path / "copies").iterdir())) == 2


def test_a_banner_is_shrunk_then_padded_to_twenty_to_one(tmp_path: Path) -> None:
    banner = jpeg_file(tmp_path / "banner.jpg", 12000, 300)
    with Image.open(io.BytesIO(make_conforming_jpeg(banner))) as made:
        assert made.size == (2560, 128)


def test_a_copy_is_made_once_and_named_after_the_product_hash(tmp_path: Path) -> None:
    banner = jpeg_file(tmp_path / "banner.jpg", 12000, 300)
    copies = tmp_path / "copies"
    first = photo_for_upload("../../etc/passwd", banner, copies)  # a hostile product id names nothing
    (kept,) = copies.iterdir()
    assert COPY_NAME.fullmatch(kept.name) and first.converted
    stamp = kept.stat().st_mtime_ns
    assert photo_for_upload("../../etc/passwd", banner, copies) == first and kept.stat().st_mtime_ns == stamp
    jpeg_file(banner, 12000, 310)  # the photo changed: a new copy replaces the old one
    photo_for_upload("../../etc/passwd", banner, copies)
    assert [p.name for p in copies.iterdir()] != [kept.name] and len(list(copies.iterdir())) == 1


def test_a_damaged_photo_is_unusable(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((800, 800), 60).convert("RGB").save(buffer, "JPEG")
    damaged = tmp_path / "bad.jpg"
    damaged.write_bytes(buffer.getvalue()[: buffer.tell() // 2])
    with pytest.raises(UnusablePhoto):
        photo_for_upload("bad", damaged, tmp_path / "copies")
