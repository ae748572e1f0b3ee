"""The build's checkpoint: finished work saved in chunks to ``.<out>.partial`` beside the output.

Each chunk's arrays are written before the small JSON file that marks the chunk complete, so
after Ctrl-C, ``kill`` or a power cut the same command resumes at the last finished chunk, and a
chunk cut short is simply redone. A checkpoint is valid only for the model, photos folder and colour histogram that
made it (``state.json``); any other is discarded. The folder is deleted at times, so a folder at
that path holding anything but checkpoint files is refused rather than cleared.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import colour
from .errors import BuildError
from .fileio import atomic_file, os_error_text, read_json, write_json_atomic
from .manifest import ModelIdentity

STATE = "state.json"
_CHUNK_PREFIX = "chunk-"


def refuse_foreign_checkpoint(directory: Path) -> None:
    """Raise :class:`BuildError` when ``directory`` exists and holds anything but checkpoint files."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise BuildError(f"{directory} is in the way: the build keeps its checkpoints there. Move it away and run again.")
    if not (directory / STATE).is_file() and any(directory.iterdir()):
        raise BuildError(
            f"{directory} is in the way: the build keeps its checkpoints there, but it holds files "
            f"that are not a checkpoint (no {STATE}). Move it away and run again."
        )


class FinishedRows:
    """The vectors and colour histograms of every finished item, by id (chunk files memory-mapped once each)."""

    def __init__(self, directory: Path, chunks: Sequence[dict[str, Any]]) -> None:
        self._sources = {
            item_id: (directory / chunk["vectors"], directory / chunk["colours"], row)
            for chunk in chunks
            for row, item_id in enumerate(chunk["ids"])
        }
        self._open: dict[Path, np.ndarray] = {}

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._sources

    def _array(self, path: Path) -> np.ndarray:
        if path not in self._open:
            self._open[path] = np.load(path, mmap_mode="r", allow_pickle=False)
        return self._open[path]

    def row(self, item_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(features, colour histogram) of one finished item."""
        features_path, colours_path, row = self._sources[item_id]
        return self._array(features_path)[row], self._array(colours_path)[row]

    def close(self) -> None:
        self._open.clear()


class Checkpoint:
    """Finished work of one build in its partial directory, saved every ``save_every`` items."""

    def __init__(self, directory: Path, model: ModelIdentity, images_root: Path, *, save_every: int) -> None:
        self.directory = directory
        # The chunks hold colour histograms too: work saved by a build that computed them another way is redone.
        self.identity = {"model": model.to_json(), "images_root": str(images_root.resolve()), "colour_histogram": colour.describe()}
        self.feature_dim = model.feature_dim
        self.save_every = save_every
        self.chunks: list[dict[str, Any]] = []
        self._ids: list[str] = []
        self._vectors: list[np.ndarray] = []
        self._colours: list[np.ndarray] = []
        self._skipped: list[tuple[str, str]] = []

    def open(self) -> None:
        """Resume matching earlier work, or start clean when there is none or it is for another model."""
        state_path = self.directory / STATE
        if state_path.is_file():
            try:
                same = read_json(state_path) == self.identity
            except (OSError, ValueError):
                same = False
            if same:
                self.chunks = self._read_chunks()
                return
        if self.directory.exists():
            refuse_foreign_checkpoint(self.directory)
            shutil.rmtree(self.directory)
        try:
            self.directory.mkdir(parents=True)
            write_json_atomic(self.directory / STATE, self.identity)
        except OSError as exc:
            raise BuildError(f"Cannot write to {self.directory.parent}: {exc.strerror or exc}") from exc

    def _read_chunks(self) -> list[dict[str, Any]]:
        chunks = []
        for meta_path in sorted(self.directory.glob(f"{_CHUNK_PREFIX}*.json")):
            try:
                meta = read_json(meta_path)
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
        """One past the highest chunk number on disk: a new chunk never takes the name of a kept one,
        even when an earlier, damaged chunk was discarded."""
        numbers = [
            int(path.stem[len(_CHUNK_PREFIX) :])
            for path in self.directory.glob(f"{_CHUNK_PREFIX}*.json")
            if path.stem[len(_CHUNK_PREFIX) :].isdigit()
        ]
        return max(numbers, default=-1) + 1

    def done_ids(self) -> set[str]:
        """Ids already embedded or skipped by saved chunks."""
        return {item_id for chunk in self.chunks for item_id in chunk["ids"]} | {
            item_id for chunk in self.chunks for item_id, _ in chunk["skipped"]
        }

    def skipped(self) -> list[tuple[str, str]]:
        """(id, reason) of every photo the saved chunks could not use."""
        return [(item_id, reason) for chunk in self.chunks for item_id, reason in chunk["skipped"]]

    def add(self, ids: Sequence[str], vectors: np.ndarray, colours: np.ndarray, skipped: Sequence[tuple[str, str]]) -> None:
        """Take one batch's work (row i of the arrays belongs to ``ids[i]``); save a chunk when enough is pending."""
        if len(ids):
            self._ids.extend(ids)
            self._vectors.append(vectors)
            self._colours.append(colours)
        self._skipped.extend(skipped)
        if len(self._ids) + len(self._skipped) >= self.save_every:
            self.flush()

    def flush(self) -> None:
        """Save whatever is pending as one chunk (call it on the way out, Ctrl-C included)."""
        if not (self._ids or self._skipped):
            return
        vectors = np.concatenate(self._vectors) if self._vectors else np.zeros((0, self.feature_dim), np.float32)
        colours = np.concatenate(self._colours) if self._colours else np.zeros((0, colour.DIM), np.float32)
        try:
            self.save(list(self._ids), vectors, colours, list(self._skipped))
        except OSError as exc:
            raise BuildError(
                f"Cannot save progress in {self.directory}: {os_error_text(exc)}. Work saved before is kept: "
                "fix the cause and run the same command again to resume."
            ) from exc
        self._ids.clear()
        self._vectors.clear()
        self._colours.clear()
        self._skipped.clear()

    def save(self, ids: list[str], vectors: np.ndarray, colours: np.ndarray, skipped: list[tuple[str, str]]) -> None:
        """Write one chunk now: its arrays first, then the JSON file that marks it complete."""
        name = f"{_CHUNK_PREFIX}{self._next_number():06d}"
        for path, array in ((self.directory / f"{name}.npy", vectors), (self.directory / f"{name}.colour.npy", colours)):
            with atomic_file(path) as handle:
                np.save(handle, array.astype(np.float32), allow_pickle=False)
        meta = {"vectors": f"{name}.npy", "colours": f"{name}.colour.npy", "ids": ids, "skipped": [list(s) for s in skipped]}
        write_json_atomic(self.directory / f"{name}.json", meta)
        self.chunks.append(meta)

    def finished_rows(self) -> FinishedRows:
        """The saved rows by id (call :meth:`FinishedRows.close` when done reading them)."""
        return FinishedRows(self.directory, self.chunks)

    def remove(self) -> None:
        """Delete the checkpoint once its work is in a finished index."""
        shutil.rmtree(self.directory, ignore_errors=True)
