"""Optional catalogue columns that let a shopper buy: ``link`` (the product page), ``price`` and ``currency``.

A catalogue without them changes nothing. The build checks every value (``checked``): a link that is
not an absolute http(s) URL, or a price that is not a plain non-negative number, is reported in the
build report and blanked, so no shopper ever gets it; the bot shows the price in the caption and
opens the link from a numbered button under the album.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from .catalogue import CatalogueItem

LINK = "link"
PRICE = "price"
CURRENCY = "currency"
#: longest link kept (Telegram's URL buttons take up to 2,048 bytes... and a longer one is no shop page)
MAX_LINK = 2048


def clean_link(value: str | None) -> str | None:
    """The link when it is an absolute http(s) URL a button can open, else None."""
    text = (value or "").strip()
    if not text or len(text) > MAX_LINK or any(ch.isspace() or ord(ch) < 32 for ch in text):
        return None
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    return text if parts.scheme in ("http", "https") and parts.hostname else None


def clean_price(value: str | None) -> Decimal | None:
    """The price when it is a plain non-negative number ("19.99", "1200"), else None."""
    text = (value or "").strip()
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None
    return amount if text and amount.is_finite() and 0 <= amount < Decimal(10) ** 9 else None


def price_text(labels: dict[str, str] | None) -> str | None:
    """"19.99 EUR" (the currency when the catalogue has one), or None without a valid price."""
    amount = clean_price((labels or {}).get(PRICE))
    if amount is None:
        return None
    shown = f"{amount:,.2f}" if amount != amount.to_integral_value() else f"{amount:,.0f}"
    currency = ((labels or {}).get(CURRENCY) or "").strip()[:8]
    return f"{shown} {currency}".strip()


def checked(items: Sequence[CatalogueItem]) -> tuple[list[CatalogueItem], list[tuple[str, str, str]]]:
    """``items`` with malformed link and price values blanked, and those values as (id, column, value)."""
    kept: list[CatalogueItem] = []
    problems: list[tuple[str, str, str]] = []
    for item in items:
        labels = dict(item.labels)
        for column, valid in ((LINK, clean_link(labels.get(LINK)) is not None), (PRICE, clean_price(labels.get(PRICE)) is not None)):
            if labels.get(column, "").strip() and not valid:
                problems.append((item.id, column, labels[column]))
                labels[column] = ""
        kept.append(dataclasses.replace(item, labels=labels) if labels != item.labels else item)
    return kept, problems
