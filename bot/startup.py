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

from recommender import BuildError, CatalogueError, FeatureExtractor, ModelLoadError, build_index, load_catalogue
from recommender.builder import check_output, output_lock
from recommender.catalogue import IMAGE_SUFFIXES, Catalogue
from recommender.demo import make_demo_catalogue
from recommender.errors import IndexNotFoundError
from recommender.index import MANIFEST, load_index

from .config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Source:
    """What a first-start index is built from: the operator's catalogue, or the demo (images None)."""

    images: Path | None
    styles: Path | None
    description: str


def find_operator_catalogue(directory: Path) -> tuple[Path, Path | None] | None:
    """(images_dir, styles_csv) when ``directory`` holds a catalogue, else None."""
    if (directory / "images").is_dir():
        styles = directory / "styles.csv"
        return directory / "images", styles if styles.is_file() else None
    if directory.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in directory.iterdir()):
        return directory, None
    return None


def _has_index(settings: Settings) -> bool:
    return (settings.index_dir / MANIFEST).is_file()


def _choose_source(settings: Settings) -> _Source | None:
    """The catalogue to build from; None when only an (absent) index was configured."""
    found = find_operator_catalogue(settings.catalogue_dir)
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


def _build(catalogue: Catalogue, settings: Settings, allow_random_fallback: bool) -> None:
    extractor = FeatureExtractor(settings.index_backbone, settings.index_weights)
    try:
        extractor.load()
    except ModelLoadError as exc:
        if not allow_random_fallback:
            raise
        log.warning(
            "%s. Building the DEMO index with random weights instead: the bot will run, but its "
            "suggestions will be poor. Set INDEX_WEIGHTS to a weights file for real results.",
            exc,
        )
        extractor = FeatureExtractor(settings.index_backbone, "none").load()
    log.info("Indexing %d catalogue photos with %s (this happens once)...", len(catalogue), extractor.backbone)
    report = build_index(catalogue, settings.index_dir, extractor)  # re-enters the lock we hold
    log.info("Index ready: %d products in %.0fs (%d unreadable photos skipped).", report.count, report.seconds, len(report.skipped))


def _log_waiting(settings: Settings) -> None:
    log.info("Another process is building the index at %s; waiting for it to finish...", settings.index_dir)


def _build_first_index(settings: Settings) -> str | None:
    """Build the first index under the build lock; None when another process built it meanwhile."""
    source = _choose_source(settings)
    if source is None:
        if settings.index_dir.parent.is_dir():  # a build may be writing it right now: wait, then look again
            try:
                with output_lock(settings.index_dir, wait=None, on_wait=lambda: _log_waiting(settings)):
                    if _has_index(settings):
                        return None
            except BuildError:
                pass  # e.g. a read-only folder: nobody builds there, and the message below says what is wrong
        raise _missing_index(settings)
    with output_lock(settings.index_dir, wait=None, on_wait=lambda: _log_waiting(settings)):
        if _has_index(settings):
            log.info("Another process built the index at %s while we waited; serving it.", settings.index_dir)
            return None
        if source.images is None:
            log.info(
                "No index at %s and no catalogue at %s: using the built-in DEMO catalogue. "
                "Put your catalogue (images/ + styles.csv) in %s to serve it.",
                settings.index_dir, settings.catalogue_dir, settings.catalogue_dir,
            )
            images, styles = make_demo_catalogue(settings.demo_dir)
        else:
            log.info("No index at %s yet; building one from the catalogue in %s.", settings.index_dir, settings.catalogue_dir)
            images, styles = source.images, source.styles
        catalogue = load_catalogue(images, styles)
        check_output(settings.index_dir, catalogue)  # before loading a model: never replace what is not an index
        _build(catalogue, settings, allow_random_fallback=source.images is None)
    return source.description


def ensure_index(settings: Settings) -> str:
    """Build an index if ``INDEX_DIR`` has none; returns a line saying which catalogue is served."""
    if not _has_index(settings):
        built = _build_first_index(settings)
        if built is not None:
            return built
    index = load_index(settings.index_dir, mmap=True)  # fail fast, before connecting to Telegram
    return f"catalogue index at {settings.index_dir} ({len(index)} products)"
