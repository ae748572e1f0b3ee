"""bot/shopper_filters.py: how a filter is named, what each button toggles, and the rows of buttons under an album."""

from __future__ import annotations

import numpy as np
from telegram import InlineKeyboardButton

from bot.pages import NextPage
from bot.shopper_filters import ACTIVE, CLEAR, MAX_GENDERS, describe, filter_rows, with_gender, with_kind

GENDERS = ["Men", "Women", "Unisex", "Boys", "Girls", "Kids", "Other"]
VECTOR = np.linspace(0.0, 1.0, 8, dtype=np.float32)


def page(named=(), kind: str | None = "Tshirts", offset: int = 10) -> NextPage:
    return NextPage(VECTOR, offset, pinned=(3, 4), generation=2, named=tuple(named), kind=kind, exact=True)


def texts(rows: list[list[InlineKeyboardButton]]) -> list[list[str]]:
    return [[button.text for button in row] for row in rows]


def data(rows: list[list[InlineKeyboardButton]], text: str) -> NextPage:
    (found,) = [button.callback_data for row in rows for button in row if button.text == text]
    assert isinstance(found, NextPage)
    return found


def test_describe_groups_kinds_and_joins_values_with_or() -> None:
    assert describe(()) == ""
    assert describe((("gender", "Women"),)) == "Women"
    red_or_black = (("gender", "Women"), ("subCategory", "Shoes"), ("baseColour", "Red"), ("baseColour", "Black"))
    assert describe(red_or_black) == "Women · Shoes · Red or Black"
    # the three category levels are one group ("dresses or tops"), in the order named
    assert describe((("subCategory", "Dress"), ("articleType", "Tops"), ("gender", "Men"))) == "Dress or Tops · Men"
    scattered = (("baseColour", "Red"), ("masterCategory", "Footwear"), ("gender", "Women"), ("articleType", "Caps"))
    assert describe(scattered) == "Red · Footwear or Caps · Women"


def test_a_gender_button_replaces_the_gender_and_a_second_press_removes_it() -> None:
    red = (("baseColour", "Red"),)
    women = with_gender(red, "Women")
    assert women == (("baseColour", "Red"), ("gender", "Women"))
    assert with_gender(women, "Men") == (("baseColour", "Red"), ("gender", "Men"))
    assert with_gender(women, "Women") == red
    assert with_gender((), "Unisex") == (("gender", "Unisex"),)
    # caption words naming two genders: a button narrows to its one gender (it is not "exactly that")
    both = (("gender", "Men"), ("gender", "Women"), ("subCategory", "Shoes"))
    assert with_gender(both, "Women") == (("subCategory", "Shoes"), ("gender", "Women"))


def test_only_kind_replaces_every_kind_and_a_second_press_removes_it() -> None:
    caption = (("gender", "Women"), ("subCategory", "Shoes"), ("articleType", "Tops"), ("baseColour", "Red"))
    only = with_kind(caption, "articleType", "Heels")
    assert only == (("gender", "Women"), ("baseColour", "Red"), ("articleType", "Heels"))
    assert with_kind(only, "articleType", "Heels") == (("gender", "Women"), ("baseColour", "Red"))
    assert with_kind((), "articleType", "Tshirts") == (("articleType", "Tshirts"),)
    # the same value at another category level is not "exactly that": it becomes the article type
    assert with_kind((("subCategory", "Watches"),), "articleType", "Watches") == (("articleType", "Watches"),)


def test_unfiltered_rows_genders_then_only_kind_and_no_clear_button() -> None:
    rows = filter_rows(page(), GENDERS, "articleType")
    assert texts(rows) == [GENDERS[:MAX_GENDERS], ["Only Tshirts"]]
    assert not any(text.startswith(ACTIVE) for row in texts(rows) for text in row)
    assert data(rows, "Women").named == (("gender", "Women"),)
    assert data(rows, "Only Tshirts").named == (("articleType", "Tshirts"),)


def test_every_button_is_the_same_photos_page_at_rank_zero_with_its_filter() -> None:
    shown = page((("baseColour", "Red"),), offset=15)
    rows = filter_rows(shown, GENDERS[:3], "articleType")
    buttons = [button for row in rows for button in row]
    assert [button.text for button in buttons] == ["Men", "Women", "Unisex", "Only Tshirts", CLEAR]
    for button in buttons:
        pressed = button.callback_data
        assert isinstance(pressed, NextPage)
        assert pressed.offset == 0 and pressed.vector is shown.vector  # the same vector: no second download or embedding
        assert (pressed.pinned, pressed.generation, pressed.kind, pressed.exact) == ((3, 4), 2, "Tshirts", True)
    assert data(rows, "Men").named == (("baseColour", "Red"), ("gender", "Men"))
    assert data(rows, "Only Tshirts").named == (("baseColour", "Red"), ("articleType", "Tshirts"))
    assert data(rows, CLEAR).named == ()


def test_active_filters_are_marked_and_pressing_them_removes_them() -> None:
    shown = page((("gender", "Women"), ("articleType", "Tshirts")))
    rows = filter_rows(shown, GENDERS[:3], "articleType")
    assert texts(rows) == [["Men", f"{ACTIVE}Women", "Unisex"], [f"{ACTIVE}Only Tshirts", CLEAR]]
    assert data(rows, f"{ACTIVE}Women").named == (("articleType", "Tshirts"),)
    assert data(rows, f"{ACTIVE}Only Tshirts").named == (("gender", "Women"),)
    assert data(rows, "Men").named == (("articleType", "Tshirts"), ("gender", "Men"))
    # a caption's broader kind is not the "Only" kind: not marked, and the button narrows to it
    shoes = filter_rows(page((("subCategory", "Shoes"),), kind="Heels"), GENDERS[:2], "articleType")
    assert texts(shoes) == [["Men", "Women"], ["Only Heels", CLEAR]]
    assert data(shoes, "Only Heels").named == (("articleType", "Heels"),)
    # two genders named by the caption: neither button is "the" gender
    two = filter_rows(page((("gender", "Men"), ("gender", "Women"))), GENDERS[:2], "articleType")
    assert texts(two)[0] == ["Men", "Women"]


def test_no_gender_row_with_fewer_than_two_genders_and_no_kind_button_without_a_kind() -> None:
    assert texts(filter_rows(page(), ["Unisex"], "articleType")) == [["Only Tshirts"]]
    assert texts(filter_rows(page(), [], "articleType")) == [["Only Tshirts"]]
    assert texts(filter_rows(page(kind=None), ["Men", "Women"], "articleType")) == [["Men", "Women"]]
    assert texts(filter_rows(page(), ["Men", "Women"], None)) == [["Men", "Women"]]  # a catalogue without categories
    assert filter_rows(page(kind=None), ["Women"], None) == []
    filtered = filter_rows(page((("baseColour", "Red"),), kind=None), [], None)
    assert texts(filtered) == [[CLEAR]] and data(filtered, CLEAR).named == ()
