"""Narrowing an answer: the buttons under an album that filter it, and how a filter is named to shoppers.

A shopper's filter is a tuple of ``(column, value)`` pairs (recommender/filter_words.py): the
photo's caption words name some ("women", "red", "shoes"), the buttons set two of them:

* one button per gender of the catalogue (most frequent first, at most :data:`MAX_GENDERS`): it
  replaces the filter's gender; pressed again ("✓ Women") it removes it;
* "Only <kind>": the article type of the first album's top match; it replaces the filter's kind of
  product (caption words such as "shoes" included); pressed again it removes it;
* "All products" when any filter is active: clears it.

Every button is a :class:`bot.pages.NextPage` at rank 0 with its filter, so a press is answered like
"Next 5": the same photo's vector searched again, no second download. Colour, named only by caption
words, stays until cleared.
"""

from __future__ import annotations

from dataclasses import replace

from telegram import InlineKeyboardButton

from recommender.filter_words import KIND_COLUMNS, Named

from .pages import NextPage

GENDER = "gender"
#: Gender buttons in the row, at most (Telegram shows up to 8 in one row; 5 still read well on a phone).
MAX_GENDERS = 5
ACTIVE = "✓ "
CLEAR = "✖ All products"


def describe(named: tuple[Named, ...]) -> str:
    """"Women · Shoes · Red or Black": a filter as the album caption and the prompt name it."""
    by_column: dict[str, list[str]] = {}
    for column, value in named:
        group = "kind" if column in KIND_COLUMNS else column
        by_column.setdefault(group, []).append(value)
    return " · ".join(" or ".join(values) for values in by_column.values())


def with_gender(named: tuple[Named, ...], gender: str) -> tuple[Named, ...]:
    """The filter with ``gender`` instead of its gender, or without one when it was exactly that."""
    rest = tuple(pair for pair in named if pair[0] != GENDER)
    if _only(named, {GENDER}) == [gender]:
        return rest
    return (*rest, (GENDER, gender))


def with_kind(named: tuple[Named, ...], column: str, kind: str) -> tuple[Named, ...]:
    """The filter with only ``kind`` as its kind of product, or without a kind when it was exactly that."""
    rest = tuple(pair for pair in named if pair[0] not in KIND_COLUMNS)
    if [pair for pair in named if pair[0] in KIND_COLUMNS] == [(column, kind)]:
        return rest
    return (*rest, (column, kind))


def _only(named: tuple[Named, ...], columns: set[str]) -> list[str]:
    return [value for column, value in named if column in columns]


def filter_rows(page: NextPage, genders: list[str], kind_column: str | None) -> list[list[InlineKeyboardButton]]:
    """The filter buttons under an album of ``page`` (a page of the filter ``page.named``)."""

    def button(text: str, named: tuple[Named, ...]) -> InlineKeyboardButton:
        return InlineKeyboardButton(text, callback_data=replace(page, offset=0, named=named))

    rows = []
    active_genders = _only(page.named, {GENDER})
    if len(genders) > 1:
        rows.append([
            button(f"{ACTIVE}{gender}" if active_genders == [gender] else gender, with_gender(page.named, gender))
            for gender in genders[:MAX_GENDERS]
        ])  # fmt: skip
    last = []
    if page.kind and kind_column is not None:
        active = [pair for pair in page.named if pair[0] in KIND_COLUMNS] == [(kind_column, page.kind)]
        last.append(button(f"{ACTIVE if active else ''}Only {page.kind}", with_kind(page.named, kind_column, page.kind)))
    if page.named:
        last.append(button(CLEAR, ()))
    if last:
        rows.append(last)
    return rows
