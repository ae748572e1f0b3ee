"""Make sure there is an index to serve before the bot goes live.

Order of preference: an index already at ``INDEX_DIR``; else one built now from the operator's
catalogue at ``CATALOGUE_DIR`` (Kaggle layout ``images/`` + ``styles.csv``, or a plain folder of
images); else one built from a small demo catalogue drawn by the project itself.

What the operator set explicitly must be there: an ``INDEX_DIR`` without an index (a volume that
did not mount) or a ``CATALOGUE_DIR`` without a catalogue stops the bot with a clear message
instead of quietly serving the demo. The demo is only for a bot with neither configured
(``DATA_DIR`` alone is a data root, not a promise that an index exists).

The first-start build holds the index folder's build lock while it decides and builds, so two
replicas starting together on a fresh volume build once: the second waits, then serves the
first one's index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from recommender import head as head_module
from recommender.backends import BackendChoice
from recommender.builder import AUTO as AUTO_RUNTIME_OPTION
from recommender.catalogue import Catalogue, find_catalogue
from recommender.demo import make_demo_catalogue
from recommender.errors import BuildError, CatalogueError, IndexNotFoundError, ModelLoadError
from recommender.extractor import WEIGHTS_NONE, FeatureExtractor
from recommender.index_store import MANIFEST, index_exists, load_index
from recommender.operator_build import BuildEvents, build_from_folder
from recommender.output_folder import output_lock

from .config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Source:
    """What a first-start index is built from: the operator's catalogue, or the demo (images None)."""

    images: Path | None
    styles: Path | None
    description: str


def _choose_source(settings: Settings) -> _Source | None:
    """The catalogue to build from; None when only an (absent) index was configured."""
    found = find_catalogue(settings.catalogue_dir)
    operator = f"operator catalogue {settings.catalogue_dir} (index {settings.index_dir})"
    if settings.catalogue_dir_configured:
        if not found:
            raise CatalogueError(
                f"CATALOGUE_DIR is set to {settings.catalogue_dir}, but there is no catalogue there (expected "
                "images/ with a styles.csv beside it, or a folder of photos), and INDEX_DIR "
                f"({settings.index_dir}) holds no index to serve. Check that the folder (or its volume) is "
                "there, fix CATALOGUE_DIR, or unset it to serve the demo catalogue."
            )
        return _Source(*found, operator)
    if settings.index_dir_configured:
        return None
    if found:
        return _Source(*found, operator)
    return _Source(None, None, f"DEMO catalogue {settings.demo_dir} (index {settings.index_dir})")


def _missing_index(settings: Settings) -> IndexNotFoundError:
    return IndexNotFoundError(
        f"INDEX_DIR is set to {settings.index_dir}, but there is no index there (no {MANIFEST}); "
        "is its volume mounted? Build one with: python scripts/build_index.py --images DIR "
        f"--out {settings.index_dir}; or set CATALOGUE_DIR to a catalogue to build it from at start-up; "
        "or unset INDEX_DIR to serve the demo catalogue."
    )


def _log_waiting(settings: Settings) -> None:
    log.info("Another process is building the index at %s; waiting for it to finish...", settings.index_dir)


def _log_fallback(error: ModelLoadError, fallback: FeatureExtractor) -> None:
    log.warning(
        "%s. Building the DEMO index with random weights instead: the bot will run, but its "
        "suggestions will be poor. Set INDEX_WEIGHTS to a weights file for real results.",
        error,
    )


def _log_building(catalogue: Catalogue, extractor: FeatureExtractor) -> None:
    log.info("Indexing %d catalogue photos with %s (this happens once)...", len(catalogue), extractor.backbone)


def _log_head_training(training: int, products: int) -> None:
    log.info("Training the embedding head on %d of the %d products (minutes for a large catalogue)...", training, products)


def _build(images: Path, styles: Path | None, settings: Settings, *, demo: bool) -> None:
    """Build the index (the caller holds its lock); only the demo falls back to random weights.

    An operator's catalogue gets the build script's defaults (``--head auto``, ``--runtime auto``:
    the learned head when labelled, ONNX Runtime int8; exact-item keypoints); the demo's drawn
    products need none of them and start and answer faster without (no export, no calibration, no
    head training; drawn silhouettes are no products a shopper could photograph, so no keypoints).
    """
    report = build_from_folder(
        images,
        styles,
        settings.index_dir,
        backbone=settings.index_backbone,
        weights=settings.index_weights,
        fallback_weights=WEIGHTS_NONE if demo else None,
        head=head_module.NONE if demo else head_module.AUTO,
        runtime=None if demo else AUTO_RUNTIME_OPTION,
        exact_items=not demo,
        search=BackendChoice(settings.index_backend),
        events=BuildEvents(model_fallback=_log_fallback, building=_log_building, head_training=_log_head_training),
    )
    log.info("Index ready: %d products in %.0fs (%d unreadable photos skipped).", report.count, report.seconds, len(report.skipped))


def _build_first_index(settings: Settings) -> str | None:
    """Build the first index under the build lock; None when another process built it meanwhile."""
    source = _choose_source(settings)
    if source is None:
        if settings.index_dir.parent.is_dir():  # a build may be writing it right now: wait, then look again
            try:
                with output_lock(settings.index_dir, wait=None, on_wait=lambda: _log_waiting(settings)):
                    if index_exists(settings.index_dir):
                        return None
            except BuildError:
                pass  # e.g. a read-only folder: nobody builds there, and the message below says what is wrong
        raise _missing_index(settings)
    with output_lock(settings.index_dir, wait=None, on_wait=lambda: _log_waiting(settings)):
        if index_exists(settings.index_dir):
            log.info("Another process built the index at %s while we waited; serving it.", settings.index_dir)
            return None
        styles: Path | None
        if source.images is None:
            log.info(
                "No index at %s and no catalogue at %s: using the built-in DEMO catalogue. "
                "Put your catalogue (images/ + styles.csv) in %s to serve it.",
                settings.index_dir, settings.catalogue_dir, settings.catalogue_dir,
            )  # fmt: skip
            images, styles = make_demo_catalogue(settings.demo_dir)
        else:
            log.info("No index at %s yet; building one from the catalogue in %s.", settings.index_dir, settings.catalogue_dir)
            images, styles = source.images, source.styles
        _build(images, styles, settings, demo=source.images is None)  # re-enters the lock we hold
    return source.description


def ensure_index(settings: Settings) -> str:
    """Build an index if ``INDEX_DIR`` has none; returns a line saying which catalogue is served."""
    if not index_exists(settings.index_dir):
        built = _build_first_index(settings)
        if built is not None:
            return built
    index = load_index(settings.index_dir, mmap=True)  # fail fast, before connecting to Telegram
    return f"catalogue index at {settings.index_dir} ({len(index)} products)"
