"""Which catalogue photos may be read: only those whose real path lies inside the photos folder.

The bot uploads catalogue photos to shoppers, so a product path naming ``../../etc/hostname``, an
absolute path or a symlink out of the catalogue must never be read. The reader (which skips such
photos) and the index loader (which refuses an index that names one) share this one rule, so an
index the builder wrote always loads.
"""

from __future__ import annotations

import os


class ImageConfinement:
    """Answers "may this relative photo path be read?" for one images root, cheaply and repeatedly.

    Paths are checked lexically first; then each distinct folder is resolved once, and each folder
    is listed once to find its symlinked photos, so only those pay for a ``realpath`` (a name the
    listing lacks gets its own ``lstat``). The loader runs this over every product at each bot
    start, so per-photo system calls are avoided.
    """

    def __init__(self, images_root: str | os.PathLike[str]) -> None:
        self.root = os.path.realpath(images_root)
        self._prefix = self.root.rstrip(os.sep) + os.sep
        self._folders: dict[str, bool] = {}
        self._links: dict[str, dict[str, bool] | None] = {}

    def _inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self._prefix)

    def _is_link(self, folder: str, name: str) -> bool:
        """Whether ``folder/name`` is a symlink, from the folder's listing (read once per folder)."""
        if folder not in self._links:
            try:
                with os.scandir(os.path.join(self.root, folder)) as entries:
                    self._links[folder] = {entry.name: entry.is_symlink() for entry in entries}
            except OSError:
                self._links[folder] = None  # e.g. a folder we may enter but not list: lstat each photo
        listed = self._links[folder]
        if listed is not None and name in listed:
            return listed[name]
        return os.path.islink(os.path.join(self.root, folder, name))

    def allows(self, image: str) -> bool:
        """Whether ``image`` (a ``/``-separated path relative to the root) really lies inside it."""
        parts = image.split("/")
        if not image or "\x00" in image or os.path.isabs(image) or any(part in ("", ".", "..") for part in parts):
            return False
        folder = "/".join(parts[:-1])
        if folder not in self._folders:
            self._folders[folder] = self._inside(os.path.realpath(os.path.join(self.root, folder)))
        if not self._folders[folder]:
            return False
        return not self._is_link(folder, parts[-1]) or self._inside(os.path.realpath(os.path.join(self.root, image)))
