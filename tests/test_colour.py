"""recommender/colour.py: the product's colour, not its white background, as a unit histogram."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.colour import DIM, WHITE_THRESHOLD, colour_histogram, colour_histograms, srgb_to_lab

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
