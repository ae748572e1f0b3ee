"""Build (or update) a catalogue index: stream photos through the extractor, checkpointing as it goes.

Work is saved in chunks to a ``.<out>.partial`` directory beside the output; each chunk's vectors
are written before the small JSON file that marks the chunk complete, so after Ctrl-C, ``kill`` or
a power cut the same command resumes at the last finished chunk. Memory stays flat: chunks are
memory-mapped when the final ``vectors.npy`` is assembled.

A build holds an exclusive lock on its output folder from start to swap (``recommender/locking.py``)
and replaces only an empty folder or an earlier index: never a folder of anything else, and never
one that holds (or lies inside) the catalogue it reads.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import colour
from . import refine as refine_module
from .catalogue import ID_COLUMN, Catalogue, CatalogueItem
from .errors import BuildError, BuildLockedError, LockBusyError, LockFileError
from .extractor import FeatureExtractor
from .fileio import atomic_file, swap_into_place, temporary_sibling, utc_timestamp, write_json_atomic
from .images import ImageDecodeError, load_image
from .index import (
    COLOURS,
    FEATURES,
    MANIFEST,
    PRODUCTS,
    SKIPPED,
    VECTORS,
    CatalogueIndex,
    ImageConfinement,
    load_index,
    write_products,
    write_skipped,
)
from .locking import build_lock
from .manifest import CatalogueSummary, Manifest, ModelIdentity

STATE = "state.json"


@dataclass
class BuildReport:
    """What a build did, for the operator's summary."""

    out_dir: Path
    count: int = 0
    extracted: int = 0
    reused: int = 0
    resumed: int = 0
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    refinement: str = "none"


def partial_dir_for(out_dir: Path) -> Path:
    return out_dir.with_name(f".{out_dir.name}.partial")


def check_output(out_dir: str | os.PathLike[str], catalogue: Catalogue) -> None:
    """Refuse an output folder whose replacement would destroy anything but an earlier index.

    A build swaps its result in by renaming whatever is at ``out_dir`` aside and deleting it, and
    clears ``.<out>.partial``; so ``out_dir`` must be new, empty or an index (it has a manifest),
    and neither may hold the photos or styles.csv being indexed. Writing the index into the photos
    folder is refused too, and so is a mount point (the swap renames it, which the kernel refuses:
    ``EBUSY``/``EXDEV`` after the whole build). Called by :func:`build_index`; callers may call it
    earlier (before loading a model) to fail fast.
    """
    out = Path(out_dir).resolve()
    images = catalogue.images_dir.resolve()
    if out.is_relative_to(images):  # the folder itself or below it
        raise BuildError(
            f"The output folder {out} is inside the photos folder {images}. "
            "Choose an --out outside the catalogue (e.g. a sibling folder such as data/index)."
        )
    protected = [("photos folder", images)]
    if catalogue.styles_path is not None:
        protected.append(("styles file", catalogue.styles_path.resolve()))
    for what, path in protected:
        for destroyed in (out, partial_dir_for(out)):
            if path.is_relative_to(destroyed):
                raise BuildError(
                    f"The {what} {path} lies inside {destroyed}, which the build replaces: it would be deleted. "
                    "Choose an --out that is a new, empty or index folder outside the catalogue."
                )
    if os.path.ismount(out):
        raise BuildError(
            f"The output folder {out} is a mount point: a build writes the new index beside it and renames it "
            "into place, and a mount point cannot be renamed. Mount the volume one level up, or point --out "
            f"(INDEX_DIR for the bot) at a folder inside it, e.g. {out / 'index'}."
        )
    _refuse_foreign_partial(partial_dir_for(out))
    if not out.exists():
        return
    if not out.is_dir():
        raise BuildError(f"Output path {out} exists and is not a directory.")
    if (out / MANIFEST).is_file():
        return  # an earlier index: replacing it is the point
    try:
        contents = sorted(entry.name for entry in out.iterdir())
    except OSError as exc:
        raise BuildError(f"Cannot read the output folder {out}: {exc.strerror or exc}") from exc
    if contents:
        shown = ", ".join(contents[:5]) + (f" and {len(contents) - 5} more" if len(contents) > 5 else "")
        raise BuildError(
            f"The output folder {out} is not empty ({shown}) and holds no index ({MANIFEST}); "
            "building there would delete what it holds. Give --out a new or empty folder, or an existing index to replace."
        )


