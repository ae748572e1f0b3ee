"""The catalogue index on disk: the one module that knows its files, reading them and writing them.

Layout of an index directory (no pickle anywhere)::

    manifest.json   what produced the vectors (recommender/manifest.py): model identity, counts, dates
    vectors.npy     float32 (N, vector_dim), L2-normalised search vectors, row i = products.csv row i
    features.npy    float32 (N, feature_dim) backbone features (only when a refinement made vectors differ)
    colour.npy      float32 (N, 320) colour histograms of the products (recommender/colour.py)
    refine*.json/npy  the label-aware refinement learned at build time (recommender/refine.py)
    head*.json/npy  or the learned embedding head, when built with --head labels (recommender/head.py);
                    with keypoints also instance_head*.json/npy, the head that tells products apart, and
    shortlist_vectors.npy  its vector of every product (photo, and its shopper-like views where every product
                    trained the head), which the exact-item shortlist searches
    local_*.npy     the products' SIFT keypoints for exact-item search (recommender/local_features.py)
    ann.faiss, ann_rows.npy  the approximate search index, when built with --backend ann (recommender/ann_search.py)
    products.csv    id, image (relative to the manifest's images_root), then the styles.csv columns
    skipped.csv     photos that could not be read at build time, with the reason

:class:`IndexWriter` writes an index into a temporary sibling directory and swaps it in with
renames, so a running bot never reads a half-written index; :func:`load_index` validates one.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from . import colour
from . import head as head_module
from . import refine as refine_module
from .ann_search import AnnIndex
from .catalogue import ID_COLUMN, Catalogue, CatalogueItem
from .confinement import ImageConfinement
from .errors import IndexCorruptError, IndexNotFoundError
from .fileio import read_json, swap_into_place, temporary_sibling, utc_timestamp, write_json_atomic
from .head import EmbeddingHead
from .local_features import LocalFeatureStore
from .manifest import (
    ANN_BACKEND,
    EXACT_BACKEND,
    MILVUS_BACKEND,
    NO_REFINEMENT,
    TENSORFLOW_RUNTIME,
    CatalogueSummary,
    Manifest,
    ModelIdentity,
)
from .onnx_model import MODEL_FILE as ONNX_MODEL_FILE
from .onnx_model import file_sha256
from .refine import LabelCentroids

MANIFEST = "manifest.json"
VECTORS = "vectors.npy"
FEATURES = "features.npy"
#: the instance head's embedding of every product: the exact-item stage's shortlist space
SHORTLIST_VECTORS = "shortlist_vectors.npy"
COLOURS = "colour.npy"
PRODUCTS = "products.csv"
SKIPPED = "skipped.csv"
IMAGE_COLUMN = "image"

#: rows refined per step, so refining a huge catalogue needs bounded memory
_REFINE_BLOCK = 8192


@dataclass
class CatalogueIndex:
    """An index loaded in memory: vectors, product rows and the manifest that describes them."""

    directory: Path
    manifest: Manifest
    vectors: np.ndarray
    products: list[dict[str, str]]
    #: backbone features (the same array as ``vectors`` when there is no refinement or head)
    features: np.ndarray
    columns: list[str] = field(default_factory=list)
    #: colour histograms, or None for an index built without them
    colours: np.ndarray | None = None
    #: the label-aware refinement the vectors were built with, or None
    refiner: LabelCentroids | None = None
    #: the learned embedding head that made the vectors (and embeds queries), or None
    head: EmbeddingHead | None = None
    #: the products' keypoints for exact-item search, or None for an index built without them
    local_features: LocalFeatureStore | None = None
    #: what the exact-item shortlist searches, and the head that embeds its queries: the instance head
    #: (recommender/head.py) and its embedding of every product; for an index built before it, the
    #: head's own embedding before the label pull (the pull gathers products of one type and colour).
    #: None: the shortlist searches ``vectors`` (no head, or no keypoints)
    shortlist_vectors: np.ndarray | None = None
    shortlist_head: EmbeddingHead | None = None
    #: the approximate search index (``--backend ann``), or None for the exact search
    ann: AnnIndex | None = None

    def __len__(self) -> int:
        return len(self.products)

    @property
    def images_root(self) -> Path:
        return Path(self.manifest.images_root)

    def image_path(self, row: int) -> Path:
        """Absolute path of a product's catalogue photo."""
        return self.images_root / self.products[row][IMAGE_COLUMN]

    def ids(self) -> list[str]:
        return [product[ID_COLUMN] for product in self.products]

    def query_vectors(self, features: np.ndarray, colours: Callable[[str], np.ndarray]) -> np.ndarray:
        """Query photos' backbone features → vectors in this index's space: through its head, its
        refinement or as they are. A head that takes colours, and a refinement, also need the photos'
        ``colours(method)``, made only then."""
        return self.query_vectors_and_labels(features, colours)[0]

    def query_vectors_and_labels(self, features: np.ndarray, colours: Callable[[str], np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """:meth:`query_vectors` and, through a head, each label's class probabilities for the photos (None without one)."""
        if self.head is not None:
            return self.head.query_vectors_and_labels(features, self.head.colours_of(colours))
        if self.refiner is not None:
            return self.refiner.query_vectors(features, colours(self.refiner.colour_method)), None
        return features, None

    @property
    def colour_method(self) -> str:
        """How this index's stored colour histograms were made, and so how a query's must be: its head's
        recorded method, its refinement's, or what a plain index records."""
        if self.head is not None:
            return self.head.settings.colour_method
        if self.refiner is not None:
            return self.refiner.colour_method
        return colour.method_of(self.manifest.refinement)

    @property
    def instance_shortlist(self) -> bool:
        """The exact-item shortlist searches the instance head's space (trained to tell products apart)."""
        return self.shortlist_head is not None and self.shortlist_head is not self.head

    def shortlist_queries(self, features: np.ndarray, query_vectors: np.ndarray, colours: Callable[[str], np.ndarray]) -> np.ndarray:
        """Photos' (and crops') backbone features → queries in :attr:`shortlist_vectors`' space (their
        ``query_vectors`` when the shortlist searches ``vectors``). An instance head that takes colours gets
        the photos' ``colours(method)``, made only then."""
        if self.shortlist_head is None:
            return query_vectors
        head = self.shortlist_head
        return head.embed(head.inputs(features, head.colours_of(colours)))


def index_exists(directory: str | os.PathLike[str]) -> bool:
    """Whether ``directory`` holds an index (its manifest), complete or damaged."""
    return (Path(directory) / MANIFEST).is_file()


# --- reading ----------------------------------------------------------------------------------


def _read_products(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [dict(row) for row in reader]
        return rows, list(reader.fieldnames or [])


def load_index(directory: str | os.PathLike[str], *, mmap: bool = False) -> CatalogueIndex:
    """Load and validate an index directory; raise a clear error if anything is off."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise IndexNotFoundError(
            f"No catalogue index at {directory} (no {MANIFEST}). Build one with: "
            f"python scripts/build_index.py --images DIR --out {directory}"
        )
    try:
        manifest = Manifest.from_json(read_json(manifest_path), manifest_path)
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"The index manifest {manifest_path} is unreadable: {exc}") from exc
    try:
        vectors = np.load(directory / VECTORS, mmap_mode="r" if mmap else None, allow_pickle=False)
        products, columns = _read_products(directory / PRODUCTS)
    except (OSError, ValueError, EOFError, csv.Error) as exc:  # np.load raises EOFError on an empty file
        raise IndexCorruptError(f"The index at {directory} is damaged ({exc}). Rebuild it.") from exc
    vector_dim = manifest.vector_dim
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != vector_dim:
        raise IndexCorruptError(
            f"{directory / VECTORS} holds {vectors.dtype} {vectors.shape}, expected float32 (N, {vector_dim})."
        )
    if not (len(vectors) == len(products) == manifest.count):
        raise IndexCorruptError(
            f"The index at {directory} is inconsistent: {len(vectors)} vectors, {len(products)} products,"
            f" manifest says {manifest.count}. Rebuild it."
        )
    if ID_COLUMN not in columns or IMAGE_COLUMN not in columns:
        raise IndexCorruptError(f"{directory / PRODUCTS} lacks the id/image columns. Rebuild the index.")
    _check_images_confined(directory, manifest, products)
    refined = manifest.refinement_method == refine_module.METHOD
    headed = manifest.refinement_method == head_module.METHOD
    try:
        refiner = LabelCentroids.load(directory) if refined else None
        head = EmbeddingHead.load(directory) if headed else None
        features = _load_rows(directory / FEATURES, len(vectors), manifest.model.feature_dim, mmap) if refined or headed else vectors
        colours = _load_rows(directory / COLOURS, len(vectors), None, mmap) if (directory / COLOURS).exists() or refined else None
    except (OSError, ValueError, EOFError, KeyError) as exc:
        raise IndexCorruptError(f"The index at {directory} is damaged ({exc}). Rebuild it.") from exc
    local_features = None
    if manifest.local_features:
        local_features = LocalFeatureStore.load(directory, len(vectors), mmap=mmap)
        if local_features is None:
            raise IndexCorruptError(f"The index at {directory} lacks the local features its manifest lists. Rebuild it.")
    ann = None
    if manifest.backend == ANN_BACKEND:
        ann = AnnIndex.load(directory, manifest.search, len(vectors), vector_dim, mmap=mmap)
    elif manifest.backend == MILVUS_BACKEND:
        uri = str(manifest.search.get("uri", ""))
        if not uri and not (directory / "milvus.db").is_dir():
            raise IndexCorruptError(f"The index at {directory} lacks milvus.db, the Milvus Lite collection its manifest lists. Rebuild it.")
    elif manifest.backend != EXACT_BACKEND:
        raise IndexCorruptError(
            f"The index at {directory} was built for the search backend {manifest.backend!r}, which this version does not serve. "
            "Rebuild it with --backend exact, ann or milvus."
        )
    head_width = manifest.model.feature_dim + (colour.DIM if head is not None and head.takes_colours else 0)  # features, and colours where it takes them
    if head is not None and (head.feature_dim != head_width or head.vector_dim != vector_dim):
        raise IndexCorruptError(
            f"The embedding head at {directory} maps {head.feature_dim} to {head.vector_dim} values; the manifest says "
            f"{head_width} to {vector_dim}. Rebuild the index."
        )
    if head is not None and head.takes_colours and colours is None:
        raise IndexCorruptError(f"The index at {directory} lacks {COLOURS}, the colour histograms its embedding head takes. Rebuild it.")
    shortlist_head, shortlist_vectors = _shortlist(directory, head, features, colours, mmap) if head is not None and local_features is not None else (None, None)
    return CatalogueIndex(
        directory=directory, manifest=manifest, vectors=vectors, products=products, columns=columns, features=features,
        colours=colours, refiner=refiner, head=head, local_features=local_features, shortlist_vectors=shortlist_vectors,
        shortlist_head=shortlist_head, ann=ann,
    )  # fmt: skip


def _shortlist(directory: Path, head: EmbeddingHead, features: np.ndarray, colours: np.ndarray | None, mmap: bool) -> tuple[EmbeddingHead, np.ndarray]:
    """The exact-item shortlist's head and product vectors: the instance head and its stored vectors, or, for
    an index built before it, the head itself and its embedding before the pull, made here."""
    params_json, _, _ = head_module.head_files(head_module.INSTANCE_PREFIX)
    if not (directory / params_json).exists():
        blocks = []
        for start in range(0, len(features), _REFINE_BLOCK):
            rows = slice(start, start + _REFINE_BLOCK)
            blocks.append(head.embed(head.inputs(features[rows], None if colours is None else colours[rows])))  # a head without colours ignores them
        return head, np.concatenate(blocks) if blocks else np.zeros((0, head.vector_dim), np.float32)
    try:
        instance = EmbeddingHead.load(directory, head_module.INSTANCE_PREFIX)
        wanted = features.shape[1] + (colour.DIM if instance.takes_colours else 0)  # features, and colours where it takes them
        if instance.feature_dim != wanted:
            raise ValueError(f"the instance head takes {instance.feature_dim} inputs, not {wanted}")
        return instance, _load_rows(directory / SHORTLIST_VECTORS, len(features), instance.vector_dim, mmap)
    except (OSError, ValueError, EOFError, KeyError) as exc:
        raise IndexCorruptError(f"The index at {directory} is damaged ({exc}). Rebuild it.") from exc


def _check_images_confined(directory: Path, manifest: Manifest, products: Sequence[Mapping[str, str]]) -> None:
    """Every product photo must lie inside the catalogue's ``images_root`` (see :class:`ImageConfinement`)."""
    raw_root = manifest.images_root
    if not raw_root or not os.path.isabs(raw_root):
        raise IndexCorruptError(
            f"{directory / MANIFEST} has no absolute images_root (got {raw_root!r}). Rebuild the index."
        )
    confinement = ImageConfinement(raw_root)
    for row, product in enumerate(products):
        image = product.get(IMAGE_COLUMN) or ""
        if not confinement.allows(image):
            raise IndexCorruptError(
                f"{directory / PRODUCTS} line {row + 2} (id {product.get(ID_COLUMN)!r}): the image path {image!r} "
                f"points outside the catalogue folder {confinement.root}; refusing to read it. Rebuild the index."
            )


def _load_rows(path: Path, count: int, dim: int | None, mmap: bool) -> np.ndarray:
    array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if array.dtype != np.float32 or array.ndim != 2 or len(array) != count or (dim is not None and array.shape[1] != dim):
        raise ValueError(f"{path.name} holds {array.dtype} {array.shape}, expected float32 ({count}, {dim or 'd'})")
    return array


# --- writing ----------------------------------------------------------------------------------


def _write_products(path: Path, products: Iterable[Mapping[str, str]], columns: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for product in products:
            writer.writerow(product)


def _write_skipped(path: Path, skipped: Sequence[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([IMAGE_COLUMN, "reason"])
        writer.writerows(skipped)


class IndexWriter:
    """Writes one index into a hidden staging folder beside ``out_dir``; :meth:`commit` swaps it in.

    Use it as a context manager: fill every row with :meth:`put` (row i = product i), then
    :meth:`commit`. Leaving the block without committing (an error, Ctrl-C) deletes the staging
    folder, so nothing half-written ever appears at ``out_dir`` and an earlier index stays served.
    Rows are memory-mapped, so a large catalogue needs little memory.
    """

    def __init__(self, out_dir: Path, count: int, feature_dim: int, *, refine: str = NO_REFINEMENT, keep_features: bool = False) -> None:
        self.out_dir = out_dir
        self.count = count
        self.feature_dim = feature_dim
        self.refine = refine
        #: the search vectors will differ from the features (a head), so keep features.npy too
        self.keep_features = keep_features
        self._staging: Path | None = None
        self._features: np.memmap | None = None
        self._colours: np.memmap | None = None

    @property
    def _refined(self) -> bool:
        return self.refine == refine_module.METHOD

    @property
    def features(self) -> np.ndarray:
        """The backbone features put so far (row i = product i), e.g. to train a head before :meth:`commit`."""
        assert self._features is not None, "use IndexWriter as a context manager"
        return self._features

    @property
    def colours(self) -> np.ndarray:
        """The colour histograms put so far (row i = product i), which an instance head may take beside the features."""
        assert self._colours is not None, "use IndexWriter as a context manager"
        return self._colours

    def __enter__(self) -> IndexWriter:
        staging = temporary_sibling(self.out_dir, "tmp")
        staging.mkdir(parents=True)
        self._staging = staging
        try:
            # Refined: the backbone features are kept beside the refined search vectors.
            features_file = staging / (FEATURES if self._refined or self.keep_features else VECTORS)
            self._features = np.lib.format.open_memmap(features_file, mode="w+", dtype=np.float32, shape=(self.count, self.feature_dim))
            self._colours = np.lib.format.open_memmap(staging / COLOURS, mode="w+", dtype=np.float32, shape=(self.count, colour.DIM))
        except BaseException:
            self._discard()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None) -> None:
        self._discard()  # after a commit there is nothing left to discard

    def _discard(self) -> None:
        self._features = self._colours = None
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def put(self, row: int, features: np.ndarray, colours: np.ndarray) -> None:
        """Set one product's backbone features and colour histogram."""
        assert self._features is not None and self._colours is not None, "use IndexWriter as a context manager"
        self._features[row] = features
        self._colours[row] = colours

    def commit(
        self,
        catalogue: Catalogue,
        items: Sequence[CatalogueItem],
        skipped: Sequence[tuple[str, str]],
        model: ModelIdentity,
        weights: str,
        previous: Manifest | None = None,
        head: EmbeddingHead | None = None,
        instance_head: EmbeddingHead | None = None,
        instance_view_means: np.ndarray | None = None,
        runtime: Mapping[str, Any] | None = None,
        runtime_model: Path | None = None,
        local_features: LocalFeatureStore | None = None,
        search: Callable[[Path, np.ndarray, Manifest], Mapping[str, Any]] | None = None,
    ) -> Manifest:
        """Write the search vectors, products.csv, skipped.csv and the manifest, then swap the index in.

        ``items`` are the products of the rows put, in row order, drawn from ``catalogue``;
        ``skipped`` lists the photos left out; ``model`` and ``weights`` made the features;
        ``previous`` is the index being updated (its creation date is kept); ``head``, a trained embedding
        head that makes the search vectors (the writer must keep its features); ``instance_head``, stored
        with keypoints only, makes the exact-item shortlist's vectors, with ``instance_view_means`` (each row's
        :func:`~recommender.head.view_means`, where every product has them) added. ``runtime`` describes
        how the model ran (ONNX Runtime: its ``runtime_model`` file is copied in as ``model.onnx`` and
        its SHA-256 recorded). ``local_features``, the products' keypoints (row-aligned), are stored
        for exact-item search. ``search(staging, vectors, manifest)``, given the finished search vectors
        and the manifest about to be written, writes a search backend's own files (or collection) and
        returns the manifest's ``search`` entry. Returns the manifest written.
        """
        assert self._staging is not None and self._features is not None and self._colours is not None, "use IndexWriter as a context manager"
        assert len(items) == self.count, f"{len(items)} products for {self.count} rows"
        staging = self._staging
        self._features.flush()
        self._colours.flush()
        if head is not None:
            assert self.keep_features and not self._refined, "a head needs keep_features=True and no refinement"
            shortlist = instance_head if local_features is not None else None
            vector_dim, refinement = self._write_head_vectors(staging, [item.labels for item in items], head, shortlist, instance_view_means)
        else:
            vector_dim, refinement = self._write_search_vectors(staging, [item.labels for item in items])
        self._features = self._colours = None
        label_columns = [column for column in catalogue.columns if column != ID_COLUMN]
        _write_products(
            staging / PRODUCTS,
            ({**item.labels, ID_COLUMN: item.id, IMAGE_COLUMN: item.image} for item in items),
            [ID_COLUMN, IMAGE_COLUMN, *label_columns],
        )
        _write_skipped(staging / SKIPPED, skipped)
        runtime_details = dict(runtime or {"name": TENSORFLOW_RUNTIME})
        if runtime_model is not None:
            shutil.copyfile(runtime_model, staging / ONNX_MODEL_FILE)
            runtime_details.update(file=ONNX_MODEL_FILE, sha256=file_sha256(staging / ONNX_MODEL_FILE))
        local_details: dict[str, Any] = {}
        if local_features is not None:
            assert len(local_features) == self.count, f"{len(local_features)} keypoint sets for {self.count} rows"
            local_features.save(staging)
            local_details = {**local_features.describe(), "keypoints": int(local_features.offsets[-1])}
            if head is not None and instance_head is not None:
                local_details["shortlist"] = {"method": head_module.INSTANCE_METHOD, "vector_dim": instance_head.vector_dim,
                                              "settings": instance_head.settings.to_json(),
                                              "views_in_product_vectors": instance_head.settings.views if instance_view_means is not None else 0}  # fmt: skip
        now = utc_timestamp()
        manifest = Manifest(
            model=model,
            weights=weights,
            count=self.count,
            vector_dim=vector_dim,
            images_root=str(catalogue.images_dir.resolve()),
            created_at=previous.created_at if previous is not None else now,
            updated_at=now if previous is not None else None,
            refinement=refinement,
            catalogue=CatalogueSummary(
                styles_csv=str(catalogue.styles_path.resolve()) if catalogue.styles_path else None,
                columns=tuple(label_columns),
                skipped=len(skipped),
                missing_images=len(catalogue.missing_images),
                unlabelled=len(catalogue.unlabelled),
            ),
            runtime=runtime_details,
            local_features=local_details,
        )
        if search is not None:
            vectors = np.load(staging / VECTORS, mmap_mode="r", allow_pickle=False)
            manifest = manifest.updated(search=dict(search(staging, vectors, manifest)))
            del vectors
        write_json_atomic(staging / MANIFEST, manifest.to_json())
        swap_into_place(staging, self.out_dir)
        self._staging = None
        return manifest

    def _write_search_vectors(self, staging: Path, labels: Sequence[Mapping[str, str]]) -> tuple[int, dict[str, Any]]:
        """(vector_dim, refinement description): plain features are already the search vectors;
        a refinement is learned from the rows' labels and writes its own vectors and files."""
        if not self._refined:
            return self.feature_dim, {"method": NO_REFINEMENT, "colour_histogram": colour.describe()}
        features, colours = self._features, self._colours
        assert features is not None and colours is not None
        refiner = LabelCentroids.fit(features, colours, labels)
        vector_dim = refiner.vector_dim(self.feature_dim)
        self._write_vectors(staging, vector_dim, lambda rows: refiner.index_vectors(features[rows], colours[rows], labels[rows]))
        refiner.save(staging)
        return vector_dim, refiner.describe()

    def _write_head_vectors(
        self, staging: Path, labels: Sequence[Mapping[str, str]], head: EmbeddingHead, shortlist: EmbeddingHead | None,
        seen: np.ndarray | None,
    ) -> tuple[int, dict[str, Any]]:
        """(vector_dim, head description): every product's vector from the trained head, and the head's files;
        with a ``shortlist`` (instance) head also its files and every product's vector in its space (with its
        views ``seen``, where given: :func:`~recommender.head.product_vectors`)."""
        features, colours = self._features, self._colours
        assert features is not None and colours is not None
        self._write_vectors(staging, head.vector_dim, lambda rows: head.index_vectors(features[rows], labels[rows], colours[rows]))
        head.save(staging)
        if shortlist is not None:
            def vectors_of(rows: slice) -> np.ndarray:
                inputs = shortlist.inputs(features[rows], colours[rows])  # a head without colours ignores them
                return head_module.product_vectors(shortlist, inputs, None if seen is None else seen[rows])

            self._write_vectors(staging, shortlist.vector_dim, vectors_of, SHORTLIST_VECTORS)
            shortlist.save(staging, head_module.INSTANCE_PREFIX)
        return head.vector_dim, head.describe()

    def _write_vectors(self, staging: Path, vector_dim: int, vectors_of: Callable[[slice], np.ndarray], name: str = VECTORS) -> None:
        """vectors.npy (or ``name``), computed block by block so memory stays bounded for huge catalogues."""
        vectors = np.lib.format.open_memmap(staging / name, mode="w+", dtype=np.float32, shape=(self.count, vector_dim))
        for start in range(0, self.count, _REFINE_BLOCK):
            vectors[start : start + _REFINE_BLOCK] = vectors_of(slice(start, start + _REFINE_BLOCK))
        vectors.flush()
        del vectors
