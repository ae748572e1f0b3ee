"""The catalogue index on disk: vectors, product table and a self-describing manifest.

Layout of an index directory (no pickle anywhere)::

    manifest.json   what produced the vectors (backbone, weights fingerprint, refinement, ...), counts, dates
    vectors.npy     float32 (N, vector_dim), L2-normalised search vectors, row i = products.csv row i
    features.npy    float32 (N, dim) raw backbone features (only when a refinement made vectors differ)
    colour.npy      float32 (N, 320) colour histograms of the products (recommender/colour.py)
    refine*.json/npy  the label-aware refinement learned at build time (recommender/refine.py)
    products.csv    id, image (relative to manifest["images_root"]), then the styles.csv columns
    skipped.csv     images that could not be read at build time, with the reason

Indexes are written to a temporary sibling directory and swapped in with renames, so a running
bot never reads a half-written index.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .refine import METHOD as REFINE_METHOD
from .refine import LabelCentroids

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VECTORS = "vectors.npy"
FEATURES = "features.npy"
COLOURS = "colour.npy"
PRODUCTS = "products.csv"
SKIPPED = "skipped.csv"
#: Keys that must agree between an index and the extractor that queries it.
MODEL_KEYS = ("backbone", "weights_fingerprint", "input_size", "pooling", "dim")


class CatalogueIndexError(RuntimeError):
    """Any problem with an index directory; the message tells the operator what to do."""


class IndexNotFoundError(CatalogueIndexError):
    """No index at the given directory."""


class IndexCorruptError(CatalogueIndexError):
    """The index directory exists but its files are missing, unreadable or inconsistent."""


class ModelMismatchError(CatalogueIndexError):
    """The extractor asked for does not produce the features stored in the index."""


@dataclass
class CatalogueIndex:
    """An index loaded in memory: vectors, product rows and the manifest that describes them."""

    directory: Path
    manifest: dict[str, Any]
    vectors: np.ndarray
    products: list[dict[str, str]]
    columns: list[str] = field(default_factory=list)
    #: raw backbone features (the same array as ``vectors`` when there is no refinement)
    features: np.ndarray | None = None
    #: colour histograms, or None for an index built without them
    colours: np.ndarray | None = None
    #: the label-aware refinement the vectors were built with, or None
    refiner: LabelCentroids | None = None

    def __len__(self) -> int:
        return len(self.products)

    @property
    def images_root(self) -> Path:
        return Path(self.manifest.get("images_root", ""))

    def image_path(self, row: int) -> Path:
        """Absolute path of a product's catalogue photo."""
        return self.images_root / self.products[row]["image"]

    def ids(self) -> list[str]:
        return [product["id"] for product in self.products]


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` complete (fsync + ``os.replace``) or not at all.

    Each call writes its own temporary file, so threads or processes writing the same path at
    once never write into one another's (the bot keeps photo copies from several threads).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (never half-written)."""
    with atomic_file(path) as handle:
        handle.write(json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8"))


def write_products(path: Path, products: Iterable[Mapping[str, str]], columns: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for product in products:
            writer.writerow(product)


def read_products(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [dict(row) for row in reader]
        return rows, list(reader.fieldnames or [])


def write_skipped(path: Path, skipped: Sequence[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "reason"])
        writer.writerows(skipped)


def utc_timestamp() -> str:
    """When something was written, as ISO 8601 UTC (manifest dates)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def make_manifest(
    extractor_description: Mapping[str, Any],
    *,
    count: int,
    images_root: Path,
    catalogue: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        **dict(extractor_description),
        "count": int(count),
        "images_root": str(Path(images_root).resolve()),
        "created_at": utc_timestamp(),
        "catalogue": dict(catalogue or {}),
    }
    manifest.update(extra or {})
    return manifest


def temporary_sibling(directory: Path, tag: str) -> Path:
    return directory.with_name(f".{directory.name}.{tag}-{os.getpid()}-{int(time.time() * 1000)}")


def swap_into_place(staging: Path, target: Path) -> None:
    """Replace ``target`` by the fully written ``staging`` directory.

    The old index is renamed aside first and removed only after the new one is in place, so an
    index is always present except for the instant between two renames. When the second rename
    fails (``OSError``, re-raised), the old index is renamed back: a failed swap changes nothing.
    """
    old: Path | None = None
    if target.exists():
        old = temporary_sibling(target, "old")
        os.rename(target, old)
    try:
        os.rename(staging, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
        manifest = read_json(manifest_path)
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"The index manifest {manifest_path} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise IndexCorruptError(
            f"{manifest_path} has format version {manifest.get('format_version') if isinstance(manifest, dict) else '?'};"
            f" this program reads version {FORMAT_VERSION}. Rebuild the index."
        )
    missing = [key for key in (*MODEL_KEYS, "weights", "count") if key not in manifest]
    if missing:
        raise IndexCorruptError(f"{manifest_path} lacks {', '.join(sorted(missing))}. Rebuild the index.")
    try:
        vectors = np.load(directory / VECTORS, mmap_mode="r" if mmap else None, allow_pickle=False)
        products, columns = read_products(directory / PRODUCTS)
    except (OSError, ValueError, EOFError, csv.Error) as exc:  # np.load raises EOFError on an empty file
        raise IndexCorruptError(f"The index at {directory} is damaged ({exc}). Rebuild it.") from exc
    vector_dim = manifest.get("vector_dim", manifest["dim"])
    if vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[1] != vector_dim:
        raise IndexCorruptError(
            f"{directory / VECTORS} holds {vectors.dtype} {vectors.shape}, expected float32 (N, {vector_dim})."
        )
    if not (len(vectors) == len(products) == manifest["count"]):
        raise IndexCorruptError(
            f"The index at {directory} is inconsistent: {len(vectors)} vectors, {len(products)} products,"
            f" manifest says {manifest['count']}. Rebuild it."
        )
    if "id" not in columns or "image" not in columns:
        raise IndexCorruptError(f"{directory / PRODUCTS} lacks the id/image columns. Rebuild the index.")
    _check_images_confined(directory, manifest, products)
    refined = (manifest.get("refinement") or {}).get("method") == REFINE_METHOD
    try:
        refiner = LabelCentroids.load(directory) if refined else None
        features = _load_rows(directory / FEATURES, len(vectors), manifest["dim"], mmap) if refined else vectors
        colours = _load_rows(directory / COLOURS, len(vectors), None, mmap) if (directory / COLOURS).exists() or refined else None
    except (OSError, ValueError, EOFError, KeyError) as exc:
        raise IndexCorruptError(f"The index at {directory} is damaged ({exc}). Rebuild it.") from exc
    return CatalogueIndex(
        directory=directory, manifest=manifest, vectors=vectors, products=products, columns=columns,
        features=features, colours=colours, refiner=refiner,
    )


class ImageConfinement:
    """Which catalogue photos may be read: those whose real path lies inside the images root.

    The bot uploads these files to shoppers, so a path naming ``../../etc/hostname``, an absolute
    path or a symlink out of the catalogue must never be read. One rule for the builder (which
    skips such photos) and the loader (which refuses an index that names one), so an index the
    builder wrote always loads. Checked lexically, then with one ``realpath`` per distinct folder
    and one directory listing per folder to find the symlinked photos (``realpath`` only for
    those; a name the listing lacks gets its own ``lstat``): load_index runs this at every bot
    start: 0.08 s for 44k products in one folder, where an ``lstat`` per photo took 0.17 s (a
    ``realpath`` per photo 0.85 s).
    """

    def __init__(self, images_root: str | os.PathLike[str]) -> None:
        self.root = os.path.realpath(images_root)
        self._prefix = self.root.rstrip(os.sep) + os.sep
        self._folders: dict[str, bool] = {}
        self._links: dict[str, dict[str, bool] | None] = {}

    def _inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self._prefix)

    def _is_link(self, folder: str, name: str) -> bool:
        """Whether ``folder/name`` is a symlink, from the folder's listing (read once per folder)."""
        if folder not in self._links:
            try:
                with os.scandir(os.path.join(self.root, folder)) as entries:
                    self._links[folder] = {entry.name: entry.is_symlink() for entry in entries}
            except OSError:
                self._links[folder] = None  # e.g. a folder we may enter but not list: lstat each photo
        listed = self._links[folder]
        if listed is not None and name in listed:
            return listed[name]
        return os.path.islink(os.path.join(self.root, folder, name))

    def allows(self, image: str) -> bool:
        """Whether ``image`` (a ``/``-separated path relative to the root) really lies inside it."""
        parts = image.split("/")
        if not image or "\x00" in image or os.path.isabs(image) or any(part in ("", ".", "..") for part in parts):
            return False
        folder = "/".join(parts[:-1])
        if folder not in self._folders:
            self._folders[folder] = self._inside(os.path.realpath(os.path.join(self.root, folder)))
        if not self._folders[folder]:
            return False
        return not self._is_link(folder, parts[-1]) or self._inside(os.path.realpath(os.path.join(self.root, image)))


def _check_images_confined(directory: Path, manifest: Mapping[str, Any], products: Sequence[Mapping[str, str]]) -> None:
    """Every product photo must lie inside the catalogue's ``images_root`` (see :class:`ImageConfinement`)."""
    raw_root = manifest.get("images_root")
    if not isinstance(raw_root, str) or not raw_root or not os.path.isabs(raw_root):
        raise IndexCorruptError(
            f"{directory / MANIFEST} has no absolute images_root (got {raw_root!r}). Rebuild the index."
        )
    confinement = ImageConfinement(raw_root)
    for row, product in enumerate(products):
        image = product.get("image") or ""
        if not confinement.allows(image):
            raise IndexCorruptError(
                f"{directory / PRODUCTS} line {row + 2} (id {product.get('id')!r}): the image path {image!r} "
                f"points outside the catalogue folder {confinement.root}; refusing to read it. Rebuild the index."
            )


def _load_rows(path: Path, count: int, dim: int | None, mmap: bool) -> np.ndarray:
    array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if array.dtype != np.float32 or array.ndim != 2 or len(array) != count or (dim is not None and array.shape[1] != dim):
        raise ValueError(f"{path.name} holds {array.dtype} {array.shape}, expected float32 ({count}, {dim or 'd'})")
    return array


def check_model_matches(manifest: Mapping[str, Any], description: Mapping[str, Any]) -> None:
    """Refuse an extractor whose features would not be comparable with the index's."""
    different = [key for key in MODEL_KEYS if manifest.get(key) != description.get(key)]
    if different:
        details = "; ".join(f"{key}: index={manifest.get(key)!r}, requested={description.get(key)!r}" for key in different)
        raise ModelMismatchError(
            "The requested model does not match the one this index was built with "
            f"({details}). Query with the index's own model (the default) or rebuild the index."
        )