def _refuse_foreign_partial(partial: Path) -> None:
    """The checkpoint folder is cleared at times: refuse one that holds anything but checkpoints."""
    if not partial.exists():
        return
    if not partial.is_dir():
        raise BuildError(f"{partial} is in the way: the build keeps its checkpoints there. Move it away and run again.")
    if not (partial / STATE).is_file() and any(partial.iterdir()):
        raise BuildError(
            f"{partial} is in the way: the build keeps its checkpoints there, but it holds files "
            f"that are not a checkpoint (no {STATE}). Move it away and run again."
        )


def _remove_stale_siblings(out_dir: Path) -> None:
    """Delete staging/old folders that killed builds left beside ``out_dir`` (only under the lock)."""
    pattern = re.compile(rf"\.{re.escape(out_dir.name)}\.(tmp|old)-\d+-\d+")
    for sibling in out_dir.parent.iterdir():
        if pattern.fullmatch(sibling.name) and sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)


class _Checkpoint:
    """Chunks of finished work in the partial directory, valid only for one model + catalogue root."""

    def __init__(self, directory: Path, identity: dict[str, Any]) -> None:
        self.directory = directory
        self.identity = identity
        self.chunks: list[dict[str, Any]] = []

    def open(self) -> None:
        """Resume matching earlier work, or start clean when there is none or it is for another model."""
        state_path = self.directory / STATE
        if state_path.is_file():
            try:
                same = json.loads(state_path.read_text(encoding="utf-8")) == self.identity
            except (OSError, ValueError):
                same = False
            if same:
                self.chunks = self._read_chunks()
                return
        if self.directory.exists():
            _refuse_foreign_partial(self.directory)
            shutil.rmtree(self.directory)
        try:
            self.directory.mkdir(parents=True)
            write_json_atomic(self.directory / STATE, self.identity)
        except OSError as exc:
            raise BuildError(f"Cannot write to {self.directory.parent}: {exc.strerror or exc}") from exc

    def _read_chunks(self) -> list[dict[str, Any]]:
        chunks = []
        for meta_path in sorted(self.directory.glob("chunk-*.json")):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                vectors = np.load(self.directory / meta["vectors"], mmap_mode="r", allow_pickle=False)
                colours = np.load(self.directory / meta["colours"], mmap_mode="r", allow_pickle=False)
                valid = (
                    isinstance(meta["ids"], list)
                    and isinstance(meta["skipped"], list)
                    and vectors.ndim == 2
                    and len(vectors) == len(meta["ids"]) == len(colours)
                )
            except (OSError, ValueError, EOFError, KeyError, TypeError):
                continue  # a chunk cut short by a crash: its images are simply redone
            if valid:
                chunks.append(meta)
        return chunks

    def _next_number(self) -> int:
        """One past the highest chunk number on disk, so a new chunk never overwrites a kept one.

        (Numbering by ``len(self.chunks)`` reused the name of a valid chunk whenever an earlier
        one had been discarded, silently pairing the old chunk's ids with the new vectors.)
        """
        numbers = [int(path.stem[len("chunk-") :]) for path in self.directory.glob("chunk-*.json") if path.stem[len("chunk-") :].isdigit()]
        return max(numbers, default=-1) + 1

    def done_ids(self) -> set[str]:
        return {item_id for chunk in self.chunks for item_id in chunk["ids"]} | {
            item_id for chunk in self.chunks for item_id, _ in chunk["skipped"]
        }

    def save(self, ids: list[str], vectors: np.ndarray, colours: np.ndarray, skipped: list[tuple[str, str]]) -> None:
        number = self._next_number()
        name = f"chunk-{number:06d}"
        for path, array in ((self.directory / f"{name}.npy", vectors), (self.directory / f"{name}.colour.npy", colours)):
            with atomic_file(path) as handle:
                np.save(handle, array.astype(np.float32), allow_pickle=False)
        meta = {"vectors": f"{name}.npy", "colours": f"{name}.colour.npy", "ids": ids, "skipped": [list(s) for s in skipped]}
        write_json_atomic(self.directory / f"{name}.json", meta)
        self.chunks.append(meta)

    def vector_sources(self) -> dict[str, tuple[Path, Path, int]]:
        """id → (features file, colour file, row) of every finished item."""
        return {
            item_id: (self.directory / chunk["vectors"], self.directory / chunk["colours"], row)
            for chunk in self.chunks
            for row, item_id in enumerate(chunk["ids"])
        }

    def skipped(self) -> list[tuple[str, str]]:
        return [(item_id, reason) for chunk in self.chunks for item_id, reason in chunk["skipped"]]


