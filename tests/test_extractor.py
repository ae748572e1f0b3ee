"""recommender/extractor.py: real Keras backbones turn pixels into unit feature vectors, identified by their weights."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from recommender.errors import ModelLoadError
from recommender.extractor import BACKBONES, DEFAULT_BATCH_SIZE, FeatureExtractor, normalize_weights_option
from recommender.images import load_image
from recommender.vectors import l2_normalize

#: A small input keeps the extra MobileNetV2 models these tests build cheap.
SMALL = 96


@pytest.fixture(scope="module")
def small_mobilenet() -> FeatureExtractor:
    """MobileNetV2 with reproducible random weights on 96-pixel input."""
    return FeatureExtractor("mobilenet_v2", "none", input_size=SMALL).load()


def random_pixels(count: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


# --- extract ------------------------------------------------------------------------------------


def test_extract_splits_any_input_into_bounded_forward_passes(resnet_random, demo_index):
    """70 images: passes of at most 32, the same vectors as one at a time."""
    images_dir = demo_index.catalogue.images_dir
    pixels = np.stack([load_image(images_dir / item.image) for item in demo_index.catalogue.items[:70]])
    extractor = copy.copy(resnet_random)  # the same loaded model; the session fixture stays untouched
    passes: list[int] = []
    forward = extractor._forward
    assert forward is not None

    def recording_forward(batch):
        passes.append(len(batch))
        return forward(batch)

    extractor._forward = recording_forward
    batched = extractor.extract(pixels)
    assert passes == [DEFAULT_BATCH_SIZE, DEFAULT_BATCH_SIZE, 70 - 2 * DEFAULT_BATCH_SIZE]
    one_by_one = np.concatenate([resnet_random.extract(image[None]) for image in pixels])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5, rtol=0)
    passes.clear()
    np.testing.assert_allclose(extractor.extract(pixels[:15], batch_size=7), one_by_one[:15], atol=1e-5, rtol=0)
    assert passes == [7, 7, 1]
    assert extractor.extract(pixels[:0]).shape == (0, resnet_random.feature_dim)


@pytest.mark.parametrize("fixture, backbone", [("resnet_random", "resnet50"),
                                               pytest.param("mobilenet_real", "mobilenet_v2", marks=pytest.mark.shared)])
def test_extract_gives_unit_float32_vectors_of_the_backbones_length(request, fixture, backbone, demo_catalogue):
    extractor = request.getfixturevalue(fixture)
    photos = [demo_catalogue.images_dir / item.image for item in demo_catalogue.items[:3]]
    pixels = np.stack([load_image(photo, extractor.input_size) for photo in photos])
    vectors = extractor.extract(pixels)
    assert extractor.feature_dim == BACKBONES[backbone].feature_dim
    assert vectors.shape == (3, extractor.feature_dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(extractor.extract(pixels[1]), vectors[1:2], atol=1e-5)  # one (S, S, 3) image
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)  # different photos, different vectors


def test_extract_refuses_the_wrong_shape_and_pass_size(small_mobilenet):
    with pytest.raises(ValueError, match=f"expected images of shape \\(N, {SMALL}, {SMALL}, 3\\)"):
        small_mobilenet.extract(random_pixels(1, SMALL + 1))
    with pytest.raises(ValueError, match="expected images"):
        small_mobilenet.extract(np.zeros((1, SMALL, SMALL), np.uint8))
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        small_mobilenet.extract(random_pixels(1, SMALL), batch_size=-1)


# --- identity ------------------------------------------------------------------------------------


def test_random_weights_are_reproducible_so_their_fingerprint_is_stable(small_mobilenet):
    again = FeatureExtractor("mobilenet_v2", "none", input_size=SMALL).load()
    assert again.fingerprint == small_mobilenet.fingerprint
    assert again.identity == small_mobilenet.identity
    pixels = random_pixels(2, SMALL, seed=4)
    # Random MobileNetV2 features are tiny (too small for TensorFlow's l2_normalize): compare directions.
    np.testing.assert_allclose(l2_normalize(again.extract(pixels)), l2_normalize(small_mobilenet.extract(pixels)), atol=1e-5)


def test_identity_describes_the_model(small_mobilenet):
    identity = small_mobilenet.identity
    assert identity.backbone == "mobilenet_v2" and identity.input_size == SMALL and identity.pooling == "avg"
    assert identity.feature_dim == BACKBONES["mobilenet_v2"].feature_dim
    assert len(identity.weights_fingerprint) == 64 and int(identity.weights_fingerprint, 16) >= 0  # SHA-256 hex


def test_the_same_weights_from_a_file_have_the_same_fingerprint(small_mobilenet, tmp_path):
    """Where the weights were loaded from is not part of the identity: the weights themselves are."""
    path = tmp_path / "mobilenet.weights.h5"
    small_mobilenet._model.save_weights(path)
    from_file = FeatureExtractor("mobilenet_v2", path, input_size=SMALL).load()
    assert from_file.weights_source == str(path.resolve())
    assert from_file.identity == small_mobilenet.identity


def test_other_pooling_or_weights_change_the_identity(small_mobilenet, resnet_random):
    max_pooled = FeatureExtractor("mobilenet_v2", "none", input_size=SMALL, pooling="max").load()
    assert max_pooled.fingerprint != small_mobilenet.fingerprint  # no weight differs, the pooling does
    assert max_pooled.identity.pooling == "max" and max_pooled.identity != small_mobilenet.identity
    assert resnet_random.fingerprint != small_mobilenet.fingerprint


def test_load_is_idempotent(small_mobilenet):
    forward = small_mobilenet._forward
    assert small_mobilenet.load() is small_mobilenet and small_mobilenet._forward is forward


# --- refusals ------------------------------------------------------------------------------------


def test_the_constructor_loads_nothing_and_refuses_a_pass_size_below_one():
    FeatureExtractor("no-such-backbone", "/nowhere.h5", pooling="median")  # nothing checked until load()
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        FeatureExtractor(batch_size=0)


@pytest.mark.parametrize(
    "options, words",
    [
        ({"backbone": "vgg16"}, ["Unknown backbone 'vgg16'", "resnet50", "mobilenet_v2"]),
        ({"backbone": "mobilenet_v2", "pooling": "median"}, ["Unknown pooling 'median'"]),
        ({"backbone": "mobilenet_v2", "weights": "missing.weights.h5"}, ["Weights file not found", "missing.weights.h5"]),
    ],
    ids=["backbone", "pooling", "weights-file"],
)
def test_load_refuses_what_it_cannot_build_with_a_clear_message(options, words):
    with pytest.raises(ModelLoadError) as exc_info:
        FeatureExtractor(**options).load()
    for word in words:
        assert word in str(exc_info.value)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Keras lists every layer it could not match
def test_a_weights_file_that_does_not_fit_the_backbone_is_a_load_error(small_mobilenet, tmp_path):
    path = tmp_path / "mobilenet.weights.h5"
    small_mobilenet._model.save_weights(path)
    with pytest.raises(ModelLoadError, match="Could not load ResNet50 weights"):
        FeatureExtractor("resnet50", path).load()


def test_weights_options_have_one_canonical_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalize_weights_option(None) == "none"
    assert normalize_weights_option("ImageNet") == "imagenet" and normalize_weights_option("NONE") == "none"
    assert normalize_weights_option("w.h5") == str(tmp_path / "w.h5")
    assert normalize_weights_option(Path("~/w.h5")) == str(Path.home() / "w.h5")


def test_extractor_rejects_unknown_backbone_and_missing_weights(tmp_path):
    with pytest.raises(ModelLoadError, match="Unknown backbone 'vgg'"):
        FeatureExtractor("vgg", "none").load()
    with pytest.raises(ModelLoadError, match="Weights file not found"):
        FeatureExtractor("mobilenet_v2", tmp_path / "nope.h5").load()
