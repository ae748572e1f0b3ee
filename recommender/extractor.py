"""Pixels → L2-normalised backbone feature vectors, with a Keras ImageNet backbone (the embed stage).

The extractor runs batches through one compiled ``tf.function`` (no per-image ``model.predict``)
and identifies its exact weights by a fingerprint, so an index can refuse features computed by a
different model. A new backbone is one more entry in :data:`BACKBONES`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelLoadError
from .manifest import ModelIdentity
from .vectors import l2_normalize

#: Images per forward pass. TensorFlow holds every activation of a pass at once, so the pass size,
#: not the number of images asked for, bounds the memory one call takes.
DEFAULT_BATCH_SIZE = 32

WEIGHTS_IMAGENET = "imagenet"
WEIGHTS_NONE = "none"
#: Seed for ``weights=none``: random weights must be reproducible so their fingerprint is stable.
RANDOM_WEIGHTS_SEED = 1234


@dataclass(frozen=True)
class Backbone:
    """How to build one Keras application and prepare its input."""

    name: str
    #: length of one feature vector (the pooled last convolutional layer)
    feature_dim: int
    builder: str
    preprocess_module: str


BACKBONES: dict[str, Backbone] = {
    "resnet50": Backbone("resnet50", 2048, "ResNet50", "resnet50"),
    "mobilenet_v2": Backbone("mobilenet_v2", 1280, "MobileNetV2", "mobilenet_v2"),
}


def normalize_weights_option(weights: str | os.PathLike[str] | None) -> str:
    """Canonical form of a ``--weights`` value: ``imagenet``, ``none`` or an absolute file path."""
    if weights is None:
        return WEIGHTS_NONE
    text = str(weights)
    if text.lower() in (WEIGHTS_IMAGENET, WEIGHTS_NONE):
        return text.lower()
    return str(Path(text).expanduser().resolve())


class FeatureExtractor:
    """Keras backbone with global pooling; ``extract`` maps uint8 images to unit vectors.

    The constructor only stores parameters; :meth:`load` builds the model (seconds), and
    :meth:`extract` loads it on first use. ``extract`` runs at most ``batch_size`` images per
    forward pass, whatever it is given, so no caller can exhaust memory with a large array.
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        weights: str | os.PathLike[str] | None = WEIGHTS_IMAGENET,
        input_size: int = 224,
        pooling: str = "avg",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.backbone = backbone
        self.weights = weights
        self.input_size = input_size
        self.pooling = pooling
        self.batch_size = batch_size
        self._model: Any = None
        self._forward: Callable[[Any], Any] | None = None
        self._fingerprint: str | None = None

    @property
    def spec(self) -> Backbone:
        try:
            return BACKBONES[self.backbone]
        except KeyError:
            raise ModelLoadError(
                f"Unknown backbone {self.backbone!r}; choose one of: {', '.join(BACKBONES)}."
            ) from None

    @property
    def feature_dim(self) -> int:
        """Length of one feature vector."""
        return self.spec.feature_dim

    @property
    def weights_source(self) -> str:
        return normalize_weights_option(self.weights)

    def load(self) -> FeatureExtractor:
        """Build the Keras model and its compiled forward function (idempotent)."""
        if self._forward is not None:
            return self
        spec = self.spec
        if self.pooling not in ("avg", "max"):
            raise ModelLoadError(f"Unknown pooling {self.pooling!r}; choose 'avg' or 'max'.")
        source = self.weights_source
        if source not in (WEIGHTS_IMAGENET, WEIGHTS_NONE) and not Path(source).is_file():
            raise ModelLoadError(f"Weights file not found: {source}")

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow's first import: no C++ info logs
        import keras
        import tensorflow as tf

        application = getattr(keras.applications, spec.builder)
        preprocess = getattr(keras.applications, spec.preprocess_module).preprocess_input
        if source == WEIGHTS_NONE:
            keras.utils.set_random_seed(RANDOM_WEIGHTS_SEED)
        try:
            model = application(
                weights=None if source == WEIGHTS_NONE else source,
                include_top=False,
                input_shape=(self.input_size, self.input_size, 3),
                pooling=self.pooling,
            )
        except Exception as exc:  # Keras raises many types for download/format problems.
            hint = (
                " (downloading ImageNet weights needs internet; on an air-gapped server pass a weights file path)"
                if source == WEIGHTS_IMAGENET
                else ""
            )
            raise ModelLoadError(f"Could not load {spec.builder} weights from {source}{hint}: {exc}") from exc

        @tf.function(
            input_signature=[tf.TensorSpec([None, self.input_size, self.input_size, 3], tf.uint8)],
            reduce_retracing=True,
        )
        def forward(images: Any) -> Any:
            x = preprocess(tf.cast(images, tf.float32))
            features = model(x, training=False)
            return tf.math.l2_normalize(features, axis=-1)

        self._model = model
        self._forward = forward
        # Warm up: trace the graph once so the first real query is not slow.
        forward(tf.zeros([1, self.input_size, self.input_size, 3], tf.uint8))
        return self

    def forward_function(self) -> Callable[[Any], Any]:
        """The compiled ``tf.function`` (uint8 pixels → normalised features), e.g. for an ONNX export."""
        self.load()
        assert self._forward is not None
        return self._forward

    @property
    def fingerprint(self) -> str:
        """SHA-256 over the backbone name and every weight tensor: identical iff features are."""
        if self._fingerprint is None:
            self.load()
            digest = hashlib.sha256(f"{self.backbone}:{self.input_size}:{self.pooling}".encode())
            for weight in self._model.weights:
                digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def extract(self, images: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        """``(N, S, S, 3)`` uint8 images → ``(N, feature_dim)`` float32 L2-normalised vectors.

        Runs at most ``batch_size`` (default: the extractor's) images per forward pass; each
        image's vector does not depend on the others in its pass, so the result equals one pass
        over all of them.
        """
        step = batch_size or self.batch_size
        if step < 1:
            raise ValueError(f"batch_size must be at least 1, got {step}")
        self.load()
        images = np.asarray(images, dtype=np.uint8)
        if images.ndim == 3:
            images = images[None]
        if images.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(f"expected images of shape (N, {self.input_size}, {self.input_size}, 3), got {images.shape}")
        vectors = np.empty((len(images), self.feature_dim), dtype=np.float32)
        for start in range(0, len(images), step):
            vectors[start : start + step] = self._run(images[start : start + step])
        # again in numpy: tf.math.l2_normalize's epsilon leaves tiny activations (random MobileNetV2) short of
        # unit length, and int8 outputs (recommender/onnx_model.py) are only close to it
        return l2_normalize(vectors)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One forward pass over a checked ``(n, S, S, 3)`` uint8 batch (the model is loaded)."""
        assert self._forward is not None
        return np.asarray(self._forward(batch))

    @property
    def identity(self) -> ModelIdentity:
        """What an index records to refuse vectors from any other model."""
        return ModelIdentity(
            backbone=self.backbone,
            weights_fingerprint=self.fingerprint,
            input_size=self.input_size,
            pooling=self.pooling,
            feature_dim=self.feature_dim,
        )
