"""recommender/shopper_photos.py: deterministic shopper-like photos that really show the product."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from recommender.images import load_image
from recommender.shopper_photos import (
    BACKGROUND_KINDS,
    BACKGROUND_MAX,
    DEFAULT_SIZE,
    background,
    product_mask,
    rng_for,
    shopper_image,
    shopper_photo,
)

RED = (200, 20, 30)


def catalogue_photo(fill: tuple[int, int, int] = RED, size: tuple[int, int] = (60, 80)) -> Image.Image:
    """A studio photo: a saturated garment-like shape centred on white, like the catalogue's."""
    image = Image.new("RGB", size, (255, 255, 255))
    width, height = size
    ImageDraw.Draw(image).rectangle([width * 0.2, height * 0.15, width * 0.8, height * 0.85], fill=fill)
    return image


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return np.asarray(image.convert("RGB"))


def red_share(pixels: np.ndarray) -> float:
    rgb = pixels.astype(np.int32)
    red = (rgb[..., 0] > 1.8 * rgb[..., 1]) & (rgb[..., 0] > 1.8 * rgb[..., 2]) & (rgb[..., 0] > 60)
    return float(red.mean())


def test_same_seed_same_bytes_different_seed_different_photo():
    photo = catalogue_photo()
    first = shopper_photo(photo, np.random.default_rng(7))
    assert shopper_photo(photo, np.random.default_rng(7)) == first
    assert shopper_photo(photo, np.random.default_rng(8)) != first
    assert shopper_photo(photo, rng_for(3, "1537")) == shopper_photo(photo, rng_for(3, "1537"))
    assert shopper_photo(photo, rng_for(3, "1537")) != shopper_photo(photo, rng_for(3, "1538"))
    assert shopper_photo(photo, rng_for(3, "1537")) != shopper_photo(photo, rng_for(4, "1537"))


def test_an_array_a_pillow_image_and_a_file_give_the_same_photo(tmp_path):
    photo = catalogue_photo()
    path = tmp_path / "p.png"
    photo.save(path)
    expected = shopper_photo(photo, np.random.default_rng(1))
    assert shopper_photo(np.asarray(photo), np.random.default_rng(1)) == expected
    assert shopper_photo(path, np.random.default_rng(1)) == expected


def test_output_is_a_phone_sized_jpeg_the_bot_can_decode():
    data = shopper_photo(catalogue_photo(), np.random.default_rng(0))
    assert decoded(data).shape == (DEFAULT_SIZE[1], DEFAULT_SIZE[0], 3) == (1280, 960, 3)
    assert decoded(shopper_photo(catalogue_photo(), np.random.default_rng(0), size=(300, 200))).shape == (200, 300, 3)
    assert load_image(data, 224).shape == (224, 224, 3)


@pytest.mark.parametrize("seed", range(12))
def test_the_product_is_in_the_photo_on_a_background_that_is_not_white(seed):
    pixels = decoded(shopper_photo(catalogue_photo(), np.random.default_rng(seed)))
    # The garment covers 60 % x 70 % of its photo and is scaled to 40-85 % of the frame's height.
    assert 0.05 < red_share(pixels) < 0.7
    white = (pixels.min(axis=2) >= 245).mean()
    assert white < 0.01  # neither the studio background nor a white backdrop survived


def test_the_product_moves_and_changes_size_between_seeds():
    boxes = []
    for seed in range(8):
        pixels = decoded(shopper_photo(catalogue_photo(), np.random.default_rng(seed)))
        rgb = pixels.astype(np.int32)
        ys, xs = np.nonzero((rgb[..., 0] > 1.8 * rgb[..., 1]) & (rgb[..., 0] > 1.8 * rgb[..., 2]) & (rgb[..., 0] > 60))
        boxes.append((np.median(xs), np.median(ys), np.percentile(ys, 95) - np.percentile(ys, 5)))
    centres_x, centres_y, heights = np.array(boxes).T
    assert np.ptp(centres_x) > 100 and np.ptp(centres_y) > 100 and np.ptp(heights) > 100


def test_mask_is_the_studio_background_that_touches_the_border():
    image = Image.new("RGB", (60, 80), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle([10, 10, 49, 69], fill=(20, 20, 20))
    draw.rectangle([20, 25, 39, 54], fill=(255, 255, 255))  # a white print inside the garment
    mask = np.asarray(product_mask(image))
    assert mask[0, 0] == 0 and mask[79, 59] == 0  # studio background
    assert mask[40, 30] == 255  # the white print is product: it does not touch the border
    assert mask[15, 15] > 200
    assert 0.4 < (mask > 127).mean() < 0.6  # 40 x 60 of 60 x 80


def test_a_photo_without_studio_background_is_pasted_whole():
    full = np.asarray(product_mask(Image.new("RGB", (60, 80), (120, 60, 30))))
    assert (full == 255).all()


@pytest.mark.parametrize("kind", [kind for kind in BACKGROUND_KINDS if kind != "catalogue"])
def test_every_background_is_textured_and_below_studio_white(kind):
    pixels = np.asarray(background(kind, np.random.default_rng(5), (240, 320)))
    assert pixels.shape == (320, 240, 3)
    assert pixels.min(axis=2).max() <= BACKGROUND_MAX
    assert pixels.std() > 3  # not a flat colour
    assert not np.array_equal(pixels, np.asarray(background(kind, np.random.default_rng(6), (240, 320))))


def test_a_catalogue_background_is_a_crop_of_the_other_photo():
    other = catalogue_photo(fill=(20, 40, 210))
    pixels = np.asarray(background("catalogue", np.random.default_rng(0), (240, 320), pool_photo=other)).astype(np.int32)
    assert ((pixels[..., 2] > 2 * pixels[..., 0]) & (pixels[..., 2] > 100)).mean() > 0.5  # the blue garment fills it
    with pytest.raises(ValueError):
        background("catalogue", np.random.default_rng(0), (240, 320))
    with pytest.raises(ValueError):
        background("marble", np.random.default_rng(0), (240, 320))


def test_a_pool_lends_backgrounds_but_never_the_query_itself(tmp_path):
    blue, query = tmp_path / "blue.png", tmp_path / "query.png"
    catalogue_photo(fill=(20, 40, 210)).save(blue)
    catalogue_photo().save(query)

    def blue_share(pixels: np.ndarray) -> float:
        rgb = pixels.astype(np.int32)
        return float(((rgb[..., 2] > 2 * rgb[..., 0]) & (rgb[..., 2] > 100)).mean())

    with_pool = [blue_share(np.asarray(shopper_image(query, rng_for(0, str(i)), size=(120, 160), background_pool=[blue], avoid=query)))
                 for i in range(20)]
    assert max(with_pool) > 0.3  # some photos stand on the other garment
    # The query's own file is in the pool but gone from disk: opening it would raise.
    photo = np.asarray(Image.open(query).convert("RGB"))
    query.unlink()
    for i in range(20):
        shopper_image(photo, rng_for(0, str(i)), size=(120, 160), background_pool=[query], avoid=tmp_path / "query.png")
    with pytest.raises(FileNotFoundError):  # without ``avoid`` it is drawn (the same seeds draw a catalogue background)
        for i in range(20):
            shopper_image(photo, rng_for(0, str(i)), size=(120, 160), background_pool=[query])


def test_an_array_that_is_not_rgb_is_refused():
    with pytest.raises(ValueError):
        shopper_photo(np.zeros((10, 10), np.uint8), np.random.default_rng(0))
