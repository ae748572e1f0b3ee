"""The public face of the engine: load an index once, answer "what looks like this photo?".

A photo goes decode (bytes → pixels) → embed (pixels → vectors) → search (vectors → rows and
similarities, recommender/search.py) → matches (rows → :class:`Match`); ``recommend`` does all
four for one photo, ``iter_recommend`` a batch at a time for many.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .catalogue import display_name
from .colour import colour_histograms
from .errors import ModelMismatchError, NotLoadedError
from .extractor import FeatureExtractor, normalize_weights_option
from .filters import CanonicalWhere, Where, allowed_rows, canonical
from .images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageDecodeError, load_image
from .index_store import CatalogueIndex, load_index
from .manifest import TENSORFLOW_RUNTIME, Manifest
from .onnx_model import FP32, ONNX, OnnxExtractor
from .onnx_model import MODEL_FILE as ONNX_MODEL_FILE
from .search import ExactSearcher

ImageSource = str | os.PathLike[str] | bytes | bytearray | BinaryIO
#: Label columns shown under a product's name, in this order, when the catalogue has them.
CAPTION_COLUMNS = ("articleType", "baseColour", "gender")
#: Filters whose row masks are kept (a shopper's few buttons, an operator's few --where options).
KEPT_FILTERS = 64


@dataclass(frozen=True)
class Match:
    """One recommended product."""

    rank: int
    row: int
    id: str
    score: float
    display_name: str
    image_path: Path
    labels: Mapping[str, str] = field(default_factory=dict)

    def caption(self) -> str:
        """Display name plus category and colour, e.g. "Puma Men Red Jersey\nTshirts · Red · Men"."""
        details = " · ".join(self.labels[c] for c in CAPTION_COLUMNS if self.labels.get(c))
        return f"{self.display_name}\n{details}" if details else self.display_name

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": round(self.score, 6), **{k: v for k, v in self.labels.items() if k != "id"}}


def extractor_for_index(
    manifest: Manifest,
    backbone: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    directory: Path | None = None,
) -> FeatureExtractor:
    """The extractor recorded in the manifest, or an explicit override (checked later against it).

    An index built for ONNX Runtime runs the model file in its ``directory`` (no TensorFlow).
    """
    runtime = manifest.runtime
    if runtime.get("name") == ONNX and backbone is None and weights is None:
        if directory is None:
            raise ValueError("an ONNX Runtime index needs its directory to find its model")
        exported = replace(manifest.model, runtime=TENSORFLOW_RUNTIME)
        return OnnxExtractor(
            directory / str(runtime.get("file", ONNX_MODEL_FILE)), exported, str(runtime.get("precision", FP32)),
            weights=manifest.weights, sha256=runtime.get("sha256"),
        )  # fmt: skip
    chosen_backbone = backbone or manifest.model.backbone
    chosen_weights = normalize_weights_option(weights) if weights is not None else manifest.weights
    return FeatureExtractor(
        backbone=chosen_backbone,
        weights=chosen_weights,
        input_size=manifest.model.input_size,
        pooling=manifest.model.pooling,
    )


class Recommender:
    """Finds the catalogue products most similar to an image.

    ``Recommender(index_dir).load()`` reads the index, builds the model the index was built with
    (or the ``backbone``/``weights`` override, refused if its features would not match) and fits
    the search structure once. ``recommend`` is then safe to call from one worker thread.
    """

    def __init__(
        self,
        index_dir: str | os.PathLike[str],
        *,
        backbone: str | None = None,
        weights: str | os.PathLike[str] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.index_dir = Path(index_dir)
        self.backbone = backbone
        self.weights = weights
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self.index: CatalogueIndex | None = None
        self.extractor: FeatureExtractor | None = None
        self.searcher: ExactSearcher | None = None
        self._masks: dict[CanonicalWhere, np.ndarray] = {}

    def load(self) -> Recommender:
        index = load_index(self.index_dir, mmap=True)  # searching reads only the vectors: features and colours stay on disk
        extractor = extractor_for_index(index.manifest, self.backbone, self.weights, index.directory)
        if extractor.backbone != index.manifest.model.backbone:
            raise ModelMismatchError(
                f"The index at {self.index_dir} was built with backbone {index.manifest.model.backbone!r},"
                f" not {extractor.backbone!r}. Query with the index's own model or rebuild the index."
            )
        extractor.load()
        index.manifest.model.check_matches(extractor.identity)
        self.index, self.extractor = index, extractor
        self.searcher = ExactSearcher().fit(index.vectors)
        self._masks = {}
        return self

    @property
    def manifest(self) -> Manifest:
        return self._loaded()[0].manifest

    def __len__(self) -> int:
        return len(self._loaded()[0])

    def _loaded(self) -> tuple[CatalogueIndex, FeatureExtractor, ExactSearcher]:
        if self.index is None or self.extractor is None or self.searcher is None:
            raise NotLoadedError("Recommender.load() must be called first")
        return self.index, self.extractor, self.searcher

    def decode(self, image: ImageSource) -> np.ndarray:
        """One image → ``(S, S, 3)`` uint8 model input; raises :class:`ImageDecodeError` for bad input."""
        _, extractor, _ = self._loaded()
        return load_image(image, extractor.input_size, max_bytes=self.max_bytes, max_pixels=self.max_pixels)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """Decoded ``(N, S, S, 3)`` images → query vectors in the index's space.

        With a label-aware index the query gets the same treatment it was built for: backbone
        features plus the photo's colour histogram (recommender/refine.py), or the index's learned
        embedding head (recommender/head.py).
        """
        index, extractor, _ = self._loaded()

        def colours() -> np.ndarray:  # asked for by a refined index only
            assert index.refiner is not None
            return colour_histograms(pixels, index.refiner.colour_method)

        return index.query_vectors(extractor.extract(pixels), colours)

    @property
    def filter_columns(self) -> list[str]:
        """The catalogue's columns a ``where`` filter may name (every column of products.csv but the image path)."""
        return [column for column in self._loaded()[0].columns if column != "image"]

    def allowed(self, where: Where | None) -> np.ndarray | None:
        """The bool row mask of ``where`` (None: no filter); :class:`FilterError` for a column the catalogue lacks."""
        key = canonical(where)
        if not key:
            return None
        mask = self._masks.get(key)
        if mask is None:
            mask = allowed_rows(self._loaded()[0].products, key, self.filter_columns)
            if len(self._masks) >= KEPT_FILTERS:
                self._masks.pop(next(iter(self._masks)))
            self._masks[key] = mask
        return mask

    def matches(self, vectors: np.ndarray, k: int = 5, offset: int = 0, where: Where | None = None) -> list[list[Match]]:
        """Ranked matches ``offset .. offset+k-1`` for each query vector, among the products that pass ``where``."""
        index, _, searcher = self._loaded()
        rows, scores = searcher.search(vectors, k + offset, allowed=self.allowed(where))
        return [
            [self._match(offset + rank, int(row), float(score), index) for rank, (row, score) in enumerate(zip(r[offset:], s[offset:]))]
            for r, s in zip(rows, scores)
        ]

    def recommend(self, image: ImageSource, k: int = 5, offset: int = 0, where: Where | None = None) -> list[Match]:
        """The ``k`` most similar products (skipping the first ``offset``), best first; ``where`` filters them
        (:mod:`recommender.filters`; an empty list when no product passes)."""
        return self.matches(self.embed(self.decode(image)[None]), k, offset, where)[0]

    def iter_recommend(
        self, images: Iterable[ImageSource], k: int = 5, offset: int = 0, *, batch_size: int | None = None, where: Where | None = None
    ) -> Iterator[list[Match] | ImageDecodeError]:
        """Answers in input order, a batch at a time; a bad image yields its error in place.

        Takes ``batch_size`` images (default: the extractor's) from ``images``, decodes them,
        embeds them in one forward pass, searches, yields their answers, and only then takes the
        next ones: memory stays flat for any number of photos, and the first answers come out
        while later photos are not yet read.
        """
        _, extractor, _ = self._loaded()
        size = batch_size or extractor.batch_size
        pending = iter(images)
        while batch := list(islice(pending, size)):
            decoded: list[np.ndarray | ImageDecodeError] = []
            for image in batch:
                try:
                    decoded.append(self.decode(image))
                except ImageDecodeError as exc:
                    decoded.append(exc)
            good = [pixels for pixels in decoded if isinstance(pixels, np.ndarray)]
            answers = iter(self.matches(self.embed(np.stack(good)), k, offset, where) if good else [])
            del good
            for item in decoded:
                yield item if isinstance(item, ImageDecodeError) else next(answers)

    def recommend_many(
        self, images: Iterable[ImageSource], k: int = 5, offset: int = 0, *, batch_size: int | None = None, where: Where | None = None
    ) -> list[list[Match] | ImageDecodeError]:
        """:meth:`iter_recommend` collected into a list (answers are small; pixels never pile up)."""
        return list(self.iter_recommend(images, k, offset, batch_size=batch_size, where=where))

    def _match(self, rank: int, row: int, score: float, index: CatalogueIndex) -> Match:
        product = index.products[row]
        labels = {key: value for key, value in product.items() if key != "image" and value}
        return Match(
            rank=rank,
            row=row,
            id=product["id"],
            score=score,
            display_name=display_name(product),
            image_path=index.image_path(row),
            labels=labels,
        )
