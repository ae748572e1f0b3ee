"""recommender/evaluation/contact_sheet.py: the PNG of queries and their results."""

from __future__ import annotations

import numpy as np
from PIL import Image

from recommender.evaluation.contact_sheet import (
    CELL_H,
    CELL_W,
    FRAME,
    GAP,
    HEADER_H,
    MARGIN,
    QUERY_COLOUR,
    QUERY_GAP,
    RIGHT_COLOUR,
    WRONG_COLOUR,
    SheetCell,
    contact_sheet,
    save_contact_sheet,
    sheet_size,
)


def cell_origin(row: int, column: int) -> tuple[int, int]:
    """Top-left pixel of a cell, from the layout the module documents."""
    x = MARGIN + column * (CELL_W + GAP) + (QUERY_GAP - GAP if column > 0 else 0)
    return x, MARGIN + HEADER_H + row * (CELL_H + 36 + GAP)


def test_contact_sheet_is_a_png_of_the_documented_size(tmp_path):
    photo = tmp_path / "p.jpg"
    Image.new("RGB", (60, 80), (200, 30, 40)).save(photo)
    assert sheet_size(12) == (2 * 10 + 6 * 120 + 5 * 6 + 12, 2 * 10 + 28 + 12 * (160 + 36) + 11 * 6) == (782, 2466)
    query = SheetCell(photo, "Tshirts", "Red", "A very long product display name that cannot fit")
    row = [query] + [SheetCell(photo, "Tshirts" if i % 2 else "Shirts", "Red", "x", 0.9 - i / 10, bool(i % 2)) for i in range(5)]
    rows = [row, row[:3] + [SheetCell(tmp_path / "missing.jpg", correct=False)]]
    path = save_contact_sheet(tmp_path / "sheet.png", rows, header="test ✓ ✗")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == sheet_size(2) and image.mode == "RGB"
        pixels = np.asarray(image)
    # The first result (wrong type) has a red frame, the second (right type) a green one.
    x1, x2, y = 10 + 120 + 18, 10 + 2 * 120 + 6 + 18, 10 + 28 + 80
    assert tuple(pixels[y, x1 + 1]) == (210, 30, 30) and tuple(pixels[y, x2 + 1]) == (20, 150, 50)
    assert contact_sheet([], "empty").size == sheet_size(0)


def test_frames_say_query_right_or_wrong_and_photos_fill_the_cells():
    red = Image.new("RGB", (40, 40), (200, 30, 40))
    sheet = np.asarray(contact_sheet([[SheetCell(red), SheetCell(red, correct=True), SheetCell(red, correct=False)]]))
    for column, frame in enumerate([QUERY_COLOUR, RIGHT_COLOUR, WRONG_COLOUR]):
        x, y = cell_origin(0, column)
        assert tuple(sheet[y + CELL_H // 2, x + 1]) == frame, column  # left edge of the frame
        assert tuple(sheet[y + CELL_H // 2, x + CELL_W // 2]) == (200, 30, 40), column  # the photo itself


def test_an_unreadable_photo_becomes_a_grey_placeholder(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    sheet = np.asarray(contact_sheet([[SheetCell(None), SheetCell(broken, correct=True)]]))
    for column in (0, 1):
        x, y = cell_origin(0, column)
        assert tuple(sheet[y + CELL_H - FRAME - 2, x + FRAME + 2]) == (225, 225, 225), column  # bottom left: no tag or badge


def test_cells_beyond_the_columns_are_dropped():
    red, blue = Image.new("RGB", (8, 8), (200, 30, 40)), Image.new("RGB", (8, 8), (20, 40, 210))
    row = [SheetCell(red)] + [SheetCell(red, correct=True)] * 5 + [SheetCell(blue, correct=True)] * 3
    sheet = contact_sheet([row])
    assert sheet.size == sheet_size(1)
    pixels = np.asarray(sheet)
    assert not np.any(np.all(pixels == (20, 40, 210), axis=-1))  # no blue cell was drawn


def test_an_inset_shows_a_second_photo_small_in_the_bottom_left_corner():
    from recommender.evaluation.contact_sheet import INSET_SIZE

    red, blue = Image.new("RGB", (90, 120), (200, 30, 40)), Image.new("RGB", (90, 120), (20, 40, 210))
    sheet = np.asarray(contact_sheet([[SheetCell(red, inset=blue), SheetCell(red, correct=True)]]))
    x, y = cell_origin(0, 0)
    inset_w, inset_h = INSET_SIZE
    assert tuple(sheet[y + CELL_H - FRAME - inset_h // 2, x + FRAME + inset_w // 2]) == (20, 40, 210)  # the inset
    assert tuple(sheet[y + FRAME + 20, x + CELL_W // 2]) == (200, 30, 40)  # the photo above it
    rx, ry = cell_origin(0, 1)
    assert tuple(sheet[ry + CELL_H - FRAME - inset_h // 2, rx + FRAME + inset_w // 2]) == (200, 30, 40)  # no inset
