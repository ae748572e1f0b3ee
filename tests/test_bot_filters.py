"""Shoppers narrow an answer: caption words and the filter buttons under an album (bot/shopper_filters.py),
through the real Application and the stand-in Bot API, on the session's demo index.

The demo catalogue: Tshirts and Trousers are Men's, Dresses and Handbags Women's, Casual Shoes,
Watches and Caps Unisex; every kind comes in every colour.
"""

from __future__ import annotations

from typing import Any

from bot import handlers
from bot.shopper_filters import ACTIVE, CLEAR
from recommender.recommender import EXACT_MATCH_LINE
from standin_bot_api import AlbumItem
from tests.served_bot import Serve, Served

#: product 0 of the demo catalogue is a Tshirt (Men)
TSHIRT = 0


def title(item: AlbumItem) -> str:
    """The product name: the caption's first line under the filter line and an "Exact match" line."""
    lines = [line for line in (item.caption or "").split("\n") if not line.startswith("🔎 ") and line != EXACT_MATCH_LINE]
    return lines[0]


def labels(served: Served) -> dict[str, dict[str, str]]:
    """Product display name → its labels."""
    return {item.labels["productDisplayName"]: item.labels for item in served.demo_index.catalogue.items}


def buttons(message: dict) -> dict[str, str]:
    """Button text → callback data of a message's keyboard (URL buttons left out)."""
    rows = (message.get("reply_markup") or {}).get("inline_keyboard", [])
    return {button["text"]: button["callback_data"] for row in rows for button in row if "callback_data" in button}


async def next_prompt(served: Served, chat: int, after: dict[str, Any] | None = None) -> dict[str, Any]:
    """The first message with buttons in ``chat`` sent after the message ``after``."""
    since = after["message_id"] if after else 0

    def found() -> list[dict[str, Any]]:
        return [m for m in served.api.sent_messages(chat) if m.get("reply_markup") and m["message_id"] > since]

    await served.until(found)
    return found()[0]


async def test_caption_words_narrow_the_album_and_the_caption_says_so(serve: Serve) -> None:
    async with serve() as served:
        assert served.demo_index.catalogue.items[TSHIRT].labels["articleType"] == "Tshirts"
        served.api.user_sends_photo(served.photo(TSHIRT), chat_id=31, caption="for women please")
        (album,) = await served.albums(31)
        assert len(album.items) == 5
        known = labels(served)
        assert all(known[title(item)]["gender"] == "Women" for item in album.items)
        assert (album.items[0].caption or "").startswith("🔎 Women\n")
        prompt = await next_prompt(served, 31)
        assert prompt["text"] == "Products 1-5 most similar to your photo (Women). Want to see more?"
        assert f"{ACTIVE}Women" in buttons(prompt) and CLEAR in buttons(prompt)


async def test_gender_button_filters_next_five_keeps_it_and_a_second_press_clears_it(serve: Serve) -> None:
    async with serve() as served:
        served.api.user_sends_photo(served.photo(TSHIRT), chat_id=32)
        await served.albums(32)
        prompt = await next_prompt(served, 32)
        assert {"Men", "Women", "Unisex", "Only Tshirts"} <= set(buttons(prompt))
        served.api.user_presses_button(prompt, buttons(prompt)["Unisex"])
        albums = await served.albums(32, 2)
        known = labels(served)
        assert all(known[title(item)]["gender"] == "Unisex" for item in albums[1].items)
        filtered = await next_prompt(served, 32, prompt)
        assert "(Unisex)" in filtered["text"]
        served.api.user_presses_button(filtered, buttons(filtered)["Next 5 ▶"])
        albums = await served.albums(32, 3)
        assert all(known[title(item)]["gender"] == "Unisex" for item in albums[2].items)
        assert not {title(i) for i in albums[1].items} & {title(i) for i in albums[2].items}
        following = await next_prompt(served, 32, filtered)
        assert "Products 6-10" in following["text"] and "(Unisex)" in following["text"]
        served.api.user_presses_button(following, buttons(following)[f"{ACTIVE}Unisex"])
        albums = await served.albums(32, 4)
        assert [title(i) for i in albums[3].items] == [title(i) for i in albums[0].items]  # back to the unfiltered answer


async def test_a_filter_that_leaves_nothing_says_so_and_offers_to_clear_it(serve: Serve) -> None:
    async with serve() as served:
        # Caps are Unisex only: "women caps" passes no product.
        served.api.user_sends_photo(served.photo(TSHIRT), chat_id=33, caption="women caps")
        (text,) = await served.answers(33)
        assert text == handlers.NO_MATCH.format(filter="Women · Caps")
        prompt = await next_prompt(served, 33)
        served.api.user_presses_button(prompt, buttons(prompt)[CLEAR])
        (album,) = await served.albums(33)
        assert title(album.items[0]) == served.name(TSHIRT)
