"""Shop links and prices: optional catalogue columns, checked at build time, shown to shoppers by the real bot."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest

from recommender import build_index, load_catalogue, load_index
from recommender.catalogue import CatalogueItem
from recommender.shop_links import checked, clean_link, clean_price, price_text
from standin_bot_api import FakeBotApi
from tests.build_helpers import subset
from tests.test_bot_e2e import ANSWER_TIMEOUT, BotProcess, product_lines, wait_albums


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("https://shop.example/p/1?c=red", True), ("http://shop.example", True), ("  https://shop.example/x  ", True),
        ("javascript:alert(1)", False), ("ftp://shop.example/p", False), ("shop.example/p/1", False), ("https://", False),
        ("https://shop.example/a b", False), ("", False), ("https://" + "a" * 2100 + ".example", False),
    ],
)  # fmt: skip
def test_only_absolute_http_links_are_kept(value: str, kept: bool) -> None:
    assert (clean_link(value) is not None) == kept


@pytest.mark.parametrize(
    ("value", "expected"),
    [("19.99", Decimal("19.99")), ("1200", Decimal("1200")), (" 0 ", Decimal("0")), ("-3", None), ("cheap", None), ("NaN", None), ("1e12", None), ("", None)],
)
def test_prices_are_plain_non_negative_numbers(value: str, expected: Decimal | None) -> None:
    assert clean_price(value) == expected


def test_a_price_is_shown_with_its_currency() -> None:
    assert price_text({"price": "19.9", "currency": "EUR"}) == "19.90 EUR"
    assert price_text({"price": "1200"}) == "1,200"
    assert price_text({"price": "free"}) is None and price_text({}) is None


def test_malformed_values_are_blanked_and_listed() -> None:
    items = [
        CatalogueItem("1", "1.png", {"link": "https://shop.example/1", "price": "5"}),
        CatalogueItem("2", "2.png", {"link": "javascript:alert(1)", "price": "cheap", "currency": "EUR"}),
        CatalogueItem("3", "3.png", {"productDisplayName": "no shop columns"}),
    ]
    kept, problems = checked(items)
    assert problems == [("2", "link", "javascript:alert(1)"), ("2", "price", "cheap")]
    assert kept[0] is items[0] and kept[2] is items[2]  # nothing to change: the same item
    assert kept[1].labels == {"link": "", "price": "", "currency": "EUR"}


def shop_catalogue(demo_catalogue, root: Path):
    """The demo catalogue's first 20 products with link, price and currency columns; product 1003's link and
    price are malformed, 1004's link too."""
    rows = list(csv.DictReader(demo_catalogue.styles_path.open(encoding="utf-8")))[:20]
    for row in rows:
        row.update(link=f"https://shop.example/p/{row['id']}", price="19.99", currency="EUR")
    rows[2].update(link="javascript:alert(1)", price="cheap")
    rows[3].update(link="ftp://shop.example/p/1004")
    styles = root / "styles.csv"
    with styles.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    catalogue = load_catalogue(demo_catalogue.images_dir, styles)
    return subset(catalogue, [item for item in catalogue.items if item.id in {row["id"] for row in rows}])


def test_the_bot_shows_prices_and_opens_product_pages(demo_catalogue, mobilenet_random, tmp_path: Path) -> None:
    """The build lists and drops the malformed values; each caption shows the price, and the prompt under
    the album has a button per product with a valid link (numbered as the album), none for the others."""
    catalogue = shop_catalogue(demo_catalogue, tmp_path)
    index = tmp_path / "index"
    report = build_index(catalogue, index, mobilenet_random, runtime="onnx", precision="fp32", head="none", refine="none", exact_items=False)
    assert report.shop_problems == [("1003", "link", "javascript:alert(1)"), ("1003", "price", "cheap"), ("1004", "link", "ftp://shop.example/p/1004")]
    stored = {product["id"]: product for product in load_index(index).products}
    assert stored["1003"]["link"] == "" and stored["1003"]["price"] == "" and stored["1005"]["link"] == "https://shop.example/p/1005"
    by_name = {item.labels["productDisplayName"]: item.id for item in catalogue.items}

    with FakeBotApi() as api:
        bot = BotProcess(api, tmp_path / "data", tmp_path / "bot.log", INDEX_DIR=str(index))
        try:
            bot.wait_ready()
            api.user_sends_photo((catalogue.images_dir / catalogue.items[2].image).read_bytes(), chat_id=3300)  # 1003 itself
            album = wait_albums(api, 3300)[0]
            prompt = api.wait_for(lambda s: [m for m in s.sent_messages(3300) if m.get("reply_markup")], timeout=ANSWER_TIMEOUT)[0]
        finally:
            assert bot.stop() == 0
    shown = [by_name[product_lines(item)[0]] for item in album.items]
    assert "1003" in shown  # the photo's own product, with its malformed values
    for item, product in zip(album.items, shown):
        assert ("19.99 EUR" in (item.caption or "")) == (product != "1003")
    buttons = [button for row in prompt["reply_markup"]["inline_keyboard"] for button in row if "url" in button]
    expected = [(str(number), f"https://shop.example/p/{product}") for number, product in enumerate(shown, 1) if product not in ("1003", "1004")]
    assert [(button["text"], button["url"]) for button in buttons] == expected
    assert prompt["reply_markup"]["inline_keyboard"][0][0]["text"].startswith("Next")  # Next 5 stays first
