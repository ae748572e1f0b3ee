"""The reader: catalogue photos → decoded batches; a photo that cannot be used is skipped, never fatal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recommender import build_index, colour, load_catalogue
from recommender.confinement import ImageConfinement
from recommender.images import load_image
from recommender.reader import decode_batch, read_batches
from tests.build_helpers import assert_index_is_fresh_extraction, make_shop


@pytest.mark.parametrize("failure", [MemoryError(), RuntimeError("decoder bug")], ids=["MemoryError", "RuntimeError"])
def test_a_photo_whose_decoding_fails_in_any_way_is_skipped(tmp_path, monkeypatch, mobilenet_random, failure):
    """Whatever the decoder raises for one photo (a MemoryError included), that photo is skipped and the build goes on."""
    import recommender.reader

    images, styles = make_shop(tmp_path / "shop", count=4)
    real_load_image = recommender.reader.load_image

    def load_image_failing_on_photo_2(path, *args, **kwargs):
        if Path(path).name == "2.png":
            raise failure
        return real_load_image(path, *args, **kwargs)

    monkeypatch.setattr(recommender.reader, "load_image", load_image_failing_on_photo_2)
    out = tmp_path / "index"

    report = build_index(load_catalogue(images, styles), out, mobilenet_random, batch_size=2)

    assert (report.count, report.extracted) == (3, 3)
    assert [item_id for item_id, _ in report.skipped] == ["2"]
    assert type(failure).__name__ in report.skipped[0][1] and "2.png" in report.skipped[0][1]
    assert "2," in (out / "skipped.csv").read_text(encoding="utf-8")
    monkeypatch.undo()
    assert_index_is_fresh_extraction(out, mobilenet_random, ["1", "3", "4"])


def test_unusable_photos_are_skipped_with_a_reason_and_the_rest_decoded(tmp_path):
    images, _ = make_shop(tmp_path / "shop", count=2)
    whole = (images / "1.png").read_bytes()
    (images / "9001.png").write_bytes(whole[: len(whole) // 3])  # truncated
    (images / "9002.jpg").write_text("this is not a photo\n", encoding="utf-8")
    (images / "9003.png").write_bytes(b"")
    (tmp_path / "outside.png").write_bytes(whole)
    (images / "9004.png").symlink_to(tmp_path / "outside.png")
    catalogue = load_catalogue(images)

    batch = decode_batch(catalogue, catalogue.items, 32, ImageConfinement(images))

    assert [item.id for item in batch.items] == ["1", "2"]
    assert batch.pixels.dtype == np.uint8 and batch.pixels.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(batch.pixels[1], load_image(images / "2.png", 32))
    np.testing.assert_array_equal(batch.colours, colour.colour_histograms(batch.pixels))
    reasons = dict(batch.skipped)
    assert sorted(reasons) == ["9001", "9002", "9003", "9004"]
    assert reasons["9002"].startswith("9002.jpg: This file is not an image")
    assert reasons["9004"].startswith(f"9004.png: links to {tmp_path / 'outside.png'}, outside the photos folder {images}")


def test_a_batch_with_nothing_readable_is_empty_not_an_error(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "1.jpg").write_bytes(b"junk")
    catalogue = load_catalogue(images)

    batch = decode_batch(catalogue, catalogue.items, 32, ImageConfinement(images))

    assert batch.items == [] and [item_id for item_id, _ in batch.skipped] == ["1"]
    assert batch.pixels.shape == (0, 32, 32, 3) and batch.colours.shape == (0, colour.DIM)


def test_batches_come_in_catalogue_order(tmp_path):
    images, _ = make_shop(tmp_path / "shop", count=5)
    catalogue = load_catalogue(images)

    batches = list(read_batches(catalogue, catalogue.items, 2, 32))

    assert [[item.id for item in batch.items] for batch in batches] == [["1", "2"], ["3", "4"], ["5"]]
    for batch in batches:
        for item, pixels in zip(batch.items, batch.pixels):
            np.testing.assert_array_equal(pixels, load_image(images / item.image, 32))
    assert list(read_batches(catalogue, [], 2, 32)) == []
