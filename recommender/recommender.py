"""The public face of the engine: load an index once, answer "what looks like this photo?".

A photo goes decode (bytes → pixels) → embed (pixels → vectors) → search (vectors → rows and
similarities, recommender/search.py) → matches (rows → :class:`Match`); ``recommend`` does all
four for one photo, ``iter_recommend`` a batch at a time for many.

An index with local features (recommender/local_features.py) adds the exact-item stage
(recommender/exact_match.py): :meth:`Recommender.prepare` also finds the photo's keypoints (and makes its crops, with
``exact_crops``), :meth:`Recommender.embed_photos` embeds photo and crops in one forward pass, and
:meth:`Recommender.verify` turns them into a :class:`Query` whose verified products come first.
With a learned head, the shortlist searches the instance head's embedding of the products
(``CatalogueIndex.shortlist_vectors``, through an :class:`ExactSearcher` of its own): the product
itself is among the 50 for 96 % of shopper photos there (the photo alone, seeds 0-19), against 75 % in
the album's vectors (README "Exact item").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from .backends import Searcher, open_searcher
from .catalogue import display_name
from .colour import colour_histograms
from .errors import ModelMismatchError, NotLoadedError
from .exact_match import (
    AGREEING_LABELS,
    CLEAR_LEAD,
    CROP_SCALES,
    LABELS_AGREE,
    LIFT_LABELS,
    SHORTLIST,
    Verifier,
    crops_per_photo,
    lifts,
    query_crops,
    shortlist,
    shortlist_searcher,
)
from .extractor import FeatureExtractor, normalize_weights_option
from .filter_words import FilterWords
from .filters import CanonicalWhere, Where, allowed_rows, canonical
from .images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image, load_image, square_resize
from .index_store import CatalogueIndex, load_index
from .local_features import LocalFeatures, query_features
from .manifest import TENSORFLOW_RUNTIME, Manifest
from .onnx_model import FP32, ONNX, OnnxExtractor
from .onnx_model import MODEL_FILE as ONNX_MODEL_FILE
from .search import ExactSearcher
from .shop_links import LINK, clean_link, price_text

ImageSource = str | os.PathLike[str] | bytes | bytearray | BinaryIO
#: Label columns shown under a product's name, in this order, when the catalogue has them.
CAPTION_COLUMNS = ("articleType", "baseColour", "gender")
#: Filters whose row masks are kept (a shopper's few buttons, an operator's few --where options).
KEPT_FILTERS = 64
#: The first caption line of a product verified as the one in the shopper's photo.
EXACT_MATCH_LINE = "✅ Exact match"


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
    #: verified as the very product in the shopper's photo (recommender/exact_match.py)
    exact: bool = False

    def caption(self) -> str:
        """Display name plus category and colour, e.g. "Puma Men Red Jersey\nTshirts · Red · Men",
        and the price when the catalogue has one; an exact match says so on a first line of its own."""
        details = " · ".join(self.labels[c] for c in CAPTION_COLUMNS if self.labels.get(c))
        text = f"{self.display_name}\n{details}" if details else self.display_name
        price = price_text(dict(self.labels))
        text = f"{text}\n{price}" if price else text
        return f"{EXACT_MATCH_LINE}\n{text}" if self.exact else text

    @property
    def link(self) -> str | None:
        """The product's page (the catalogue's ``link`` column), when it has a valid one."""
        return clean_link(self.labels.get(LINK))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": round(self.score, 6), "exact_match": self.exact, **{k: v for k, v in self.labels.items() if k != "id"}}


#: what a shopper is told when a photo's keypoints ran out of memory (a very busy server)
OUT_OF_MEMORY = "There is not enough memory to read this image right now; please try again."


@dataclass(frozen=True)
class QueryPhoto:
    """One decoded photo ready for the forward pass; with exact-item search also its crops (empty without
    ``exact_crops``) and keypoints (or, from :meth:`Recommender.prepare` with ``keypoints_on``, the future that finds them)."""

    pixels: np.ndarray
    crops: np.ndarray | None = None
    local: LocalFeatures | Future[LocalFeatures] | None = None

    def keypoints(self) -> LocalFeatures | None:
        """The photo's keypoints, waiting for them while they are still being found."""
        if not isinstance(self.local, Future):
            return self.local
        try:
            return self.local.result()
        except MemoryError as exc:
            raise ImageDecodeError(OUT_OF_MEMORY) from exc


