"""The build's first stage: catalogue items → decoded batches (pixels, colour histograms, skipped photos).

One photo that cannot be read never ends a build: it is skipped with a reason the operator can
act on. The next batch is decoded on a helper thread while the model embeds the current one, so
the model rarely waits for the disk or the decoder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import colour
from .catalogue import Catalogue, CatalogueItem
from .confinement import ImageConfinement
from .errors import ImageDecodeError
from .images import load_image


@dataclass(frozen=True)
class DecodedBatch:
    """The readable items of one batch with their pixels and colour histograms (row i = item i)."""

    items: list[CatalogueItem]
    #: uint8 (N, size, size, 3)
    pixels: np.ndarray
    #: float32 (N, colour.DIM)
    colours: np.ndarray
    #: (id, reason) of each photo of the batch that could not be used
    skipped: list[tuple[str, str]]


def decode_batch(catalogue: Catalogue, items: Sequence[CatalogueItem], size: int, confinement: ImageConfinement) -> DecodedBatch:
    """Decode ``items``' photos to ``size``-square pixels; skip (with a reason) those that cannot be used.

    A photo that is a symlink out of the photos folder is skipped: the index loader refuses such
    paths (the bot uploads these files), so indexing it would make an index no bot can load.
    Any failure of the decoder, not only :class:`ImageDecodeError`, skips the one photo.
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
    return DecodedBatch(good, array, colour.colour_histograms(array), skipped)


def read_batches(catalogue: Catalogue, items: Sequence[CatalogueItem], batch_size: int, size: int) -> Iterator[DecodedBatch]:
    """``items`` in order, ``batch_size`` at a time, each batch decoded one step ahead on a helper thread."""
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    confinement = ImageConfinement(catalogue.images_dir)  # the same rule as load_index's
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:

        def decode(batch: Sequence[CatalogueItem]) -> Future[DecodedBatch]:
            return pool.submit(decode_batch, catalogue, batch, size, confinement)

        pending: Future[DecodedBatch] | None = decode(batches[0]) if batches else None
        for number in range(len(batches)):
            assert pending is not None
            result = pending.result()
            pending = decode(batches[number + 1]) if number + 1 < len(batches) else None
            yield result
