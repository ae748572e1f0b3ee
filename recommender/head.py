"""A learned embedding head on frozen backbone features, trained at index-build time from labels.

ImageNet features of a shopper's phone photo sit far from those of the same product's studio
photo, and plain features know little of article type, colour or gender. The catalogue's labels
are free training data, and shopper-like views of its photos (recommender/shopper_photos.py) teach
the head that a phone photo and its studio photo are the same product::

    e(x)   = l2n(W2 · relu(W1 · x + b1) + b2),   x = l2n(features) ⊕ colour · l2n(colour histogram)
    index  = l2n(e(x) + pull · sum_label P_label[label(x)])              (products with known labels)
    query  = l2n(e(x) + query_pull · sum_label softmax(s · e(x) · P_labelᵀ) · P_label)   (any photo)

trained with cosine-softmax objectives per label (prototype rows ``P_label``, unit length) plus a
symmetric InfoNCE term pulling each shopper view towards its own catalogue photo. A query, which
has no labels, is pulled by its *predicted* label distribution, so both sides move towards the
same prototypes. Search stays a flat cosine search. Weights are ``.npy`` files, parameters JSON:
no pickle.

The default for a new labelled index (``build_index.py --head auto``): the head replaces the
label-centroid refinement. Its training views cost one shopper-like photo and one forward pass per
product and view, so a large catalogue trains on a capped, type-balanced sample
(:func:`training_rows`) and applies the head to every product.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .catalogue import Catalogue, CatalogueItem
from .colour import DEFAULT_METHOD as DEFAULT_COLOUR_METHOD
from .colour import DIM as COLOUR_DIM
from .colour import colour_histograms
from .errors import ImageDecodeError
from .extractor import FeatureExtractor
from .images import load_image
from .shopper_photos import rng_for, shopper_photo
from .vectors import l2_normalize

METHOD = "head-labels"
#: ``--head`` values
NONE = "none"
LABELS = "labels"
#: labels on a new index whose catalogue has them; on ``--update``, what the index has
AUTO = "auto"
#: the files of the head (``prefix`` "head"); the instance head's start with "instance_head"
PREFIX = "head"


def head_files(prefix: str = PREFIX) -> tuple[str, tuple[str, ...], str]:
    """(parameters JSON, weight files, prototype file pattern) of the head saved under ``prefix``."""
    return f"{prefix}.json", tuple(f"{prefix}_{name}.npy" for name in ("w1", "b1", "w2", "b2")), prefix + "_prototypes_{label}.npy"


PARAMS_JSON, WEIGHT_FILES, PROTOTYPE_FILE = head_files()
#: The instance head: the same network trained on the same shopper-like views, by the contrastive term
#: alone (no labels, no pull), so that it tells *the* product apart from its look-alikes, which the
#: labels teach the head to gather. The exact-item stage shortlists with it (recommender/exact_match.py).
#: It trains on more views than the head (:attr:`HeadSettings.instance_views`): telling one product from
#: its look-alikes needs more of its shopper-like views than learning what it is.
#: Measured on 300 shopper photos per seed (0, 1, 2; 4k MobileNetV2 int8): the product itself nearest
#: for 54-56 % of photos (the head's own embedding before the pull: 40-46 %), among the 50 nearest
#: for 93-95 % (91-94 %); temperature 0.05 (0.1: 49-53 % nearest). It also sees each photo's colour
#: histogram beside its features (:attr:`HeadSettings.instance_colour`).
#: Each product's vector in its space is its photo's embedding plus the mean of its own views' (see
#: :func:`product_vectors`) when every product trained it.
INSTANCE_PREFIX = "instance_head"
INSTANCE_METHOD = "instance-head"
INSTANCE_TEMPERATURE = 0.05
DEFAULT_LABELS = ("articleType", "baseColour", "gender")


@dataclass(frozen=True)
class HeadSettings:
    """What a training run does; recorded in the manifest so a build can be reproduced."""

    labels: tuple[str, ...] = DEFAULT_LABELS
    hidden: int = 1024
    dim: int = 256
    epochs: int = 40
    batch_size: int = 256
    learning_rate: float = 1e-3
    dropout: float = 0.2
    #: cosine-softmax scale: logits are scale x cosine(embedding, prototype)
    scale: float = 16.0
    #: weight and temperature of the shopper-view ↔ catalogue-photo contrastive term
    contrast: float = 1.0
    temperature: float = 0.1
    #: weight of a second contrastive term between two different shopper-like views of each product
    #: (0: none, the head's own; the instance head's is ``instance_view_contrast``)
    view_contrast: float = 0.0
    #: how far a product is pulled towards its labels' prototypes in the index
    pull: float = 1.0
    #: how far a query is pulled towards the prototypes it is predicted to carry (0: not at all;
    #: heads saved before this setting existed load with 0, as they were built)
    query_pull: float = 1.0
    #: each product's weight in the ``balance_label`` objective is (products of its class) ** -balance,
    #: so rare article types are not drowned by common ones (macro precision counts types alike)
    balance: float = 0.5
    balance_label: str = "articleType"
    seed: int = 0
    #: shopper-like views per product, and their frame (small: the model sees 224 x 224 anyway)
    views: int = 2
    view_size: tuple[int, int] = (240, 320)
    #: at most this many products train the head (type-balanced sample, :func:`training_rows`):
    #: the views' forward passes bound the build time, and the head is applied to every product
    max_products: int = 6000
    #: shopper-like views per product for the instance head (its first ``views`` are the head's own).
    #: Measured (4k MobileNetV2 int8, photo and two crops, seeds 0-2): the product nearest of all for
    #: 55-57 % of photos with 2 views, 57-61 % with 6, 55-60 % with 12; in the nearest 5 for 73-80 %,
    #: 81-85 %, 81-84 %. Each view costs a forward pass at build time. Heads saved before it existed load with 2.
    instance_views: int = 6
    #: the instance head's epochs and batch. It learns only to tell each product from the others in its
    #: batch, so more of them per batch and longer training sharpen it. Measured (as above, the photo
    #: alone, product vectors with their views, mean of three training seeds): nearest of all for 64.5 %
    #: of photos with the head's 40 epochs of 256, 66.3 % with 40 of 1024, 66.3 % with 80 of 512, 67.6 %
    #: with 80 of 1024, 67.9 % with 120 of 1024; in the nearest 5 for 83.4, 84.4, 84.9, 85.6 and 85.9 %.
    #: Training takes 30 s instead of 20 s on 4,000 products. Heads saved before these existed load with
    #: the head's own epochs and batch, as their instance heads were trained.
    instance_epochs: int = 80
    instance_batch_size: int = 1024
    #: the instance head also learns that two phone photos of one product are one product, so that they
    #: gather, as each product's vector (its photo plus its views' mean, :func:`product_vectors`) wants.
    #: Measured (as above, 80 epochs of 1,024): nearest of all 67.6 % → 69.2 %, in the nearest 5
    #: 85.6 % → 86.7 %, among the 50 96.0 % → 96.9 %; weight 0.25 and 1.0 no better than 0.5 (one seed).
    #: Training takes 50 s instead of 33 s on 4,000 products. Heads saved before it load with 0.
    instance_view_contrast: float = 0.5
    #: weight of the photo's colour histogram (recommender/colour.py, made by ``colour_method``) beside its
    #: backbone features in the head's input (:func:`head_inputs`; 0: the features alone). ImageNet features
    #: know a product's cut better than its colour. Measured (4k MobileNetV2 int8, held-out 20 %, seed 0, both
    #: heads re-trained in one run): P@5 colour on shopper photos 0.364 → 0.416, on catalogue photos 0.453 →
    #: 0.535; shopper articleType micro / macro +1.7 / +0.4 points, gender 0; catalogue articleType micro /
    #: macro -0.3 / -0.6, gender -0.6. Offline on seeds 0-9 (3,000 shopper photos): the head's likeliest colour
    #: right for 52.4 % of photos against 45.7 %. Heads saved before it load with 0, as they were built
    colour: float = 0.5
    colour_method: str = DEFAULT_COLOUR_METHOD
    #: the instance head's :attr:`colour`. ImageNet features tell a shirt's cut better than its colour, and
    #: the product's look-alikes are mostly the same cut in other colours. Measured (4k MobileNetV2 int8, the
    #: photo alone, 3,000 shopper photos of seeds 0-9, product vectors with their views): the product nearest
    #: of all for 68.3 % of photos without it, 75.1 / 75.3 / 76.6 / 76.5 % at 0.25 / 0.5 / 1.0 / 1.5; in the
    #: nearest 5 for 86.0 % and 90.1 % at 1.0, among the 50 for 96.2 % and 97.3 %. Heads saved before it load with 0
    instance_colour: float = 1.0

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (lists, not tuples), as the manifest and head.json hold them."""
        return {**asdict(self), "labels": list(self.labels), "view_size": list(self.view_size)}


