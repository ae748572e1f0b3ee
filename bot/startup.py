"""Make sure there is an index to serve before the bot goes live.

Order of preference: an index already at ``INDEX_DIR``; else one built now from the operator's
catalogue at ``CATALOGUE_DIR`` (Kaggle layout ``images/`` + ``styles.csv``, or a plain folder of
images); else one built from a small demo catalogue drawn by the project itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

from recommender import FeatureExtractor, ModelLoadError, build_index, load_catalogue
from recommender.catalogue import IMAGE_SUFFIXES, Catalogue
from recommender.demo import make_demo_catalogue
from recommender.index import MANIFEST, load_index

from .config import Settings

log = logging.getLogger(__name__)


def find_operator_catalogue(directory: Path) -> tuple[Path, Path | None] | None:
    """(images_dir, styles_csv) when ``directory`` holds a catalogue, else None."""
    if (directory / "images").is_dir():
        styles = directory / "styles.csv"
        return directory / "images", styles if styles.is_file() else None
    if directory.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in directory.iterdir()):
        return directory, None
    return None


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
    report = build_index(catalogue, settings.index_dir, extractor)
    log.info("Index ready: %d products in %.0fs (%d unreadable photos skipped).", report.count, report.seconds, len(report.skipped))


def ensure_index(settings: Settings) -> str:
    """Build an index if ``INDEX_DIR`` has none; returns a line saying which catalogue is served."""
    if (settings.index_dir / MANIFEST).is_file():
        index = load_index(settings.index_dir, mmap=True)  # fail fast, before connecting to Telegram
        return f"catalogue index at {settings.index_dir} ({len(index)} products)"
    found = find_operator_catalogue(settings.catalogue_dir)
    if found:
        images, styles = found
        log.info("No index at %s yet; building one from the catalogue in %s.", settings.index_dir, settings.catalogue_dir)
        _build(load_catalogue(images, styles), settings, allow_random_fallback=False)
        return f"operator catalogue {settings.catalogue_dir} (index {settings.index_dir})"
    log.info(
        "No index at %s and no catalogue at %s: using the built-in DEMO catalogue. "
        "Put your catalogue (images/ + styles.csv) in %s to serve it.",
        settings.index_dir, settings.catalogue_dir, settings.catalogue_dir,
    )
    images, styles = make_demo_catalogue(settings.demo_dir)
    _build(load_catalogue(images, styles), settings, allow_random_fallback=True)
    return f"DEMO catalogue {settings.demo_dir} (index {settings.index_dir})"