Batch = tuple[list[CatalogueItem], np.ndarray, np.ndarray, list[tuple[str, str]]]


def _decode_batch(catalogue: Catalogue, items: Sequence[CatalogueItem], size: int, confinement: ImageConfinement) -> Batch:
    """(readable items, their pixels, their colour histograms, skipped (id, reason)).

    A photo that is a symlink out of the photos folder is skipped: the index loader refuses such
    paths (the bot uploads these files), so indexing it would make an index no bot can load.
    """
    good: list[CatalogueItem] = []
    pixels: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    for item in items:
        if not confinement.allows(item.image):
            target = os.path.realpath(catalogue.images_dir / item.image)
            skipped.append((
                item.id,
                f"{item.image}: links to {target}, outside the photos folder {confinement.root}; the bot reads "
                "photos only inside it (copy the file in instead of linking to it)",
            ))  # fmt: skip
            continue
        try:
            pixels.append(load_image(catalogue.images_dir / item.image, size))
            good.append(item)
        except ImageDecodeError as exc:
            skipped.append((item.id, f"{item.image}: {exc}"))
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            skipped.append((item.id, f"{item.image}: cannot be decoded ({detail})"))
    array = np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)
    return good, array, colour.colour_histograms(array), skipped


def _prefetched_batches(catalogue: Catalogue, items: Sequence[CatalogueItem], batch_size: int, size: int) -> Iterator[Batch]:
    """Decode the next batch on a helper thread while the model works on the current one."""
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    confinement = ImageConfinement(catalogue.images_dir)  # the same rule as load_index's
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:

        def decode(batch: Sequence[CatalogueItem]) -> Future[Batch]:
            return pool.submit(_decode_batch, catalogue, batch, size, confinement)

        pending: Future[Batch] | None = decode(batches[0]) if batches else None
        for number in range(len(batches)):
            assert pending is not None
            result = pending.result()
            pending = decode(batches[number + 1]) if number + 1 < len(batches) else None
            yield result


def build_index(
    catalogue: Catalogue,
    out_dir: str | os.PathLike[str],
    extractor: FeatureExtractor,
    *,
    batch_size: int = 32,
    update: bool = False,
    checkpoint_every: int = 512,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    refine: str = "auto",
    lock_wait: float | None = 0.0,
    on_wait: Callable[[], None] | None = None,
) -> BuildReport:
    """Index ``catalogue`` into ``out_dir`` (atomically replacing an earlier index or an empty folder).

    With ``update=True`` an existing index is extended: vectors of products already in it are
    reused, only new photos are extracted, products no longer in the catalogue are dropped.
    ``on_start(total, already_done)`` and ``on_progress(n)`` drive a progress bar.
    ``refine``: ``auto`` (label-aware refinement when the catalogue has articleType and
    baseColour labels), ``label-centroids`` or ``none`` (plain backbone features).
    The whole build holds ``out_dir``'s exclusive lock: when another build has it, wait up to
    ``lock_wait`` seconds (``None``: until it is done; ``on_wait()`` is called once when waiting
    starts), then :class:`BuildLockedError`.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    if batch_size < 1:
        raise BuildError("--batch-size must be at least 1")
    check_output(out_dir, catalogue)
    with output_lock(out_dir, wait=lock_wait, on_wait=on_wait):
        check_output(out_dir, catalogue)  # again: the folder may have changed while we waited
        _remove_stale_siblings(out_dir)
        report = _build_locked(catalogue, out_dir, extractor, batch_size, update, checkpoint_every, on_start, on_progress, refine)
    report.seconds = time.perf_counter() - started
    return report


@contextmanager
def output_lock(
    out_dir: str | os.PathLike[str], *, wait: float | None = 0.0, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold ``out_dir``'s exclusive build lock (creating its parent folder), with operator-readable errors.

    Re-entrant in one thread: a caller may hold it around its own checks and then call
    :func:`build_index`, which takes it again. See :func:`recommender.locking.build_lock`.
    """
    out_dir = Path(out_dir).resolve()
    if not os.access(_existing_ancestor(out_dir), os.W_OK):
        raise BuildError(f"Cannot write to {out_dir}: permission denied.")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"Cannot write to {_existing_ancestor(out_dir.parent)}: {exc.strerror or exc}") from exc
    with ExitStack() as held:
        try:
            held.enter_context(build_lock(out_dir, wait=wait, on_wait=on_wait))
        except LockBusyError as exc:
            holder = f" (process {exc.holder_pid})" if exc.holder_pid else ""
            raise BuildLockedError(
                f"Another build is running on {out_dir}{holder}. Wait for it to finish, "
                "or run again with --wait to start as soon as it is done."
            ) from None
        except LockFileError as exc:
            raise BuildError(str(exc)) from None
        except OSError as exc:
            raise BuildError(f"Cannot write to {out_dir.parent}: {exc.strerror or exc}") from exc
        yield


