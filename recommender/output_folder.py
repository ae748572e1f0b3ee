"""Which ``--out`` folders a build may replace, and the lock that gives one build a folder.

A build swaps its result in by renaming whatever is at ``out_dir`` aside and deleting it, and it
clears ``.<out>.partial``; so it replaces only a new or empty folder or an earlier index, never a
folder of anything else, and never one that holds (or lies inside) the catalogue it reads. It
holds an exclusive lock on the folder from start to swap (``recommender/locking.py``).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .catalogue import Catalogue
from .checkpoint import refuse_foreign_checkpoint
from .errors import BuildError, BuildLockedError, LockBusyError
from .index_store import MANIFEST, index_exists
from .locking import build_lock


def partial_dir_for(out_dir: Path) -> Path:
    """``.<out>.partial`` beside ``out_dir``: where a build keeps its checkpoint."""
    return out_dir.with_name(f".{out_dir.name}.partial")


def check_output(out_dir: str | os.PathLike[str], catalogue: Catalogue) -> None:
    """Refuse an output folder whose replacement would destroy anything but an earlier index.

    ``out_dir`` must be new, empty or an index (it has a manifest), and neither it nor its
    checkpoint folder may hold the photos or styles.csv being indexed. Writing the index into the
    photos folder is refused too, and so is a mount point (the final swap renames ``out_dir``,
    which the kernel refuses for a mount point, after the whole build). ``build_index`` calls it;
    callers may call it earlier (before loading a model) to fail fast.
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
    refuse_foreign_checkpoint(partial_dir_for(out))
    if not out.exists():
        return
    if not out.is_dir():
        raise BuildError(f"Output path {out} exists and is not a directory.")
    if index_exists(out):
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


def remove_stale_siblings(out_dir: Path) -> None:
    """Delete staging/old folders that killed builds left beside ``out_dir`` (only under the lock)."""
    pattern = re.compile(rf"\.{re.escape(out_dir.name)}\.(tmp|old)-\d+-\d+")
    for sibling in out_dir.parent.iterdir():
        if pattern.fullmatch(sibling.name) and sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)


def _existing_ancestor(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


@contextmanager
def output_lock(
    out_dir: str | os.PathLike[str], *, wait: float | None = 0.0, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold ``out_dir``'s exclusive build lock (creating its parent folder), with operator-readable errors.

    Re-entrant in one thread: a caller may hold it around its own checks and then call
    ``build_index``, which takes it again. ``wait`` and ``on_wait`` are those of
    :func:`recommender.locking.build_lock`; a lock still busy after ``wait`` is :class:`BuildLockedError`,
    a planted lock-file link :class:`LockFileError`.
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
        except OSError as exc:
            raise BuildError(f"Cannot write to {out_dir.parent}: {exc.strerror or exc}") from exc
        yield
