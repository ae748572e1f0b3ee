"""Every error an operator or a shopper can trigger, under one root.

Callers catch :class:`LookalikeError` and show ``str(error)``: each message says what went wrong
and what to do about it. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class LookalikeError(Exception):
    """Root of every error with a message meant for an operator or a shopper."""


class ImageDecodeError(LookalikeError, ValueError):
    """The bytes are not an image we can use; the message is safe to show to a shopper."""


class ImageTooBig(LookalikeError):
    """The shopper's image is over the download limit (known before downloading it)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"That image is too big ({size / 1e6:.1f} MB). Please send one under {limit // (1024 * 1024)} MB.")


class UnusablePhoto(LookalikeError):
    """A catalogue photo cannot be sent and no conforming copy can be made from it (e.g. it is damaged)."""


class CatalogueError(LookalikeError):
    """The catalogue cannot be indexed as given; the message says what to fix."""


class ModelLoadError(LookalikeError):
    """The backbone or its weights could not be loaded; the message tells the operator why."""


class CatalogueIndexError(LookalikeError):
    """Any problem with an index directory; the message tells the operator what to do."""


class IndexNotFoundError(CatalogueIndexError):
    """No index at the given directory."""


class IndexCorruptError(CatalogueIndexError):
    """The index directory exists but its files are missing, unreadable or inconsistent."""


class ModelMismatchError(CatalogueIndexError):
    """The extractor asked for does not produce the features stored in the index."""


class SearchBackendError(CatalogueIndexError):
    """The index's search backend (a Milvus server or collection) cannot be opened or written; the message says why."""


class SearchUnavailableError(LookalikeError):
    """A search backend that answered before did not answer now (a Milvus server went away): try again later."""


class ExpiredSearchError(LookalikeError):
    """A "Next 5" page was asked of an index generation that a reload has replaced (its rows are other products now)."""


class FilterError(LookalikeError, ValueError):
    """A search filter names a column the catalogue does not have, or is malformed; the message says which columns exist."""


class BuildError(LookalikeError):
    """The index cannot be built as asked; the message says why."""


class BuildLockedError(BuildError):
    """Another build is running on the same output folder."""


class LockBusyError(BuildError):
    """Another holder kept a build lock for longer than we were willing to wait."""

    def __init__(self, lock_path: Path, holder_pid: int | None) -> None:
        self.lock_path = lock_path
        self.holder_pid = holder_pid
        super().__init__(f"{lock_path} is held by {f'process {holder_pid}' if holder_pid else 'another process'}")


class LockFileError(BuildError):
    """The lock path is not a plain file of our own (a symlink, a hard link, a device...): not touched."""

    def __init__(self, lock_path: Path, what: str) -> None:
        self.lock_path = lock_path
        super().__init__(
            f"The build lock {lock_path} {what}; a build never writes through it, as that would overwrite "
            "another file. Remove it (a build creates its own lock file) and run again."
        )


class NotLoadedError(LookalikeError, RuntimeError):
    """A method that needs loaded state was called before ``load()``."""


class ConfigError(LookalikeError):
    """A setting is missing or invalid; the message names it and says how to fix it."""
