"""A contact sheet of search results, to see retrieval quality at a glance (Pillow only).

One row per query: the query photo, then its top results left to right. Each cell shows the photo
(fitted into ``CELL_W`` x ``CELL_H`` on white) above three lines of text (articleType; baseColour
and score; the display name, truncated). A cell may carry an inset, a second photo drawn small in
its bottom-left corner (a shopper-photo query shows its catalogue photo there). Frames: the query is framed dark blue, a result of the
query's article type green with a check mark, any other result red with a cross.

Size (deterministic, depends only on the number of rows and columns)::

    width  = 2 * MARGIN + columns * CELL_W + (columns - 1) * GAP + (QUERY_GAP - GAP)
    height = 2 * MARGIN + HEADER_H + rows * (CELL_H + TEXT_H) + (rows - 1) * GAP

With the defaults (cells 120 x 160 px + 36 px of text, 6 columns = query + 5 results, margins
10 px, gaps 6 px, 18 px before the first result, 28 px header) 12 queries make 782 x 2466 px.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Union

from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..images import decode_image

CELL_W, CELL_H, TEXT_H = 120, 160, 36
MARGIN, GAP, QUERY_GAP, HEADER_H = 10, 6, 18, 28
COLUMNS = 6
FONT_SIZE, HEADER_FONT_SIZE = 10, 13
FRAME = 3
INSET_SIZE = (CELL_W // 3, CELL_H // 3)
QUERY_COLOUR = (30, 60, 150)
RIGHT_COLOUR = (20, 150, 50)
WRONG_COLOUR = (210, 30, 30)
TEXT_COLOUR = (20, 20, 20)
MUTED_COLOUR = (90, 90, 90)

ImageLike = Union[str, "os.PathLike[str]", Image.Image, None]


@dataclass(frozen=True)
class SheetCell:
    """One photo on the sheet. ``correct`` is None for the query, else whether the type matches."""

    image: ImageLike
    article_type: str = ""
    colour: str = ""
    name: str = ""
    score: float | None = None
    correct: bool | None = None
    inset: ImageLike = None


def sheet_size(rows: int, columns: int = COLUMNS) -> tuple[int, int]:
    """``(width, height)`` in pixels of a sheet with ``rows`` queries and ``columns`` cells per row."""
    width = 2 * MARGIN + columns * CELL_W + (columns - 1) * GAP + (QUERY_GAP - GAP if columns > 1 else 0)
    height = 2 * MARGIN + HEADER_H + rows * (CELL_H + TEXT_H) + max(rows - 1, 0) * GAP
    return width, height


@lru_cache(maxsize=8)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans when installed, else Pillow's built-in font (scalable in Pillow >= 10.1)."""
    names = ["DejaVuSansCondensed-Bold.ttf", "DejaVuSans-Bold.ttf"] if bold else ["DejaVuSansCondensed.ttf", "DejaVuSans.ttf"]
    for name in names:
        for candidate in (name, f"/usr/share/fonts/truetype/dejavu/{name}"):
            try:
                return ImageFont.truetype(candidate, size)
            except OSError:
                continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels."""
    text = " ".join(str(text).split())
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text.rstrip() + "…"


def _photo(source: ImageLike, size: tuple[int, int] = (CELL_W, CELL_H)) -> Image.Image:
    """The cell's photo fitted into ``size`` on white; a grey placeholder if unreadable."""
    cell_w, cell_h = size
    canvas = Image.new("RGB", (cell_w, cell_h), (255, 255, 255))
    try:
        if source is None:
            raise OSError("no image")
        # decode_image: upright, RGB on white, size limits: the photo as the model saw it
        image = ImageOps.exif_transpose(source).convert("RGB") if isinstance(source, Image.Image) else decode_image(source, min_side=cell_h)
        image = ImageOps.contain(image, (cell_w - 2 * FRAME, cell_h - 2 * FRAME), Image.Resampling.LANCZOS)
        canvas.paste(image, ((cell_w - image.width) // 2, (cell_h - image.height) // 2))
    except (OSError, ValueError):
        draw = ImageDraw.Draw(canvas)
        draw.rectangle([0, 0, cell_w - 1, cell_h - 1], fill=(225, 225, 225))
        draw.text((cell_w // 2, cell_h // 2), "no image", fill=MUTED_COLOUR, font=_font(FONT_SIZE), anchor="mm")
    return canvas


def _badge(draw: ImageDraw.ImageDraw, x: int, y: int, correct: bool) -> None:
    """A round badge in the cell's top-right corner: a check mark or a cross, drawn as lines."""
    size = 16
    left, top = x + CELL_W - size - 4, y + 4
    colour = RIGHT_COLOUR if correct else WRONG_COLOUR
    draw.ellipse([left, top, left + size, top + size], fill=colour)
    if correct:
        draw.line([(left + 4, top + 8), (left + 7, top + 12), (left + 12, top + 4)], fill=(255, 255, 255), width=2)
    else:
        draw.line([(left + 4, top + 4), (left + 12, top + 12)], fill=(255, 255, 255), width=2)
        draw.line([(left + 12, top + 4), (left + 4, top + 12)], fill=(255, 255, 255), width=2)


def _cell(sheet: Image.Image, draw: ImageDraw.ImageDraw, x: int, y: int, cell: SheetCell) -> None:
    sheet.paste(_photo(cell.image), (x, y))
    if cell.inset is not None:
        inset_w, inset_h = INSET_SIZE
        left, top = x + FRAME, y + CELL_H - FRAME - inset_h
        sheet.paste(_photo(cell.inset, INSET_SIZE), (left, top))
        draw.rectangle([left, top, left + inset_w - 1, top + inset_h - 1], outline=MUTED_COLOUR, width=1)
    colour = QUERY_COLOUR if cell.correct is None else RIGHT_COLOUR if cell.correct else WRONG_COLOUR
    draw.rectangle([x, y, x + CELL_W - 1, y + CELL_H - 1], outline=colour, width=FRAME)
    if cell.correct is None:
        tag = "QUERY"
        font = _font(FONT_SIZE, bold=True)
        width = int(draw.textlength(tag, font=font)) + 8
        draw.rectangle([x, y, x + width, y + 14], fill=QUERY_COLOUR)
        draw.text((x + 4, y + 1), tag, fill=(255, 255, 255), font=font)
    else:
        _badge(draw, x, y, cell.correct)
    text_y = y + CELL_H + 1
    regular, bold = _font(FONT_SIZE), _font(FONT_SIZE, bold=True)
    type_colour = TEXT_COLOUR if cell.correct is not False else WRONG_COLOUR
    score = "query" if cell.correct is None else ("" if cell.score is None else f"{cell.score:.3f}")
    second = " · ".join(part for part in (cell.colour, score) if part)
    draw.text((x + 1, text_y), _fit_text(draw, cell.article_type or "?", bold, CELL_W - 2), fill=type_colour, font=bold)
    draw.text((x + 1, text_y + 12), _fit_text(draw, second, regular, CELL_W - 2), fill=TEXT_COLOUR, font=regular)
    draw.text((x + 1, text_y + 24), _fit_text(draw, cell.name, regular, CELL_W - 2), fill=MUTED_COLOUR, font=regular)


def contact_sheet(rows: Sequence[Sequence[SheetCell]], header: str = "", columns: int = COLUMNS) -> Image.Image:
    """Draw the sheet: ``rows[i][0]`` is a query, ``rows[i][1:]`` its results (extra cells are dropped)."""
    size = sheet_size(len(rows), columns)
    sheet = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    header_font = _font(HEADER_FONT_SIZE, bold=True)
    draw.text((MARGIN, MARGIN + 2), _fit_text(draw, header, header_font, size[0] - 2 * MARGIN), fill=TEXT_COLOUR, font=header_font)
    for r, cells in enumerate(rows):
        y = MARGIN + HEADER_H + r * (CELL_H + TEXT_H + GAP)
        for c, cell in enumerate(list(cells)[:columns]):
            x = MARGIN + c * (CELL_W + GAP) + (QUERY_GAP - GAP if c > 0 else 0)
            _cell(sheet, draw, x, y, cell)
    return sheet


def save_contact_sheet(path: str | os.PathLike[str], rows: Sequence[Sequence[SheetCell]], header: str = "") -> Path:
    """Draw and write the sheet as PNG; returns the path."""
    path = Path(path)
    contact_sheet(rows, header).save(path, format="PNG", optimize=True)
    return path