def _build_locked(
    catalogue: Catalogue,
    out_dir: Path,
    extractor: FeatureExtractor,
    batch_size: int,
    update: bool,
    checkpoint_every: int,
    on_start: Callable[[int, int], None] | None,
    on_progress: Callable[[int], None] | None,
    refine: str,
) -> BuildReport:
    """The build proper, run while holding ``out_dir``'s lock."""
    model = extractor.identity
    report = BuildReport(out_dir=out_dir)
    refine = report.refinement = _resolve_refine(refine, catalogue)

    existing: CatalogueIndex | None = None
    if update:
        if not (out_dir / MANIFEST).is_file():
            raise BuildError(f"--update needs an existing index at {out_dir}; build one first (without --update).")
        existing = load_index(out_dir, mmap=True)
        existing.manifest.model.check_matches(model)
    existing_rows = {item_id: row for row, item_id in enumerate(existing.ids())} if existing else {}
    wanted_ids = {item.id for item in catalogue.items}
    report.removed = sum(1 for item_id in existing_rows if item_id not in wanted_ids)

    identity = {
        "model": model.to_json(),
        "images_root": str(catalogue.images_dir.resolve()),
    }
    checkpoint = _Checkpoint(partial_dir_for(out_dir), identity)
    checkpoint.open()
    done = checkpoint.done_ids()
    todo = [item for item in catalogue.items if item.id not in existing_rows and item.id not in done]
    report.resumed = sum(1 for item in catalogue.items if item.id in done and item.id not in existing_rows)
    if on_start:
        on_start(report.resumed + len(todo), report.resumed)

    pending_ids: list[str] = []
    pending_vectors: list[np.ndarray] = []
    pending_colours: list[np.ndarray] = []
    pending_skipped: list[tuple[str, str]] = []

    def flush() -> None:
        if pending_ids or pending_skipped:
            vectors = np.concatenate(pending_vectors) if pending_vectors else np.zeros((0, extractor.dim), np.float32)
            colours = np.concatenate(pending_colours) if pending_colours else np.zeros((0, colour.DIM), np.float32)
            try:
                checkpoint.save(list(pending_ids), vectors, colours, list(pending_skipped))
            except OSError as exc:
                raise BuildError(
                    f"Cannot save progress in {checkpoint.directory}: {_os_error(exc)}. Work saved before is kept: "
                    "fix the cause and run the same command again to resume."
                ) from exc
            pending_ids.clear(), pending_vectors.clear(), pending_colours.clear(), pending_skipped.clear()

    try:
        for good, pixels, colours, skipped in _prefetched_batches(catalogue, todo, batch_size, extractor.input_size):
            if len(good):
                pending_vectors.append(extractor.extract(pixels, batch_size=batch_size))  # --batch-size is the pass size
                pending_colours.append(colours)
                pending_ids.extend(item.id for item in good)
            pending_skipped.extend(skipped)
            report.extracted += len(good)
            if on_progress:
                on_progress(len(good) + len(skipped))
            if len(pending_ids) + len(pending_skipped) >= checkpoint_every:
                flush()
    finally:
        flush()  # keep finished work on Ctrl-C too

    report.skipped = checkpoint.skipped()
    try:
        _assemble(catalogue, out_dir, model, extractor.weights_source, existing, existing_rows, checkpoint, report, refine)
    except OSError as exc:
        hint = ""
        if exc.errno in (errno.EXDEV, errno.EBUSY):
            hint = (
                f" ({out_dir} and its parent folder must be on one filesystem: if {out_dir} is a mount point, "
                "mount the volume one level up, or point --out at a folder inside it)"
            )
        raise BuildError(
            f"Cannot put the new index in place at {out_dir}: {_os_error(exc)}{hint}. Every extracted photo is kept "
            f"in {checkpoint.directory}: fix the cause and run the same command again to finish without re-extracting."
        ) from exc
    shutil.rmtree(checkpoint.directory, ignore_errors=True)
    return report


def _os_error(exc: OSError) -> str:
    """An OSError for an operator: what went wrong, and on which file."""
    return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")


