"""Read an operator's catalogue: a folder of product photos, optionally with Kaggle's styles.csv.

Kaggle layout: ``images/<id>.jpg`` plus ``styles.csv`` whose ``id`` column names the file. A plain
folder of images works too (ids are the file names without extension).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CatalogueError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})
ID_COLUMN = "id"
DISPLAY_NAME_COLUMN = "productDisplayName"


@dataclass(frozen=True)
class CatalogueItem:
    """One product: its id, photo path relative to the images folder, and its labels."""

    id: str
    image: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Catalogue:
    """The products found, the label columns, and what did not line up."""

    images_dir: Path
    items: list[CatalogueItem]
    columns: list[str]
    styles_path: Path | None = None
    #: ids listed in styles.csv whose photo is missing
    missing_images: list[str] = field(default_factory=list)
    #: ids that have a photo but no styles.csv row
    unlabelled: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


def _sort_key(item_id: str) -> tuple[int, int | str]:
    return (0, int(item_id)) if item_id.isdigit() else (1, item_id)


def scan_images(images_dir: Path) -> dict[str, str]:
    """Map id → relative path for every image file below ``images_dir`` (ids must be unique).

    Symlinked files are listed (the builder skips, and reports, those whose real path leaves
    ``images_dir``, as the index loader refuses them); symlinked sub-folders are not followed.
    """
    if not images_dir.is_dir():
        raise CatalogueError(f"Images folder not found: {images_dir}")
    found: dict[str, str] = {}
    for root, dirs, files in os.walk(images_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root, name)
            if name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            relative = path.relative_to(images_dir).as_posix()
            item_id = path.stem
            if item_id in found:
                raise CatalogueError(
                    f"Duplicate product id {item_id!r}: both {found[item_id]} and {relative}. "
                    "Each image file name (without extension) must be unique."
                )
            found[item_id] = relative
    if not found:
        raise CatalogueError(
            f"No images in {images_dir} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} files)."
        )
    return found


def read_styles(styles_path: Path) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Read styles.csv into id → labels. Rows with extra commas join the surplus into the last column.

    (Kaggle's file has a few product names containing unquoted commas.)
    """
    if not styles_path.is_file():
        raise CatalogueError(f"styles.csv not found: {styles_path}")
    try:
        with open(styles_path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [column.strip() for column in next(reader, [])]
            if ID_COLUMN not in header:
                raise CatalogueError(
                    f"{styles_path} has no {ID_COLUMN!r} column (found: {', '.join(header) or 'nothing'}). "
                    "The first row must name the columns, one of them 'id'."
                )
            if len(set(header)) != len(header):
                raise CatalogueError(f"{styles_path} repeats a column name: {', '.join(header)}")
            styles: dict[str, dict[str, str]] = {}
            for line_number, row in enumerate(reader, start=2):
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) > len(header):
                    row = row[: len(header) - 1] + [",".join(row[len(header) - 1 :])]
                row = row + [""] * (len(header) - len(row))
                labels = {column: value.strip() for column, value in zip(header, row)}
                item_id = labels[ID_COLUMN]
                if not item_id:
                    raise CatalogueError(f"{styles_path}:{line_number}: empty id")
                if item_id in styles:
                    raise CatalogueError(f"{styles_path}:{line_number}: duplicate id {item_id!r}")
                styles[item_id] = labels
    except UnicodeDecodeError as exc:
        raise CatalogueError(f"{styles_path} is not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise CatalogueError(f"{styles_path} is not a valid CSV file: {exc}") from exc
    return styles, header


def find_catalogue(directory: Path) -> tuple[Path, Path | None] | None:
    """(images_dir, styles_csv or None) when ``directory`` holds a catalogue, else None.

    Kaggle layout: ``directory/images/`` with ``styles.csv`` beside it (optional); else
    ``directory`` itself when it holds photos.
    """
    if (directory / "images").is_dir():
        styles = directory / "styles.csv"
        return directory / "images", styles if styles.is_file() else None
    if directory.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in directory.iterdir()):
        return directory, None
    return None


def check_columns(columns: list[str], required: list[str], styles_path: Path | None) -> None:
    """Fail clearly when columns the caller relies on (e.g. for captions or evaluation) are absent."""
    missing = [column for column in required if column not in columns]
    if missing:
        where = styles_path or "the catalogue (no styles.csv given)"
        raise CatalogueError(f"{where} lacks required column(s): {', '.join(missing)}")


def load_catalogue(
    images_dir: str | os.PathLike[str],
    styles_path: str | os.PathLike[str] | None = None,
    *,
    require_columns: list[str] | None = None,
) -> Catalogue:
    """Scan a catalogue; with ``styles_path``, attach each image's labels by id."""
    images_dir = Path(images_dir)
    images = scan_images(images_dir)
    columns = [ID_COLUMN]
    styles: dict[str, dict[str, str]] = {}
    styles_file = Path(styles_path) if styles_path else None
    if styles_file is not None:
        styles, columns = read_styles(styles_file)
    check_columns(columns, require_columns or [], styles_file)
    items = [
        CatalogueItem(item_id, images[item_id], styles.get(item_id, {ID_COLUMN: item_id}))
        for item_id in sorted(images, key=_sort_key)
    ]
    return Catalogue(
        images_dir=images_dir,
        items=items,
        columns=columns,
        styles_path=styles_file,
        missing_images=sorted((set(styles) - set(images)), key=_sort_key) if styles else [],
        unlabelled=sorted((set(images) - set(styles)), key=_sort_key) if styles else [],
    )


_SPACES = re.compile(r"\s+")


def display_name(labels: dict[str, str]) -> str:
    """The product's human name: productDisplayName when known, else its id."""
    name = _SPACES.sub(" ", labels.get(DISPLAY_NAME_COLUMN, "")).strip()
    return name or f"Product {labels.get(ID_COLUMN, '?')}"
