"""Build (or update) a catalogue index by wiring the stages together.

    reader (photos → decoded batches) → extractor (pixels → features) → checkpoint (chunks)
    → index writer (rows in catalogue order, refinement, swap into place)

Each stage is its own module; this one decides what to do (what is already done, what to
reuse from an earlier index, how to refine), holds the output folder's lock from start to swap,
and reports progress through callbacks: it never prints or logs.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import ann_search, colour, shop_links
from . import head as head_module
from . import refine as refine_module
from .backends import ANN, BACKENDS, EXACT, MILVUS, BackendChoice
from .catalogue import Catalogue, CatalogueItem
from .checkpoint import Checkpoint, FinishedRows
from .errors import BuildError, ImageDecodeError, LookalikeError
from .extractor import FeatureExtractor
from .fileio import os_error_text, read_json
from .images import load_image
from .index_store import MANIFEST, CatalogueIndex, IndexWriter, index_exists, load_index
from .local_features import LocalFeatureStore, compute_rows
from .manifest import Manifest
from .milvus_search import MilvusPlan, MilvusWriter, milvus_identity
from .onnx_export import PhotoSample, RuntimeReport, prepare_onnx
from .onnx_model import FP32, INT8, ONNX, TENSORFLOW, OnnxExtractor
from .output_folder import check_output, output_lock, partial_dir_for, remove_stale_siblings
from .reader import read_batches
from .recommender import extractor_for_index


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
    #: ``labels`` when a learned embedding head made the search vectors
    head: str = "none"
    #: products that trained the head (all, or a type-balanced sample of a large catalogue)
    head_products: int = 0
    #: seconds spent on the head: its shopper-like views, their forward passes and the training
    head_seconds: float = 0.0
    #: what ran the model (``tensorflow`` or ``onnx``) and, for ONNX, what preparing it did
    runtime: str = TENSORFLOW
    runtime_report: RuntimeReport | None = None
    #: seconds spent preparing the ONNX model (export, calibration, fidelity check, or loading them from the cache)
    runtime_seconds: float = 0.0
    #: the index stores local features for exact-item search; how many were made now, and in how long
    exact_items: bool = False
    local_computed: int = 0
    local_seconds: float = 0.0
    #: the search backend written (recommender/backends.py); for ann, what was done to its index, in how long
    backend: str = EXACT
    #: link / price values of products.csv that were malformed and left out: (id, column, value)
    shop_problems: list[tuple[str, str, str]] = field(default_factory=list)
    search_note: str = ""
    search_seconds: float = 0.0


def resolve_refine(refine: str, catalogue: Catalogue) -> str:
    """The refinement to apply: ``auto`` becomes label-centroids when the catalogue has both labels."""
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


#: defaults of a new index (an update keeps its index's): the library's, and ``--runtime auto``'s
DEFAULT_RUNTIME = TENSORFLOW
AUTO_RUNTIME = ONNX
AUTO = "auto"
DEFAULT_PRECISION = INT8


def resolve_runtime(runtime: str | None, precision: str | None, earlier: CatalogueIndex | None = None) -> tuple[str, str]:
    """``(runtime, precision)`` of this build: as asked, else what the updated index has, else the defaults.

    ``None`` means :data:`DEFAULT_RUNTIME` on a new index, ``auto`` (the build script's default)
    :data:`AUTO_RUNTIME`; both keep what an updated index has.
    """
    had = dict(earlier.manifest.runtime) if earlier is not None else {}
    if earlier is not None and runtime in (None, AUTO):
        runtime = str(had.get("name", TENSORFLOW))
    runtime = AUTO_RUNTIME if runtime == AUTO else runtime or DEFAULT_RUNTIME
    if runtime not in (TENSORFLOW, ONNX):
        raise BuildError(f"Unknown --runtime {runtime!r}; choose {TENSORFLOW} or {ONNX}.")
    if precision is not None and precision not in (FP32, INT8):
        raise BuildError(f"Unknown --precision {precision!r}; choose {FP32} or {INT8}.")
    if runtime == TENSORFLOW:
        if precision == INT8:
            raise BuildError("--precision int8 needs --runtime onnx (TensorFlow runs fp32).")
        return runtime, FP32
    if had.get("name") == ONNX:
        return runtime, precision or str(had.get("precision", FP32))
    return runtime, precision or DEFAULT_PRECISION


def resolve_head(head: str | None, refine: str, catalogue: Catalogue, earlier: CatalogueIndex | None = None) -> str:
    """The embedding head to train: ``labels`` needs labels and takes the refinement's place.

    ``None`` keeps what the ``earlier`` index (an ``--update``) has, so an update never silently
    drops a head; on a fresh build it means ``none``. ``auto`` (the operator's default) is
    ``labels`` on a fresh build of a labelled catalogue with ``refine`` left to ``auto``, else
    ``none``; on an update it keeps what the index has, as ``None`` does, so an update never
    switches an index between the head and the refinement.
    """
    if head == head_module.AUTO:
        if earlier is None:
            return head_module.LABELS if refine == "auto" and head_module.can_train(catalogue.columns) else head_module.NONE
        head = None
    if head is None:
        head = head_module.LABELS if earlier is not None and earlier.head is not None else head_module.NONE
        if head == head_module.LABELS and refine not in ("auto", refine_module.NONE):
            raise BuildError(
                f"This index embeds with a learned head; --refine {refine} would replace it: add --head none to drop the head."
            )
    if head == head_module.NONE:
        return head
    if head != head_module.LABELS:
        raise BuildError(f"Unknown --head {head!r}; choose {head_module.AUTO}, {head_module.NONE} or {head_module.LABELS}.")
    if not head_module.can_train(catalogue.columns):
        raise BuildError(f"--head {head} learns from the catalogue's labels: give a --styles CSV with articleType, baseColour or gender.")
    if refine not in ("auto", refine_module.NONE):
        raise BuildError(f"--head {head} replaces the refinement: use --refine none (or auto) with it.")
    return head


@dataclass(frozen=True)
class _Plan:
    """What the caller asked of this build, handed from :func:`build_index` to its stages as one value."""

    batch_size: int
    update: bool
    checkpoint_every: int
    refine: str
    head: str | None
    head_settings: head_module.HeadSettings | None
    runtime: str | None
    precision: str | None
    on_start: Callable[[int, int], None] | None
    on_progress: Callable[[int], None] | None
    on_head: Callable[[int, int], None] | None
    on_runtime: Callable[[RuntimeReport], None] | None
    exact_items: bool | None
    on_local: Callable[[int], None] | None
    search: BackendChoice


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
    head: str | None = None,
    head_settings: head_module.HeadSettings | None = None,
    on_head: Callable[[int, int], None] | None = None,
    runtime: str | None = None,
    precision: str | None = None,
    on_runtime: Callable[[RuntimeReport], None] | None = None,
    exact_items: bool | None = None,
    on_local: Callable[[int], None] | None = None,
    search: BackendChoice | None = None,
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
    ``head``: ``none`` or ``labels``, a learned embedding head (recommender/head.py, trained with
    ``head_settings``, else the settings an updated index recorded) applied to products and
    queries alike, instead of a refinement. ``None`` (default): what the updated index has, else none;
    ``auto``: see :func:`resolve_head`. ``on_head(training, products)`` is called when the head's
    training starts (a step without a progress bar).
    ``runtime``: ``tensorflow`` or ``onnx`` (the Keras model exported to ONNX once, cached, and run by
    ONNX Runtime for the build and every query; stored in the index), ``precision`` ``fp32`` or
    ``int8`` (kept only if it passes :mod:`recommender.onnx_export`'s fidelity guard). ``None``: what
    the updated index has, else :data:`DEFAULT_RUNTIME` / :data:`DEFAULT_PRECISION`. An update runs the
    earlier index's own model file. ``on_runtime(report)`` says what preparing ONNX did.
    ``exact_items``: store every product's local features (recommender/local_features.py) so that
    queries can verify the very product in a photo; ``None``: what the updated index has, else on.
    ``on_local(count)`` is called when the keypoints of ``count`` photos start being made.
    ``search``: the search backend (recommender/backends.py) and its parameters; by default what the
    updated index has, else exact. An ann index is updated in place where its clusters still fit.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    if batch_size < 1:
        raise BuildError("--batch-size must be at least 1")
    search = search or BackendChoice()
    if search.backend not in (None, *BACKENDS):
        raise BuildError(f"Unknown search backend {search.backend!r}: choose one of {', '.join(BACKENDS)}.")
    if any(value is not None and value < 1 for value in (search.nlist, search.nprobe)):
        raise BuildError("--ann-nlist and --ann-nprobe must be at least 1")
    if head not in (None, head_module.AUTO) or not update:
        head = resolve_head(head, refine, catalogue)  # fail fast, before the lock; an update's default waits for the earlier index
    check_output(out_dir, catalogue)
    with output_lock(out_dir, wait=lock_wait, on_wait=on_wait):
        check_output(out_dir, catalogue)  # again: the folder may have changed while we waited
        remove_stale_siblings(out_dir)
        plan = _Plan(
            batch_size, update, checkpoint_every, refine, head, head_settings, runtime, precision,
            on_start, on_progress, on_head, on_runtime, exact_items, on_local, search,
        )  # fmt: skip
        report = _build_locked(catalogue, out_dir, extractor, plan)
    report.seconds = time.perf_counter() - started
    return report


def _build_locked(catalogue: Catalogue, out_dir: Path, extractor: FeatureExtractor, plan: _Plan) -> BuildReport:
    """The build proper, run while holding ``out_dir``'s lock."""
    earlier = _earlier_index(out_dir) if plan.update else None
    runtime, precision = resolve_runtime(plan.runtime, plan.precision, earlier)
    runtime_report, runtime_model, runtime_seconds = None, None, 0.0
    if runtime == ONNX:
        preparing = time.perf_counter()
        extractor, runtime_model, runtime_report = _onnx_extractor(catalogue, extractor, precision, earlier, plan.batch_size)
        runtime_seconds = time.perf_counter() - preparing
        if plan.on_runtime:
            plan.on_runtime(runtime_report)
    model = extractor.identity
    if earlier is not None:
        earlier.manifest.model.check_matches(model)
    head = resolve_head(plan.head, plan.refine, catalogue, earlier)
    refine = plan.refine
    if head != head_module.NONE:
        refine = refine_module.NONE
        if plan.head_settings is None and earlier is not None and earlier.head is not None:
            plan = replace(plan, head_settings=earlier.head.settings)  # an update re-trains the head as it was trained
    report = BuildReport(
        out_dir=out_dir, refinement=resolve_refine(refine, catalogue), head=head,
        runtime=runtime, runtime_report=runtime_report, runtime_seconds=runtime_seconds,
    )  # fmt: skip
    earlier_rows = {item_id: row for row, item_id in enumerate(earlier.ids())} if earlier else {}
    wanted_ids = {item.id for item in catalogue.items}
    report.removed = sum(1 for item_id in earlier_rows if item_id not in wanted_ids)

    checkpoint = Checkpoint(partial_dir_for(out_dir), model, catalogue.images_dir, save_every=plan.checkpoint_every)
    checkpoint.open()
    done = checkpoint.done_ids()
    todo = [item for item in catalogue.items if item.id not in earlier_rows and item.id not in done]
    report.resumed = sum(1 for item in catalogue.items if item.id in done and item.id not in earlier_rows)
    if plan.on_start:
        plan.on_start(report.resumed + len(todo), report.resumed)
    try:
        for batch in read_batches(catalogue, todo, plan.batch_size, extractor.input_size):
            vectors = extractor.extract(batch.pixels, batch_size=plan.batch_size)  # --batch-size is the pass size
            checkpoint.add([item.id for item in batch.items], vectors, batch.colours, batch.skipped)
            report.extracted += len(batch.items)
            if plan.on_progress:
                plan.on_progress(len(batch.items) + len(batch.skipped))
    finally:
        checkpoint.flush()  # keep finished work on Ctrl-C too

    report.skipped = checkpoint.skipped()
    try:
        _write_index(catalogue, out_dir, extractor, earlier, earlier_rows, checkpoint.finished_rows(), report, plan, runtime_model)
    except OSError as exc:
        raise _not_in_place(exc, out_dir, checkpoint.directory) from exc
    checkpoint.remove()
    return report


def _earlier_index(out_dir: Path) -> CatalogueIndex:
    """The index an ``--update`` extends (the caller checks that it comes from the same model)."""
    if not index_exists(out_dir):
        raise BuildError(f"--update needs an existing index at {out_dir}; build one first (without --update).")
    return load_index(out_dir, mmap=True)


def _onnx_extractor(
    catalogue: Catalogue, extractor: FeatureExtractor, precision: str, earlier: CatalogueIndex | None, batch_size: int
) -> tuple[OnnxExtractor, Path, RuntimeReport]:
    """The ONNX model this build embeds with: the updated index's own file, else exported (and quantised) now."""
    had = earlier.manifest.runtime if earlier is not None else {}
    if earlier is not None and had.get("name") == ONNX:
        if precision != had.get("precision"):
            raise BuildError(f"This index runs {had.get('precision')} ONNX; --precision {precision} needs a rebuild without --update.")
        onnx = extractor_for_index(earlier.manifest, directory=earlier.directory)  # as the bot and query.py load it
        assert isinstance(onnx, OnnxExtractor)
        report = RuntimeReport(ONNX, precision, str(had.get("requested_precision", precision)), cached=True)
        report.fidelity = dict(had.get("fidelity") or {})
        return onnx.load(), onnx.model_path, report
    photos = PhotoSample([catalogue.images_dir / item.image for item in catalogue.items], extractor.input_size)
    return prepare_onnx(extractor, precision, photos, batch_size=batch_size)


def _write_index(
    catalogue: Catalogue,
    out_dir: Path,
    extractor: FeatureExtractor,
    earlier: CatalogueIndex | None,
    earlier_rows: dict[str, int],
    finished: FinishedRows,
    report: BuildReport,
    plan: _Plan,
    runtime_model: Path | None,
) -> None:
    """Gather every product's row, from the earlier index or the checkpoint, in catalogue order."""
    rows = [item for item in catalogue.items if item.id in earlier_rows or item.id in finished]
    rows, report.shop_problems = shop_links.checked(rows)  # a malformed link or price never reaches a shopper
    if not rows:
        raise BuildError(f"None of the {len(catalogue)} images could be read; nothing to index. See the skipped list above.")
    model = extractor.identity
    replaced = earlier.manifest if earlier is not None else _replaced_manifest(out_dir)  # read before the swap
    headed = report.head != head_module.NONE
    recolour = earlier is not None and _colour_method(earlier) != colour.DEFAULT_METHOD
    with IndexWriter(out_dir, len(rows), model.feature_dim, refine=report.refinement, keep_features=headed) as writer:
        for position, item in enumerate(rows):
            if item.id in earlier_rows:
                assert earlier is not None
                if earlier.colours is None:
                    raise BuildError("This index predates colour histograms; rebuild it without --update.")
                row = earlier_rows[item.id]
                histogram = _colour_again(catalogue, item, extractor.input_size) if recolour else earlier.colours[row]
                writer.put(position, earlier.features[row], histogram)
                report.reused += 1
            else:
                writer.put(position, *finished.row(item.id))
        finished.close()
        wanted = plan.exact_items if plan.exact_items is not None else (earlier is None or earlier.local_features is not None)
        trained = instance = instance_view_means = None
        if headed:
            trained, instance, instance_view_means = _train_head(
                catalogue, rows, writer.features, writer.colours, extractor, report, plan.head_settings, plan.on_head, plan.batch_size,
                instance=wanted,
            )  # fmt: skip
        local = _local_features(catalogue, rows, earlier, earlier_rows, report, plan.on_local) if wanted else None
        written = writer.commit(
            catalogue, rows, report.skipped, model, extractor.weights_source, earlier.manifest if earlier else None,
            head=trained, instance_head=instance, instance_view_means=instance_view_means,
            runtime=report.runtime_report.to_json() if report.runtime_report else None, runtime_model=runtime_model,
            local_features=local, search=_search_backend(plan.search, out_dir, rows, earlier, earlier_rows, report),
        )  # fmt: skip
    report.count = len(rows)
    if replaced is not None and replaced.backend == MILVUS:
        warning = MilvusWriter.drop_replaced(replaced.search, written.search, out_dir)
        if warning:
            report.search_note += f"; {warning}"


def _replaced_manifest(out_dir: Path) -> Manifest | None:
    """The manifest of the index a fresh build replaces (a collection it has on a Milvus server is dropped
    after the swap, as an update's is); None where there is none, or none readable."""
    try:
        return Manifest.from_json(read_json(out_dir / MANIFEST), out_dir / MANIFEST)
    except (OSError, ValueError, LookalikeError):
        return None


def _search_backend(
    choice: BackendChoice, out_dir: Path, rows: list[CatalogueItem], earlier: CatalogueIndex | None, earlier_rows: dict[str, int],
    report: BuildReport,
) -> Callable[[Path, np.ndarray, Manifest], dict[str, Any]] | None:  # fmt: skip
    """What writes the index's search backend once its vectors are final (None: the exact search needs nothing)."""
    report.backend = choice.backend or (earlier.manifest.backend if earlier is not None else EXACT)
    if report.backend == MILVUS:
        return _milvus_writer(choice, out_dir, rows, earlier, earlier_rows, report)
    if report.backend != ANN:
        return None
    asked = choice.nlist is not None or choice.nprobe is not None

    def write_ann(staging: Path, vectors: np.ndarray, manifest: Manifest) -> dict[str, Any]:
        started = time.perf_counter()
        settings = ann_search.AnnSettings.for_count(len(vectors), nlist=choice.nlist, nprobe=choice.nprobe)
        if earlier is not None and earlier.ann is not None and asked:  # what was not asked stays as the index has it
            had = earlier.ann.settings
            nlist = had.nlist if choice.nlist is None else choice.nlist
            nprobe = choice.nprobe if choice.nprobe is not None else had.nprobe if nlist == had.nlist else None
            settings = ann_search.AnnSettings.for_count(len(vectors), nlist=nlist, nprobe=nprobe, rerank=had.rerank)
        if earlier is not None and earlier.ann is not None:
            previous = ann_search.AnnIndex.load(earlier.directory, earlier.manifest.search, len(earlier), earlier.manifest.vector_dim, mmap=False)
            earlier_row = np.array([earlier_rows.get(item.id, -1) for item in rows], dtype=np.int64)
            ann, report.search_note = ann_search.update(
                previous, vectors, earlier_row, _kept_vectors_unchanged(vectors, earlier.vectors, earlier_row), settings if asked else None
            )
        else:
            ann = ann_search.build(vectors, settings)
            report.search_note = f"faiss index IVF{settings.nlist},SQ8 built (nprobe {settings.nprobe})"
        ann.save(staging)
        report.search_seconds = time.perf_counter() - started
        return ann.describe()

    return write_ann


def _milvus_writer(
    choice: BackendChoice, out_dir: Path, rows: list[CatalogueItem], earlier: CatalogueIndex | None, earlier_rows: dict[str, int],
    report: BuildReport,
) -> Callable[[Path, np.ndarray, Manifest], dict[str, Any]]:  # fmt: skip
    had = dict(earlier.manifest.search) if earlier is not None and earlier.manifest.backend == MILVUS else None
    uri = choice.milvus_uri if choice.milvus_uri is not None else str((had or {}).get("uri", ""))
    milvus_plan = MilvusPlan(uri=uri, collection=choice.milvus_collection)

    def write_milvus(staging: Path, vectors: np.ndarray, manifest: Manifest) -> dict[str, Any]:
        started = time.perf_counter()
        earlier_row = np.array([earlier_rows.get(item.id, -1) for item in rows], dtype=np.int64)
        unchanged = earlier is not None and _kept_vectors_unchanged(vectors, earlier.vectors, earlier_row)
        entry, report.search_note = MilvusWriter(milvus_plan, out_dir, milvus_identity(manifest)).write(
            staging, vectors, [item.id for item in rows], [item.labels for item in rows], list(manifest.catalogue.columns),
            had, earlier.ids() if earlier is not None and had is not None else None, unchanged,
            earlier_labels=earlier.products if earlier is not None and had is not None else None,
        )  # fmt: skip
        report.search_seconds = time.perf_counter() - started
        return entry

    return write_milvus


def _kept_vectors_unchanged(vectors: np.ndarray, earlier_vectors: np.ndarray, earlier_row: np.ndarray, sample: int = 1024) -> bool:
    """Whether the products an update keeps have the vectors they had (plain features do; a refinement
    or a head learned again does not), judged on a seeded sample of them."""
    kept = np.flatnonzero(earlier_row >= 0)
    if len(kept) > sample:
        kept = np.sort(np.random.default_rng(0).choice(kept, size=sample, replace=False))
    return bool(np.array_equal(vectors[kept], earlier_vectors[earlier_row[kept]]))


def _local_features(
    catalogue: Catalogue,
    rows: list[CatalogueItem],
    earlier: CatalogueIndex | None,
    earlier_rows: dict[str, int],
    report: BuildReport,
    on_local: Callable[[int], None] | None,
) -> LocalFeatureStore:
    """Every product's keypoints: an updated index's own where it has them (made the same way), the rest made now."""
    started = time.perf_counter()
    kept = earlier.local_features if earlier is not None else None
    made_as = LocalFeatureStore.describe()
    if kept is not None and earlier is not None and {key: earlier.manifest.local_features.get(key) for key in made_as} != made_as:
        kept = None  # made with other settings: make them all again
    reuse = [kept is not None and item.id in earlier_rows for item in rows]
    todo = [catalogue.images_dir / item.image for item, reused in zip(rows, reuse) if not reused]
    if on_local and todo:
        on_local(len(todo))
    made = iter(compute_rows(todo))
    taken = iter(kept.take([earlier_rows[item.id] for item, reused in zip(rows, reuse) if reused]) if kept is not None else [])
    store = LocalFeatureStore.from_rows([next(taken) if reused else next(made) for reused in reuse])
    report.exact_items = True
    report.local_computed = len(todo)
    report.local_seconds = time.perf_counter() - started
    return store


def _train_head(
    catalogue: Catalogue,
    rows: list[CatalogueItem],
    features: np.ndarray,
    colours: np.ndarray,
    extractor: FeatureExtractor,
    report: BuildReport,
    settings: head_module.HeadSettings | None,
    on_head: Callable[[int, int], None] | None,
    batch_size: int,
    *,
    instance: bool,
) -> tuple[head_module.EmbeddingHead, head_module.EmbeddingHead | None, np.ndarray | None]:
    """Train the head on (a type-balanced sample of) ``rows``, and with ``instance`` (keypoints wanted) the
    instance head on the same views and its extra ones, timed together for the report. A head that takes
    colours sees each view's colour histogram beside its features, and ``colours``, the products', beside
    ``features``. Returns the heads and, where every product trained, the instance head's
    :func:`~recommender.head.view_means` of each row."""
    started = time.perf_counter()
    settings = settings or head_module.HeadSettings()
    labels = [item.labels for item in rows]
    sample = head_module.training_rows(labels, settings)
    if on_head:
        on_head(len(sample), len(rows))
    shortlist_settings = head_module.instance_settings(settings) if instance else None
    views, view_colours = head_module.shopper_views(
        catalogue, [rows[row] for row in sample], extractor, head_module.views_to_make(settings, instance), batch_size,
        colours=settings.colour > 0 or (shortlist_settings is not None and shortlist_settings.colour > 0),
    )  # fmt: skip
    sample_labels = [labels[row] for row in sample]
    own, inputs = head_module.training_inputs(features[sample], colours[sample], views[: settings.views], view_colours, settings.colour)
    trained = head_module.train_head(own, sample_labels, inputs, settings)
    shortlist = seen = None
    if shortlist_settings is not None:
        own, inputs = head_module.training_inputs(
            features[sample], colours[sample], views[: shortlist_settings.views], view_colours, shortlist_settings.colour
        )  # fmt: skip
        shortlist = head_module.train_head(own, sample_labels, inputs, shortlist_settings)
        if len(sample) == len(rows):  # the sample is every row, in order (head.training_rows)
            seen = head_module.view_means(shortlist, inputs)
    report.head_products = len(sample)
    report.head_seconds = time.perf_counter() - started
    return trained, shortlist, seen


def _colour_method(index: CatalogueIndex) -> str | None:
    """The colour-histogram method that made the index's stored histograms; None when unknown."""
    refinement = index.manifest.refinement
    if refinement.get("method") == head_module.METHOD and "colour_histogram" not in refinement:
        return colour.DEFAULT_METHOD  # a head's index stores the default method's (its heads record it as colour_method)
    try:
        return colour.method_of(refinement)
    except ValueError:
        return None


def _colour_again(catalogue: Catalogue, item: CatalogueItem, size: int) -> np.ndarray:
    """A reused product's colour histogram made again: the earlier index used another colour method."""
    try:
        return colour.colour_histogram(load_image(catalogue.images_dir / item.image, size))
    except ImageDecodeError as exc:
        raise BuildError(f"{item.image}: {exc}; its colours must be made again for this version, rebuild without --update.") from exc


def _not_in_place(exc: OSError, out_dir: Path, checkpoint_dir: Path) -> BuildError:
    """The finished index could not be swapped in: say why, and that a re-run finishes from the checkpoint."""
    hint = ""
    if exc.errno in (errno.EXDEV, errno.EBUSY):
        hint = (
            f" ({out_dir} and its parent folder must be on one filesystem: if {out_dir} is a mount point, "
            "mount the volume one level up, or point --out at a folder inside it)"
        )
    return BuildError(
        f"Cannot put the new index in place at {out_dir}: {os_error_text(exc)}{hint}. Every extracted photo is kept "
        f"in {checkpoint_dir}: fix the cause and run the same command again to finish without re-extracting."
    )