def _resolve_refine(refine: str, catalogue: Catalogue) -> str:
    if refine == "auto":
        return refine_module.METHOD if refine_module.can_refine(catalogue.columns) else refine_module.NONE
    if refine == refine_module.METHOD and not refine_module.can_refine(catalogue.columns):
        raise BuildError(
            f"--refine {refine_module.METHOD} learns from the {refine_module.TYPE_LABEL} and {refine_module.COLOUR_LABEL} "
            "labels: give a --styles CSV with both columns, or use --refine none."
        )
    if refine not in (refine_module.METHOD, refine_module.NONE):
        raise BuildError(f"Unknown --refine {refine!r}; choose auto, {refine_module.METHOD} or none.")
    return refine


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _assemble(
    catalogue: Catalogue,
    out_dir: Path,
    model: ModelIdentity,
    weights: str,
    existing: CatalogueIndex | None,
    existing_rows: dict[str, int],
    checkpoint: _Checkpoint,
    report: BuildReport,
    refine: str,
) -> None:
    """Write the final index to a staging directory in catalogue order, then swap it in."""
    new_sources = checkpoint.vector_sources()
    rows = [item for item in catalogue.items if item.id in existing_rows or item.id in new_sources]
    if not rows:
        raise BuildError(f"None of the {len(catalogue)} images could be read; nothing to index. See the skipped list above.")
    staging = temporary_sibling(out_dir, "tmp")
    staging.mkdir(parents=True)
    try:
        refined = refine == refine_module.METHOD
        features = np.lib.format.open_memmap(
            staging / (FEATURES if refined else VECTORS), mode="w+", dtype=np.float32, shape=(len(rows), model.feature_dim)
        )
        colours = np.lib.format.open_memmap(staging / COLOURS, mode="w+", dtype=np.float32, shape=(len(rows), colour.DIM))
        open_chunks: dict[Path, np.ndarray] = {}

        def chunk(path: Path) -> np.ndarray:
            if path not in open_chunks:
                open_chunks[path] = np.load(path, mmap_mode="r", allow_pickle=False)
            return open_chunks[path]

        for position, item in enumerate(rows):
            if item.id in existing_rows:
                assert existing is not None and existing.features is not None
                row = existing_rows[item.id]
                features[position] = existing.features[row]
                if existing.colours is None:
                    raise BuildError("This index predates colour histograms; rebuild it without --update.")
                colours[position] = existing.colours[row]
                report.reused += 1
            else:
                features_path, colours_path, row = new_sources[item.id]
                features[position] = chunk(features_path)[row]
                colours[position] = chunk(colours_path)[row]
        features.flush(), colours.flush()
        open_chunks.clear()
        refinement: dict[str, Any] = {"method": refine_module.NONE}
        vector_dim = model.feature_dim
        if refined:
            labels = [item.labels for item in rows]
            refiner = refine_module.LabelCentroids.fit(features, colours, labels)
            vector_dim = refiner.dim(model.feature_dim)
            vectors = np.lib.format.open_memmap(staging / VECTORS, mode="w+", dtype=np.float32, shape=(len(rows), vector_dim))
            for start in range(0, len(rows), 8192):  # bounded memory for huge catalogues
                stop = start + 8192
                vectors[start:stop] = refiner.index_vectors(features[start:stop], colours[start:stop], labels[start:stop])
            vectors.flush()
            refiner.save(staging)
            refinement = refiner.describe()
            del vectors
        del features, colours
        label_columns = [column for column in catalogue.columns if column != ID_COLUMN]
        write_products(
            staging / PRODUCTS,
            ({**item.labels, ID_COLUMN: item.id, "image": item.image} for item in rows),
            [ID_COLUMN, "image", *label_columns],
        )
        write_skipped(staging / SKIPPED, report.skipped)
        now = utc_timestamp()
        manifest = Manifest(
            model=model,
            weights=weights,
            count=len(rows),
            vector_dim=vector_dim,
            images_root=str(catalogue.images_dir.resolve()),
            created_at=existing.manifest.created_at if existing is not None else now,
            updated_at=now if existing is not None else None,
            refinement=refinement,
            catalogue=CatalogueSummary(
                styles_csv=str(catalogue.styles_path.resolve()) if catalogue.styles_path else None,
                columns=tuple(label_columns),
                skipped=len(report.skipped),
                missing_images=len(catalogue.missing_images),
                unlabelled=len(catalogue.unlabelled),
            ),
        )
        write_json_atomic(staging / MANIFEST, manifest.to_json())
        swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report.count = len(rows)