@dataclass(frozen=True, eq=False)
class ShortlistQuery:
    """A photo's exact-item shortlist queries (the photo, then its crops if any, in the space the shortlist
    searches) and what the label head believes the photo shows: each label's class probabilities
    (head.query_vectors_and_labels; None without a label head), which the verifier weighs (exact_match.LABELS_AGREE)."""

    vectors: np.ndarray
    labels: dict[str, np.ndarray] | None = None


@dataclass(frozen=True, eq=False)
class Query:
    """A photo's query: its vector, and the products its keypoints verified, which rank first on every page."""

    vector: np.ndarray
    pinned: tuple[int, ...] = ()
    #: ``pinned[0]`` is the very product in the photo
    exact: bool = False
    #: (row, lift): shortlisted products that rank as if their album score were ``lift`` higher (exact_match.lifts)
    lifted: tuple[tuple[int, float], ...] = ()


def _keypoints(decoded: Image.Image, executor: Executor | None) -> LocalFeatures | Future[LocalFeatures]:
    """A photo's keypoints, or their future on ``executor`` (found here when it was shut down: a server stopping)."""
    if executor is not None:
        try:
            return executor.submit(query_features, decoded)
        except RuntimeError:
            pass
    return query_features(decoded)


def extractor_for_index(
    manifest: Manifest,
    backbone: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    directory: Path | None = None,
    *,
    serving: bool = False,
) -> FeatureExtractor:
    """The extractor recorded in the manifest, or an explicit override (checked later against it).

    An index built for ONNX Runtime runs the model file in its ``directory`` (no TensorFlow);
    ``serving``: for a long-running server, which keeps no memory arena between passes.
    """
    runtime = manifest.runtime
    if runtime.get("name") == ONNX and backbone is None and weights is None:
        if directory is None:
            raise ValueError("an ONNX Runtime index needs its directory to find its model")
        exported = replace(manifest.model, runtime=TENSORFLOW_RUNTIME)
        return OnnxExtractor(
            directory / str(runtime.get("file", ONNX_MODEL_FILE)), exported, str(runtime.get("precision", FP32)),
            weights=manifest.weights, sha256=runtime.get("sha256"), memory_arena=not serving,
        )  # fmt: skip
    chosen_backbone = backbone or manifest.model.backbone
    chosen_weights = normalize_weights_option(weights) if weights is not None else manifest.weights
    return FeatureExtractor(
        backbone=chosen_backbone,
        weights=chosen_weights,
        input_size=manifest.model.input_size,
        pooling=manifest.model.pooling,
    )


def _colours_of(pixels: np.ndarray) -> Callable[[str], np.ndarray]:
    """The images' colour histograms by method, each made at most once and only when asked: the label head,
    a refinement and the instance head may each want them, or none."""
    return cache(lambda method: colour_histograms(pixels, method))


