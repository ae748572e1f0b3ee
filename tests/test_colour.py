"""recommender/colour.py: the product's colour, not its white background, as a unit histogram."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from recommender.colour import (
    BORDER_METHOD,
    DEFAULT_METHOD,
    DIM,
    METHODS,
    STEP,
    WHITE_THRESHOLD,
    WHITE_THRESHOLD_METHOD,
    background_mask,
    colour_histogram,
    colour_histograms,
    describe,
    method_of,
    srgb_to_lab,
)
from tests.recommender_helpers import FASHION_DIR

needs_fashion = pytest.mark.skipif(not (FASHION_DIR / "styles.csv").exists(), reason="needs ../shared/data/fashion-products-4k")


def fashion_photos(count: int) -> list[Path]:
    """``count`` catalogue photos spread over the 4k set (every 97th row)."""
    with open(FASHION_DIR / "styles.csv", encoding="utf-8") as styles:
        ids = [row["id"] for row in csv.DictReader(styles)]
    return [FASHION_DIR / "images" / f"{item_id}.jpg" for item_id in ids[::97][:count]]


RED, NAVY, WHITE = (200, 20, 30), (20, 30, 110), (255, 255, 255)


def product_on_white(colour: tuple[int, int, int], size: int = 224, side: int = 100) -> np.ndarray:
    """A ``side`` x ``side`` square of ``colour`` in the middle of a white studio photo."""
    image = np.full((size, size, 3), 255, np.uint8)
    start = (size - side) // 2
    image[start : start + side, start : start + side] = colour
    return image


@pytest.mark.parametrize(
    "rgb, lab",
    [((255, 255, 255), (100.0, 0.0, 0.0)), ((0, 0, 0), (0.0, 0.0, 0.0)), ((255, 0, 0), (53.24, 80.09, 67.20)),
     ((0, 0, 255), (32.30, 79.19, -107.86)), ((128, 128, 128), (53.59, 0.0, 0.0))],
)  # fmt: skip
def test_srgb_to_lab_matches_reference_values(rgb, lab):
    np.testing.assert_allclose(srgb_to_lab(np.array([rgb], np.uint8))[0], lab, atol=0.05)


def test_histogram_is_a_unit_vector_of_dim_bins():
    histogram = colour_histogram(product_on_white(RED))
    assert histogram.shape == (DIM,) and histogram.dtype == np.float32
    assert np.linalg.norm(histogram) == pytest.approx(1.0, abs=1e-6)
    assert np.all(histogram >= 0)


def test_the_white_background_is_ignored():
    # The same red product, small or large on white: the same histogram (one bin).
    small, large = colour_histogram(product_on_white(RED, side=40)), colour_histogram(product_on_white(RED, side=180))
    np.testing.assert_allclose(small, large, atol=1e-6)
    assert np.count_nonzero(small) == 1


def test_different_colours_have_different_histograms():
    red, navy = colour_histogram(product_on_white(RED)), colour_histogram(product_on_white(NAVY))
    assert float(red @ navy) == pytest.approx(0.0, abs=1e-6)  # disjoint bins
    half = product_on_white(RED)
    half[:, 112:] = np.where(half[:, 112:] == 255, 255, np.array(NAVY, np.uint8))  # right half of the product navy
    mixed = colour_histogram(half)
    assert float(mixed @ red) == pytest.approx(float(mixed @ navy), abs=1e-6) and float(mixed @ red) > 0.5


def test_a_white_product_on_white_uses_every_pixel():
    white = colour_histogram(np.full((224, 224, 3), 255, np.uint8))
    assert np.linalg.norm(white) == pytest.approx(1.0, abs=1e-6) and np.count_nonzero(white) == 1
    near_white = np.full((224, 224, 3), WHITE_THRESHOLD + 1, np.uint8)  # counts as background too
    np.testing.assert_allclose(colour_histogram(near_white), white, atol=1e-6)


def test_histograms_of_a_batch_stack_in_order():
    images = np.stack([product_on_white(RED), product_on_white(NAVY)])
    batch = colour_histograms(images)
    assert batch.shape == (2, DIM) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[1], colour_histogram(images[1]), atol=1e-7)
    assert colour_histograms(images[:0]).shape == (0, DIM)


# --- which pixels are the product: the border-background estimate and the recorded method -----------------------------

TEXTURE_SEEDS = range(12)


def white_threshold_background(image: np.ndarray) -> np.ndarray:
    """The old rule's background on the histogram's pixel grid."""
    return image[::STEP, ::STEP].min(axis=-1) > WHITE_THRESHOLD


def shirt_on_white(size: int = 224) -> np.ndarray:
    """A red "shirt" with navy sleeves, a white print inside and a light-grey collar touching the white."""
    image = product_on_white(RED, size=size, side=110)
    image[57:90, 40:57] = NAVY
    image[57:90, 167:184] = NAVY
    image[100:120, 100:124] = WHITE
    image[57:63, 95:129] = (232, 232, 232)
    return image


def test_on_a_studio_photo_the_mask_is_the_white_threshold_rule():
    image = shirt_on_white()
    background, old = background_mask(image), white_threshold_background(image)
    assert np.mean(background == old) > 0.98
    # Where they differ, it is the white print inside the product: it does not reach the border.
    assert not background[50:60, 50:62].any() and old[50:60, 50:62].all()
    assert np.all(background <= old)


def test_the_light_grey_collar_is_not_taken_for_background():
    image = shirt_on_white()
    assert not background_mask(image)[29:32, 48:64].any()


def frame_share(mask: np.ndarray, width: int = 3) -> float:
    frame = np.ones(mask.shape, dtype=bool)
    frame[width:-width, width:-width] = False
    return float(mask[frame].mean())


@needs_fashion
def test_on_real_white_studio_photos_the_mask_is_the_white_threshold_rule():
    from recommender.images import load_image

    images = [load_image(path) for path in fashion_photos(40)]
    agreement = {i: float(np.mean(background_mask(image) == white_threshold_background(image))) for i, image in enumerate(images)}
    white_studio = [i for i, image in enumerate(images) if frame_share(white_threshold_background(image)) > 0.95]
    assert len(white_studio) >= 20
    assert np.median([agreement[i] for i in white_studio]) > 0.995 and min(agreement[i] for i in white_studio) > 0.95
    # Grey backdrops and models cut by the frame are where the two differ: the old rule kept them.
    assert np.median(list(agreement.values())) > 0.99


def test_a_textured_background_is_background():
    rng = np.random.default_rng(0)
    carpet = (np.array([120, 90, 60]) + rng.normal(0, 12, (224, 224, 3))).clip(0, 255).astype(np.uint8)
    carpet[62:162, 62:162] = NAVY
    background = background_mask(carpet)
    assert background.mean() > 0.75 - 0.05 and not background[35:75, 35:75].any()
    navy = colour_histogram(product_on_white(NAVY), BORDER_METHOD)
    assert float(colour_histogram(carpet, BORDER_METHOD) @ navy) > 0.99
    assert float(colour_histogram(carpet, WHITE_THRESHOLD_METHOD) @ navy) < 0.7  # the old rule counts the carpet


def shopper_versions(studio: np.ndarray, key: str) -> list[np.ndarray]:
    from recommender.images import load_image
    from recommender.shopper_photos import rng_for, shopper_photo

    return [load_image(shopper_photo(studio, rng_for(seed, key), size=(480, 640))) for seed in TEXTURE_SEEDS]


def agreement(method: str, studio: np.ndarray, shots: list[np.ndarray]) -> float:
    """Mean cosine between the studio photo's histogram and its shopper photos' histograms."""
    reference = colour_histogram(studio, method)
    return float(np.mean([colour_histogram(shot, method) @ reference for shot in shots]))


@pytest.mark.parametrize("kind", ["noise", "gradient", "stripes", "room"])
def test_on_a_product_composited_onto_a_texture_the_histogram_stays_the_studio_one(kind):
    from PIL import Image

    from recommender.shopper_photos import background, product_mask, rng_for

    studio = shirt_on_white()
    for seed in range(3):  # the product pasted off-centre on a background of this kind, no light or camera change
        rng = rng_for(seed, kind)
        canvas = background(kind, rng, (300, 300))
        canvas.paste(Image.fromarray(studio), (int(rng.integers(0, 76)), int(rng.integers(0, 76))), product_mask(studio))
        shot = np.asarray(canvas.crop((38, 38, 262, 262)))
        new = float(colour_histogram(shot, BORDER_METHOD) @ colour_histogram(studio, BORDER_METHOD))
        old = float(colour_histogram(shot, WHITE_THRESHOLD_METHOD) @ colour_histogram(studio, WHITE_THRESHOLD_METHOD))
        assert new > 0.75 and new > old + 0.3, (seed, new, old)


def test_on_shopper_photos_of_a_product_the_histogram_is_closer_to_the_studio_one():
    studio = shirt_on_white()
    shots = shopper_versions(studio, "shirt")  # light, blur and JPEG move colours between bins: both methods lose
    new, old = agreement(BORDER_METHOD, studio, shots), agreement(WHITE_THRESHOLD_METHOD, studio, shots)
    assert new > old + 0.1


@needs_fashion
def test_on_real_photos_composited_onto_textures_the_new_histogram_is_closer():
    from recommender.images import load_image

    gains = []
    for path in fashion_photos(10):
        studio = load_image(path)
        shots = shopper_versions(studio, path.stem)
        gains.append(agreement(BORDER_METHOD, studio, shots) - agreement(WHITE_THRESHOLD_METHOD, studio, shots))
    assert np.mean(gains) > 0.1 and sum(gain > 0 for gain in gains) >= 8


def test_a_product_filling_the_frame_falls_back_to_every_pixel():
    image = np.full((224, 224, 3), RED, np.uint8)
    histogram = colour_histogram(image, BORDER_METHOD)
    np.testing.assert_allclose(histogram, colour_histogram(product_on_white(RED), BORDER_METHOD), atol=1e-6)


def test_the_default_method_is_the_border_estimate_and_is_described():
    assert DEFAULT_METHOD == BORDER_METHOD
    image = shirt_on_white()
    np.testing.assert_array_equal(colour_histogram(image), colour_histogram(image, BORDER_METHOD))
    assert not np.allclose(colour_histogram(image, BORDER_METHOD), colour_histogram(image, WHITE_THRESHOLD_METHOD))
    described = describe()
    assert described["method"] == BORDER_METHOD and described["bins"] == [5, 8, 8] and described["centre_sigma"] > 0
    assert describe(WHITE_THRESHOLD_METHOD) == {"method": WHITE_THRESHOLD_METHOD, "space": "CIE-Lab", "bins": [5, 8, 8],
                                                "white_threshold": WHITE_THRESHOLD, "step": STEP}  # fmt: skip


def test_an_index_that_records_no_method_used_the_white_threshold():
    old_refined = {
        "method": "label-centroids",
        "colour_histogram": {"space": "CIE-Lab", "bins": [5, 8, 8], "white_threshold": 245, "step": 2},
    }
    assert method_of(old_refined) == WHITE_THRESHOLD_METHOD
    assert method_of({"method": "none"}) == WHITE_THRESHOLD_METHOD
    assert method_of({"method": "none", "colour_histogram": describe()}) == BORDER_METHOD
    with pytest.raises(ValueError, match="unknown colour-histogram method"):
        method_of({"colour_histogram": {"method": "saliency"}})
    with pytest.raises(ValueError, match="unknown colour-histogram method"):
        colour_histograms(np.zeros((1, 8, 8, 3), np.uint8), "saliency")


def test_batches_use_the_method_asked_for():
    images = np.stack([shirt_on_white(), product_on_white(NAVY)])
    for method in METHODS:
        np.testing.assert_allclose(colour_histograms(images, method)[0], colour_histogram(images[0], method), atol=1e-7)
