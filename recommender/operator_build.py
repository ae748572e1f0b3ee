"""The one build policy for operators: ``scripts/build_index.py`` and the bot's first start both use it.

Load the catalogue, refuse an output folder that is not ours to replace before loading a model
(slow, and a download of weights on a first run), hold the folder's lock, load the model,
build. What the caller shows along the way (a progress bar, log lines) comes through
:class:`BuildEvents`; this module prints and logs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from .backends import BackendChoice
from .builder import BuildReport, build_index
from .catalogue import Catalogue, load_catalogue
from .errors import ModelLoadError
from .extractor import FeatureExtractor
from .onnx_export import RuntimeReport
from .output_folder import check_output, output_lock


def _ignore(*_: object) -> None:
    """The default for an event nobody listens to."""


@dataclass(frozen=True)
class BuildEvents:
    """What an operator build reports as it goes; each callback defaults to doing nothing."""

    #: the catalogue was read (before anything else happens)
    catalogue_loaded: Callable[[Catalogue], None] = _ignore
    #: another build holds the output folder and this one waits for it (called once)
    waiting: Callable[[], None] = _ignore
    #: the backbone is about to be loaded
    loading_model: Callable[[FeatureExtractor], None] = _ignore
    #: the requested weights failed to load; the fallback extractor is loaded instead
    model_fallback: Callable[[ModelLoadError, FeatureExtractor], None] = _ignore
    #: the model is loaded; photos are about to be read and embedded
    building: Callable[[Catalogue, FeatureExtractor], None] = _ignore
    #: (total, done): photos to go through, of which an interrupted build already finished ``done``
    started: Callable[[int, int], None] = _ignore
    #: this many more photos went through (embedded or skipped)
    progress: Callable[[int], None] = _ignore
    #: (training, products): the embedding head starts training on ``training`` of the ``products``
    head_training: Callable[[int, int], None] = _ignore
    #: the ONNX model is ready (exported or from the cache; int8 kept or refused by the fidelity guard)
    runtime_ready: Callable[[RuntimeReport], None] = _ignore
    #: (count): the keypoints of ``count`` photos start being made, for exact-item search
    local_features: Callable[[int], None] = _ignore


def build_from_folder(
    images: str | os.PathLike[str],
    styles: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    *,
    backbone: str,
    weights: str | os.PathLike[str],
    fallback_weights: str | None = None,
    batch_size: int = 32,
    update: bool = False,
    checkpoint_every: int = 512,
    refine: str = "auto",
    lock_wait: float | None = 0.0,
    events: BuildEvents | None = None,
    head: str | None = None,
    runtime: str | None = None,
    precision: str | None = None,
    exact_items: bool | None = None,
    search: BackendChoice | None = None,
) -> BuildReport:
    """Index the catalogue at ``images`` (labels from ``styles``) into ``out_dir``.

    ``fallback_weights``: weights to load instead when ``weights`` cannot be (the bot's demo
    falls back to random weights); ``None`` lets the :class:`ModelLoadError` through.
    ``lock_wait`` is how long to wait for another build on ``out_dir`` (``None``: until it is done).
    The other options are :func:`build_index`'s.
    """
    events = events or BuildEvents()
    catalogue = load_catalogue(images, styles)
    events.catalogue_loaded(catalogue)
    check_output(out_dir, catalogue)  # before loading a model: never replace what is not an index
    with output_lock(out_dir, wait=lock_wait, on_wait=events.waiting):  # build_index re-enters it
        extractor = _load_extractor(backbone, weights, fallback_weights, events)
        events.building(catalogue, extractor)
        return build_index(
            catalogue,
            out_dir,
            extractor,
            batch_size=batch_size,
            update=update,
            checkpoint_every=checkpoint_every,
            on_start=events.started,
            on_progress=events.progress,
            refine=refine,
            head=head,
            on_head=events.head_training,
            runtime=runtime,
            precision=precision,
            on_runtime=events.runtime_ready,
            exact_items=exact_items,
            on_local=events.local_features,
            search=search,
        )


def _load_extractor(backbone: str, weights: str | os.PathLike[str], fallback_weights: str | None, events: BuildEvents) -> FeatureExtractor:
    extractor = FeatureExtractor(backbone, weights)
    events.loading_model(extractor)
    try:
        return extractor.load()
    except ModelLoadError as exc:
        if fallback_weights is None:
            raise
        fallback = FeatureExtractor(backbone, fallback_weights)
        events.model_fallback(exc, fallback)
        return fallback.load()