def _global_order(
    found: np.ndarray, similarity: np.ndarray, first: list[int], lifted: tuple[tuple[int, float], ...], allowed: np.ndarray | None,
    vectors: np.ndarray, vector: np.ndarray,
) -> list[tuple[int, float]]:
    """(row, album score) after the pinned ``first``: the searched rows ``found`` in their order, and with
    ``lifted`` rows (those ``allowed``) ranked by score plus their lift, one order over the whole catalogue,
    so every page and every filter sees the same one. The search reaches as deep as the page without lifts:
    a row it did not reach scores below every row it did."""
    ranked = [(int(row), float(score)) for row, score in zip(found, similarity) if row >= 0 and row not in first]
    lift = {row: amount for row, amount in lifted if row not in first and (allowed is None or allowed[row])}
    if not lift:
        return ranked
    reached = {row for row, _ in ranked}
    ranked += [(row, float(np.dot(vectors[row], vector))) for row in lift if row not in reached]
    return sorted(ranked, key=lambda pair: -(pair[1] + lift.get(pair[0], 0.0)))  # stable: ties keep the search's order


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
        serving: bool = False,
        exact_crops: bool = False,
    ) -> None:
        self.index_dir = Path(index_dir)
        #: a long-running server (the bot): the model keeps no memory arena between passes
        self.serving = serving
        self.backbone = backbone
        self.weights = weights
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        #: the exact-item shortlist searches crops of the photo besides the photo (:data:`CROP_SCALES`). Off by
        #: default: on 44k products with ResNet50 their forward passes cost 19-39 ms of the bot's p50 on 2 cores,
        #: beyond the stage's 50 ms budget, for 0.6 points more products first and 0.7 more in the top 5 (Quality, "Exact item")
        self.exact_crops = exact_crops
        self.index: CatalogueIndex | None = None
        self.extractor: FeatureExtractor | None = None
        self.searcher: Searcher | None = None
        #: the exact-item shortlist's own search, over the index's ``shortlist_vectors`` (None: ``searcher``)
        self._shortlist_searcher: ExactSearcher | None = None
        self.verifier: Verifier | None = None
        #: each product's class of every label the head knows (head.class_rows), for the exact-item stage's
        #: label check (exact_match.LABELS_AGREE); None when the shortlist is not the instance head's
        self._product_classes: dict[str, np.ndarray] | None = None
        self._masks: dict[CanonicalWhere, np.ndarray] = {}
        self._words: FilterWords | None = None

    def load(self) -> Recommender:
        index = load_index(self.index_dir, mmap=True)  # searching reads only the vectors: features and colours stay on disk
        extractor = extractor_for_index(index.manifest, self.backbone, self.weights, index.directory, serving=self.serving)
        if extractor.backbone != index.manifest.model.backbone:
            raise ModelMismatchError(
                f"The index at {self.index_dir} was built with backbone {index.manifest.model.backbone!r},"
                f" not {extractor.backbone!r}. Query with the index's own model or rebuild the index."
            )
        extractor.load()
        index.manifest.model.check_matches(extractor.identity)
        self.index, self.extractor = index, extractor
        self.searcher = open_searcher(index)
        self._shortlist_searcher = shortlist_searcher(index.shortlist_vectors) if index.shortlist_vectors is not None else None
        self.verifier = None
        self._product_classes = None
        if index.local_features is not None:
            self.verifier = Verifier(index.local_features, clear_lead=CLEAR_LEAD if index.instance_shortlist else None)
            if index.instance_shortlist and index.head is not None:
                self._product_classes = index.head.class_rows(index.products)  # 44,000 products: 15 ms
        self._masks = {}
        self._words = None
        return self

    @property
    def finds_exact_items(self) -> bool:
        """The index has local features, so photos go through the exact-item stage."""
        return self.verifier is not None

    @property
    def crops_per_photo(self) -> int:
        """Crops each photo brings to the forward pass besides itself (0 without exact items or :attr:`exact_crops`)."""
        return crops_per_photo() if self.finds_exact_items and self.exact_crops else 0

    @property
    def manifest(self) -> Manifest:
        return self._loaded()[0].manifest

    def __len__(self) -> int:
        return len(self._loaded()[0])

    def _loaded(self) -> tuple[CatalogueIndex, FeatureExtractor, Searcher]:
        if self.index is None or self.extractor is None or self.searcher is None:
            raise NotLoadedError("Recommender.load() must be called first")
        return self.index, self.extractor, self.searcher

    def decode(self, image: ImageSource) -> np.ndarray:
        """One image → ``(S, S, 3)`` uint8 model input; raises :class:`ImageDecodeError` for bad input."""
        _, extractor, _ = self._loaded()
        return load_image(image, extractor.input_size, max_bytes=self.max_bytes, max_pixels=self.max_pixels)

    def prepare(self, image: ImageSource, *, keypoints_on: Executor | None = None) -> QueryPhoto:
        """One image → :class:`QueryPhoto` (crops and keypoints only when the index finds exact items);
        raises :class:`ImageDecodeError` for bad input.

        ``keypoints_on``: find the keypoints there instead (the photo's ``local`` is then their future,
        :meth:`verify` waits for it), so that the forward pass need not wait for them: the bot's SIFT
        runs beside the model."""
        _, extractor, _ = self._loaded()
        if self.verifier is None:
            return QueryPhoto(self.decode(image))
        size = extractor.input_size
        decoded = decode_image(image, max_bytes=self.max_bytes, max_pixels=self.max_pixels, min_side=2 * size)
        try:
            crops = query_crops(decoded, size, CROP_SCALES if self.exact_crops else ())
            return QueryPhoto(square_resize(decoded, size), crops, _keypoints(decoded, keypoints_on))
        except MemoryError as exc:
            raise ImageDecodeError(OUT_OF_MEMORY) from exc

    def embed_photos(self, photos: list[QueryPhoto]) -> tuple[np.ndarray, list[ShortlistQuery | None]]:
        """Photos → their query vectors and, for each photo prepared for the exact-item stage, its
        :class:`ShortlistQuery`, in one forward pass."""
        index, _, _ = self._loaded()
        crops = [photo.crops for photo in photos if photo.crops is not None]
        pixels = np.concatenate([np.stack([photo.pixels for photo in photos]), *crops])
        colours = _colours_of(pixels)
        features, vectors, labels = self._features_and_vectors(pixels, colours)
        whole = vectors[: len(photos)]
        if not crops:
            return whole, [None] * len(photos)
        asked = index.shortlist_queries(features, vectors, colours)
        beliefs = labels if self._product_classes is not None else None  # rows beyond the photos' are their crops'
        rest = asked[len(photos) :]
        shortlist_queries: list[ShortlistQuery | None] = []
        for position, photo in enumerate(photos):
            if photo.crops is None:  # not prepared for the exact-item stage
                shortlist_queries.append(None)
                continue
            believed = None if beliefs is None else {label: likely[position].copy() for label, likely in beliefs.items()}  # not views of the batch
            shortlist_queries.append(ShortlistQuery(np.concatenate([asked[position : position + 1], rest[: len(photo.crops)]]), believed))
            rest = rest[len(photo.crops) :]
        return whole, shortlist_queries

    def verify(self, photo: QueryPhoto, vector: np.ndarray, shortlist_queries: ShortlistQuery | None, *, allowed: np.ndarray | None = None) -> Query:
        """The photo's :class:`Query`: the shortlist of the photo and its crops (``shortlist_queries``, from
        :meth:`embed_photos`), checked against the photo's keypoints.

        The whole catalogue is verified, whatever a filter asks: the verified product is the one in
        the photo, and :meth:`answer` leaves it out of a filtered page it does not pass, so a filtered
        answer is always the unfiltered one's passing products, in order. ``allowed``, a row mask,
        limits the candidates (the evaluator takes a product out to count false exact matches)."""
        _, _, searcher = self._loaded()
        if self.verifier is None or (local := photo.keypoints()) is None:
            return Query(vector)
        if shortlist_queries is None:
            rows, scores = searcher.candidates(vector[None], SHORTLIST, allowed=allowed)
        elif self._shortlist_searcher is not None:  # the shortlist's own space (a few hundred values): searched exactly
            rows, scores = self._shortlist_searcher.search(shortlist_queries.vectors, SHORTLIST, allowed=allowed)
        else:
            rows, scores = searcher.candidates(shortlist_queries.vectors, SHORTLIST, allowed=allowed)
        chosen, best = shortlist(rows, scores)
        belief = self._belief(shortlist_queries, chosen)  # looked up once, weighed at both thresholds
        found = self.verifier.verify(local, chosen, best, None if belief is None else belief >= LABELS_AGREE)
        return Query(vector, found.pinned, found.exact, lifts(chosen, best, None if belief is None else belief >= LIFT_LABELS))

    def agreeing(self, shortlist_query: ShortlistQuery | None, rows: np.ndarray, at: float = LABELS_AGREE) -> np.ndarray | None:
        """For each of ``rows``, whether the label head gives each of its catalogue labels in
        :data:`~recommender.exact_match.AGREEING_LABELS` at least ``at`` (:data:`~recommender.exact_match.LABELS_AGREE`)
        for the photo (a product lacking one never agrees); None without the label head's belief."""
        belief = self._belief(shortlist_query, rows)
        return None if belief is None else belief >= at

    def _belief(self, shortlist_query: ShortlistQuery | None, rows: np.ndarray) -> np.ndarray | None:
        """For each of ``rows``, the least probability the label head gives one of its catalogue labels in
        :data:`~recommender.exact_match.AGREEING_LABELS` for the photo (-1 where the product lacks one); None
        without the label head's belief or any of those labels."""
        if shortlist_query is None or shortlist_query.labels is None or self._product_classes is None:
            return None
        belief: np.ndarray | None = None
        for label in AGREEING_LABELS:
            if label in shortlist_query.labels and label in self._product_classes:
                classes = self._product_classes[label][rows]
                likely = np.where(classes >= 0, shortlist_query.labels[label][np.maximum(classes, 0)], -1.0)
                belief = likely if belief is None else np.minimum(belief, likely)
        return belief

    def queries(self, photos: list[QueryPhoto]) -> list[Query]:
        """:meth:`embed_photos` then :meth:`verify` for each photo."""
        vectors, crop_vectors = self.embed_photos(photos)
        return [self.verify(photo, vector, crops) for photo, vector, crops in zip(photos, vectors, crop_vectors)]

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """Decoded ``(N, S, S, 3)`` images → query vectors in the index's space.

        With a label-aware index the query gets the same treatment it was built for: backbone
        features plus the photo's colour histogram (recommender/refine.py), or the index's learned
        embedding head (recommender/head.py).
        """
        return self._features_and_vectors(pixels, _colours_of(pixels))[1]

    def _features_and_vectors(
        self, pixels: np.ndarray, colours: Callable[[str], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray] | None]:
        """Decoded images → (backbone features, query vectors, the head's label probabilities or None); the
        images' ``colours`` (:func:`_colours_of`) are made only for an index whose vectors need them."""
        index, extractor, _ = self._loaded()
        features = extractor.extract(pixels)
        return features, *index.query_vectors_and_labels(features, colours)

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

    def passing(self, where: Where | None) -> int:
        """How many products pass ``where`` (all of them for no filter)."""
        allowed = self.allowed(where)
        return len(self) if allowed is None else int(allowed.sum())

    @property
    def filter_words(self) -> FilterWords:
        """The catalogue's label values as shoppers write them (recommender/filter_words.py), made once."""
        if self._words is None:
            index = self._loaded()[0]
            self._words = FilterWords(index.products, index.columns)
        return self._words

    def matches(self, vectors: np.ndarray, k: int = 5, offset: int = 0, where: Where | None = None) -> list[list[Match]]:
        """Ranked matches ``offset .. offset+k-1`` for each query vector, among the products that pass ``where``."""
        return self.answer([Query(vector) for vector in vectors], k, offset, where)

    def answer(self, queries: list[Query], k: int = 5, offset: int = 0, where: Where | None = None) -> list[list[Match]]:
        """Ranked matches ``offset .. offset+k-1`` of each query: its pinned products first, then the
        global order without them (its lifted products risen, :func:`_global_order`), among the products
        that pass ``where``."""
        index, _, searcher = self._loaded()
        if not queries:
            return []
        allowed = self.allowed(where)
        pinned = [[row for row in query.pinned if allowed is None or allowed[row]] for query in queries]
        vectors = np.stack([query.vector for query in queries])
        rows, scores = searcher.search(vectors, k + offset + max(len(p) for p in pinned), allowed=allowed, where=canonical(where))
        pages = []
        for query, vector, first, found, similarity in zip(queries, vectors, pinned, rows, scores):
            exact = query.exact and bool(first) and first[0] == query.pinned[0]
            ranked = [(row, float(np.dot(index.vectors[row], vector))) for row in first]
            ranked += _global_order(found, similarity, first, query.lifted, allowed, index.vectors, vector)
            pages.append([
                replace(self._match(offset + rank, row, score, index), exact=exact and offset + rank == 0)
                for rank, (row, score) in enumerate(ranked[offset : offset + k])
            ])  # fmt: skip
        return pages

    def recommend(self, image: ImageSource, k: int = 5, offset: int = 0, where: Where | None = None) -> list[Match]:
        """The ``k`` most similar products (skipping the first ``offset``), best first; ``where`` filters them
        (:mod:`recommender.filters`; an empty list when no product passes). A product verified as the
        one in the photo comes first, marked ``exact``."""
        return self.answer(self.queries([self.prepare(image)]), k, offset, where)[0]

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
            decoded: list[QueryPhoto | ImageDecodeError] = []
            for image in batch:
                try:
                    decoded.append(self.prepare(image))
                except ImageDecodeError as exc:
                    decoded.append(exc)
            good = [photo for photo in decoded if isinstance(photo, QueryPhoto)]
            answers = iter(self.answer(self.queries(good), k, offset, where) if good else [])
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