@dataclass
class EmbeddingHead:
    """Trained weights (two dense layers), one prototype matrix per label, and their class names."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    class_names: dict[str, list[str]] = field(default_factory=dict)
    prototypes: dict[str, np.ndarray] = field(default_factory=dict)
    settings: HeadSettings = field(default_factory=HeadSettings)

    @property
    def feature_dim(self) -> int:
        return int(self.w1.shape[0])

    @property
    def vector_dim(self) -> int:
        return int(self.w2.shape[1])

    @property
    def takes_colours(self) -> bool:
        """The head's input is backbone features and the photo's colour histogram (:attr:`HeadSettings.colour`)."""
        return self.settings.colour > 0

    def colours_of(self, colours: Callable[[str], np.ndarray]) -> np.ndarray | None:
        """The photos' histograms this head takes, from ``colours(method)`` (made only then), else None."""
        return colours(self.settings.colour_method) if self.takes_colours else None

    def inputs(self, features: np.ndarray, colours: np.ndarray | None) -> np.ndarray:
        """Photos' backbone features (and colour histograms, which a head that :attr:`takes_colours` needs) → what :meth:`embed` takes."""
        return head_inputs(features, colours, self.settings.colour)

    def embed(self, features: np.ndarray) -> np.ndarray:
        """The head's inputs (:meth:`inputs`: backbone features, for most heads as they are) → the head's
        unit-length embedding, before any prototype pull."""
        x = l2_normalize(np.asarray(features, dtype=np.float32))
        hidden = np.maximum(x @ self.w1 + self.b1, 0.0)
        return l2_normalize((hidden @ self.w2 + self.b2).astype(np.float32))

    def query_vectors(self, features: np.ndarray, colours: np.ndarray | None = None) -> np.ndarray:
        """Backbone features of any photo (and its colour histogram, for a head that :attr:`takes_colours`)
        → unit-length search vectors (no labels needed).

        The embedding moves towards each label's prototypes, weighted by how likely the photo
        carries each class (the training objective's own softmax), as products move to theirs.
        """
        return self.query_vectors_and_labels(features, colours)[0]

    def query_vectors_and_labels(self, features: np.ndarray, colours: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """:meth:`query_vectors` and what pulled them: each label's ``(N, classes)`` probabilities, in
        :attr:`class_names` order, i.e. what the head believes the photo shows (its training objective's softmax)."""
        vectors = self.embed(self.inputs(features, colours))
        probabilities = {}
        for label, prototypes in self.prototypes.items():
            logits = self.settings.scale * (vectors @ prototypes.T)
            likely = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities[label] = likely / likely.sum(axis=1, keepdims=True)
        if not self.settings.query_pull:
            return vectors, probabilities
        pulled = vectors.copy()
        for label, likely in probabilities.items():
            pulled += self.settings.query_pull * (likely @ self.prototypes[label])
        return l2_normalize(pulled.astype(np.float32)), probabilities

    def class_rows(self, labels: Sequence[Mapping[str, str]]) -> dict[str, np.ndarray]:
        """Each label's class (its row in :attr:`class_names` and the prototypes) of every item of
        ``labels``; -1 where the item lacks the label or carries a class the head never learned."""
        classes = {}
        for label, names in self.class_names.items():
            position = {name: i for i, name in enumerate(names)}
            classes[label] = np.array([position.get(item.get(label, ""), -1) for item in labels], dtype=np.int64)
        return classes

    def index_vectors(self, features: np.ndarray, labels: Sequence[Mapping[str, str]], colours: np.ndarray | None = None) -> np.ndarray:
        """Products (backbone features, and colour histograms for a head that :attr:`takes_colours`): their
        embedding pulled towards the prototypes of the labels they carry."""
        vectors = self.embed(self.inputs(features, colours))
        if not self.settings.pull:
            return vectors
        for label, rows in self.class_rows(labels).items():
            known = rows >= 0
            vectors[known] += self.settings.pull * self.prototypes[label][rows[known]]
        return l2_normalize(vectors)

    def describe(self) -> dict[str, Any]:
        """What the manifest records."""
        return {
            "method": METHOD,
            "settings": self.settings.to_json(),
            "classes": {label: len(names) for label, names in self.class_names.items()},
            "feature_dim": self.feature_dim,
            "vector_dim": self.vector_dim,
        }

    def save(self, directory: Path, prefix: str = PREFIX) -> None:
        """Write weights (``.npy``, no pickle) and parameters (JSON) into an index directory."""
        params_json, weight_files, prototype_file = head_files(prefix)
        for name, array in zip(weight_files, (self.w1, self.b1, self.w2, self.b2)):
            np.save(directory / name, np.asarray(array, dtype=np.float32), allow_pickle=False)
        for label, prototypes in self.prototypes.items():
            np.save(directory / prototype_file.format(label=label), prototypes.astype(np.float32), allow_pickle=False)
        params = {"class_names": self.class_names, "settings": self.settings.to_json()}
        (directory / params_json).write_text(json.dumps(params, indent=1, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, prefix: str = PREFIX) -> EmbeddingHead:
        """Read what :meth:`save` wrote; ``ValueError`` when shapes and names disagree."""
        params_json, weight_files, prototype_file = head_files(prefix)
        params = json.loads((directory / params_json).read_text(encoding="utf-8"))
        settings_data = dict(params["settings"])
        settings_data["labels"] = tuple(settings_data["labels"])
        settings_data["view_size"] = tuple(settings_data["view_size"])
        settings_data.setdefault("query_pull", 0.0)  # saved before queries were pulled: keep them as built
        settings_data.setdefault("instance_views", 2)  # saved before the instance head had views of its own
        settings_data.setdefault("instance_epochs", settings_data.get("epochs"))  # ... or epochs and batch of its own
        settings_data.setdefault("instance_batch_size", settings_data.get("batch_size"))
        settings_data.setdefault("view_contrast", 0.0)
        settings_data.setdefault("instance_view_contrast", 0.0)
        settings_data.setdefault("colour", 0.0)  # saved before heads took colours: features alone
        settings_data.setdefault("instance_colour", 0.0)
        settings_data.setdefault("colour_method", DEFAULT_COLOUR_METHOD)
        try:
            settings = HeadSettings(**settings_data)
        except TypeError as exc:
            raise ValueError(f"{params_json} holds unknown head settings ({exc})") from exc
        w1, b1, w2, b2 = (np.load(directory / name, allow_pickle=False) for name in weight_files)
        class_names = {str(label): [str(n) for n in names] for label, names in params["class_names"].items()}
        prototypes = {label: np.load(directory / prototype_file.format(label=label), allow_pickle=False) for label in class_names}
        head = cls(w1, b1, w2, b2, class_names, prototypes, settings)
        if w1.ndim != 2 or b1.shape != (w1.shape[1],) or w2.shape[0] != w1.shape[1] or b2.shape != (w2.shape[1],):
            raise ValueError("embedding head weights have inconsistent shapes")
        for label, names in class_names.items():
            if prototypes[label].shape != (len(names), w2.shape[1]):
                raise ValueError(f"prototypes of {label} do not match their {len(names)} class names")
        return head


def instance_settings(settings: HeadSettings) -> HeadSettings:
    """The instance head's settings (:data:`INSTANCE_PREFIX`): the head's, without labels or pulls, on its own views,
    epochs, batch and colour weight."""
    return replace(
        settings, labels=(), pull=0.0, query_pull=0.0, temperature=INSTANCE_TEMPERATURE, views=settings.instance_views,
        epochs=settings.instance_epochs, batch_size=settings.instance_batch_size, view_contrast=settings.instance_view_contrast,
        colour=settings.instance_colour,
    )  # fmt: skip


def head_inputs(features: np.ndarray, colours: np.ndarray | None, weight: float) -> np.ndarray:
    """A head's input: the backbone features as they are (``weight`` 0), or both unit-length side by side with
    the colour histograms scaled by ``weight`` (the head normalises the whole again)."""
    if not weight:
        return features
    if colours is None or len(colours) != len(features):
        raise ValueError("this head takes each photo's colour histogram beside its features")
    return np.concatenate([l2_normalize(np.asarray(features, dtype=np.float32)), weight * l2_normalize(np.asarray(colours, dtype=np.float32))], axis=1)


def training_inputs(
    features: np.ndarray, colours: np.ndarray | None, views: Sequence[np.ndarray], view_colours: Sequence[np.ndarray] | None, weight: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    """What :func:`train_head` takes for a head whose colour weight is ``weight``: the products' inputs and
    each view's (:func:`head_inputs`), from backbone features and, where ``weight`` > 0, colour histograms."""
    if weight and (view_colours is None or len(view_colours) < len(views)):
        raise ValueError("this head takes each view's colour histogram beside its features")
    return head_inputs(features, colours, weight), [
        head_inputs(view, None if view_colours is None else view_colours[i], weight) for i, view in enumerate(views)
    ]


def view_means(instance: EmbeddingHead, views: Sequence[np.ndarray]) -> np.ndarray:
    """Each product's shopper-like ``views`` (row-aligned backbone features) embedded by ``instance`` and
    averaged, unit length: where phone photos of the product land in the instance head's space."""
    return l2_normalize(np.mean([instance.embed(view) for view in views], axis=0).astype(np.float32))


def product_vectors(instance: EmbeddingHead, features: np.ndarray, seen: np.ndarray | None = None) -> np.ndarray:
    """The instance head's vector of each product: its photo's embedding, and with ``seen`` (its
    :func:`view_means`) the two added, so the product sits between its studio photo and its phone photos
    (database-side augmentation). The views are the ones the head trained on, so this costs no forward pass.

    Measured (4k MobileNetV2 int8, photo alone, 300 shopper photos on each of seeds 0-2): the product
    nearest of all for 56.7 % of photos with the photo's embedding alone, 63.9 % with its six views
    added; in the nearest 5 for 77.7 % and 82.6 %. Through the whole exact-item stage (seeds 0-19):
    first 81.0 % → 83.5 %, top 5 83.4 % → 85.3 %. Views of only some products (a catalogue larger than
    :attr:`HeadSettings.max_products`) help nothing: those products gain what the others lose.
    """
    vectors = instance.embed(features)
    return vectors if seen is None else l2_normalize(vectors + seen)


def views_to_make(settings: HeadSettings, instance: bool) -> HeadSettings:
    """Settings that make every view the head needs, and with ``instance`` the instance head's too:
    views are made in order, so the head's are the first ``settings.views`` of them."""
    return replace(settings, views=max(settings.views, settings.instance_views)) if instance else settings


def train_head(
    features: np.ndarray,
    labels: Sequence[Mapping[str, str]],
    views: Sequence[np.ndarray] = (),
    settings: HeadSettings | None = None,
) -> EmbeddingHead:
    """Fit a head on catalogue ``features`` (row i has ``labels[i]``) and optional shopper ``views``.

    Each view is row-aligned with ``features`` (row i: the backbone features of a shopper-like
    photo of product i). Every step pairs a batch's catalogue features with one view: both are
    classified, and the contrastive term pulls each view onto its own catalogue photo.
    """
    settings = settings or HeadSettings()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    catalogue = l2_normalize(np.asarray(features, dtype=np.float32))
    shopper = [l2_normalize(np.asarray(view, dtype=np.float32)) for view in views]
    if any(view.shape != catalogue.shape for view in shopper):
        raise ValueError("every view needs one row per catalogue product")
    class_names = {label: sorted({item.get(label, "") for item in labels} - {""}) for label in settings.labels}
    class_names = {label: names for label, names in class_names.items() if len(names) >= 2}
    targets, weights = {}, {}
    for label, names in class_names.items():
        position = {name: i for i, name in enumerate(names)}
        wanted = np.array([position.get(item.get(label, ""), -1) for item in labels], dtype=np.int32)
        counts = np.maximum(np.bincount(wanted[wanted >= 0], minlength=len(names)), 1).astype(np.float64)
        exponent = settings.balance if label == settings.balance_label else 0.0
        weight = np.where(wanted >= 0, counts[np.maximum(wanted, 0)] ** -exponent, 0.0)
        targets[label] = wanted
        weights[label] = (weight / max(weight[wanted >= 0].mean(), 1e-12) if (wanted >= 0).any() else weight).astype(np.float32)

    tf.keras.utils.set_random_seed(settings.seed)
    hidden_layer = tf.keras.layers.Dense(settings.hidden, activation="relu")
    output_layer = tf.keras.layers.Dense(settings.dim)
    hidden_layer.build((None, catalogue.shape[1]))
    output_layer.build((None, settings.hidden))
    prototypes = {label: tf.Variable(tf.random.normal((len(names), settings.dim), stddev=0.05)) for label, names in class_names.items()}
    trainable = [*hidden_layer.trainable_variables, *output_layer.trainable_variables, *prototypes.values()]
    optimizer = tf.keras.optimizers.Adam(settings.learning_rate)

    def embed(x: Any) -> Any:
        x = tf.nn.dropout(x, settings.dropout) if settings.dropout else x
        return tf.math.l2_normalize(output_layer(hidden_layer(x)), axis=1)

    def classification(embedded: Any, wanted: Any, weight: Any, prototype: Any) -> Any:
        logits = settings.scale * tf.matmul(embedded, tf.math.l2_normalize(prototype, axis=1), transpose_b=True)
        known = wanted >= 0
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(wanted, 0), logits)
        return tf.reduce_sum(tf.where(known, weight * losses, 0.0)) / tf.maximum(tf.reduce_sum(tf.cast(known, tf.float32)), 1.0)

    def agreement(a: Any, b: Any) -> Any:
        """Symmetric InfoNCE: row i of ``a`` and row i of ``b`` are one product, every other row another."""
        similarity = tf.matmul(a, b, transpose_b=True) / settings.temperature
        same = tf.range(tf.shape(similarity)[0])
        return (
            tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(same, similarity))
            + tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(same, tf.transpose(similarity)))
        ) / 2

    @tf.function(reduce_retracing=True)
    def step(studio: Any, phone: Any, wanted: dict[str, Any], weight: dict[str, Any], contrast: float, other: Any = None) -> Any:
        with tf.GradientTape() as tape:
            a, b = embed(studio), embed(phone)
            loss = tf.constant(0.0)
            for label, prototype in prototypes.items():
                loss += (classification(a, wanted[label], weight[label], prototype) + classification(b, wanted[label], weight[label], prototype)) / 2
            if contrast:
                loss += contrast * agreement(a, b)
            if other is not None:
                loss += settings.view_contrast * agreement(b, embed(other))
        optimizer.apply_gradients(zip(tape.gradient(loss, trainable), trainable))
        return loss

    rng = np.random.default_rng(settings.seed)
    contrast = settings.contrast if shopper else 0.0
    pairs = settings.view_contrast > 0 and len(shopper) >= 2
    for _ in range(settings.epochs):
        order = rng.permutation(len(catalogue))
        for start in range(0, len(order), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            other = None
            if pairs:  # each row two different views of its own product
                first = rng.integers(len(shopper), size=len(rows))
                phone = _view_rows(shopper, first, rows)
                other = _view_rows(shopper, (first + rng.integers(1, len(shopper), size=len(rows))) % len(shopper), rows)
            else:
                phone = shopper[int(rng.integers(len(shopper)))][rows] if shopper else catalogue[rows]
            step(
                tf.constant(catalogue[rows]), tf.constant(phone),
                {label: tf.constant(t[rows]) for label, t in targets.items()},
                {label: tf.constant(w[rows]) for label, w in weights.items()}, contrast,
                None if other is None else tf.constant(other),
            )  # fmt: skip

    w1, b1 = (v.numpy() for v in hidden_layer.weights)
    w2, b2 = (v.numpy() for v in output_layer.weights)
    return EmbeddingHead(
        w1, b1, w2, b2, class_names,
        {label: l2_normalize(p.numpy().astype(np.float32)) for label, p in prototypes.items()},
        settings,
    )  # fmt: skip


def _view_rows(views: Sequence[np.ndarray], which: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Row i: row ``rows[i]`` of view ``which[i]`` (without stacking every view into one array)."""
    picked = np.empty((len(rows), views[0].shape[1]), dtype=np.float32)
    for view, features in enumerate(views):
        chosen = which == view
        picked[chosen] = features[rows[chosen]]
    return picked


def training_rows(labels: Sequence[Mapping[str, str]], settings: HeadSettings | None = None) -> np.ndarray:
    """Rows that train the head: all of them up to ``max_products``, else a type-balanced sample.

    The sample keeps every product of the rare classes of ``balance_label`` and the same number
    (as many as fit) of each common one, so the head still learns every type; it is seeded by the
    settings' seed, so an ``--update`` of the same catalogue trains on the same products.
    """
    settings = settings or HeadSettings()
    if len(labels) <= settings.max_products:
        return np.arange(len(labels))
    groups = np.array([item.get(settings.balance_label, "") for item in labels])
    names, counts = np.unique(groups, return_counts=True)
    low, high = 0, int(counts.max())
    while low < high:  # the largest per-class share that fits
        share = (low + high + 1) // 2
        low, high = (share, high) if np.minimum(counts, share).sum() <= settings.max_products else (low, share - 1)
    rng = np.random.default_rng(settings.seed)
    chosen = [rng.choice(np.flatnonzero(groups == name), size=min(int(count), low), replace=False) for name, count in zip(names, counts)]
    return np.sort(np.concatenate(chosen))


def can_train(columns: Sequence[str], settings: HeadSettings | None = None) -> bool:
    """The head needs at least one of its labels in the catalogue."""
    return any(label in columns for label in (settings or HeadSettings()).labels)


def shopper_views(
    catalogue: Catalogue,
    items: Sequence[CatalogueItem],
    extractor: FeatureExtractor,
    settings: HeadSettings | None = None,
    batch_size: int = 32,
    *,
    colours: bool = False,
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Backbone features of ``settings.views`` shopper-like photos of each item, row-aligned with ``items``,
    and with ``colours`` their colour histograms (``settings.colour_method``), else None."""
    paths = [catalogue.images_dir / item.image for item in items]
    return shopper_view_inputs(paths, [item.id for item in items], extractor, settings, batch_size, colours=colours)


def shopper_view_inputs(
    paths: Sequence[Path],
    keys: Sequence[str],
    extractor: FeatureExtractor,
    settings: HeadSettings | None = None,
    batch_size: int = 32,
    *,
    colours: bool = False,
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Backbone features of ``settings.views`` shopper-like photos of each photo in ``paths``, and with
    ``colours`` each view's colour histogram (``settings.colour_method``, as a query's), else None.

    ``keys`` are the products' ids. Each photo goes through the query path (JPEG bytes, decode,
    square pad); its backgrounds come from ``paths`` only, so training on a subset of the catalogue
    (a held-out evaluation) never shows the head the other photos. Its generator is keyed by view
    and product, never by the product alone as the shopper evaluation protocol's queries are. A
    view that cannot be decoded falls back to the catalogue photo.
    """
    if len(paths) != len(keys):
        raise ValueError(f"{len(paths)} photos for {len(keys)} keys")
    settings = settings or HeadSettings()
    size = extractor.input_size
    views = [np.empty((len(paths), extractor.feature_dim), dtype=np.float32) for _ in range(settings.views)]
    histograms = [np.empty((len(paths), COLOUR_DIM), dtype=np.float32) for _ in views] if colours else None
    for start in range(0, len(paths), batch_size):
        pixels: list[list[np.ndarray]] = [[] for _ in views]
        for key, path in zip(keys[start : start + batch_size], paths[start : start + batch_size]):
            try:
                with Image.open(path) as opened:  # read and decoded once for all of its views
                    source: Image.Image | None = opened.convert("RGB")
            except (OSError, ValueError):
                source = None
            for view, view_pixels in enumerate(pixels):
                rng = rng_for(settings.seed, f"head-view-{view}:{key}")
                try:
                    if source is None:
                        raise ValueError(f"{path} cannot be opened")
                    photo = shopper_photo(source, rng, size=settings.view_size, background_pool=paths, avoid=path)
                    view_pixels.append(load_image(photo, size))
                except (ImageDecodeError, OSError, ValueError):
                    view_pixels.append(load_image(path, size))
        for view, view_pixels in enumerate(pixels):
            batch = np.stack(view_pixels)
            views[view][start : start + len(batch)] = extractor.extract(batch, batch_size=batch_size)
            if histograms is not None:
                histograms[view][start : start + len(batch)] = colour_histograms(batch, settings.colour_method)
    return views, histograms
