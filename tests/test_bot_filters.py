"""Shoppers narrow an answer: caption words and the filter buttons under an album (bot/shopper_filters.py),
through the real Application and the stand-in Bot API, on the session's demo index.

The demo catalogue: Tshirts and Trousers are Men's, Dresses and Handbags Women's, Casual Shoes,
Watches and Caps Unisex; every kind comes in every colour.
"""

from __future__ import annotations

import copy
import dataclasses
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


def keyboard(message: dict) -> list[list[dict]]:
    return (message.get("reply_markup") or {}).get("inline_keyboard", [])


def filtered_count(served: Served, source: str) -> float:
    return served.runtime.metrics.registry.get_sample_value("lookalike_filtered_searches_total", {"source": source}) or 0.0


async def test_only_kind_shows_the_top_matchs_article_type_and_a_second_press_removes_it(serve: Serve) -> None:
    async with serve() as served:
        served.api.user_sends_photo(served.photo(TSHIRT), chat_id=34)
        (first,) = await served.albums(34)
        prompt = await next_prompt(served, 34)
        assert "Only Tshirts" in buttons(prompt)
        served.api.user_presses_button(prompt, buttons(prompt)["Only Tshirts"])
        albums = await served.albums(34, 2)
        known = labels(served)
        only = [title(item) for item in albums[1].items]
        assert len(only) == 5 and all(known[name]["articleType"] == "Tshirts" for name in only)
        assert (albums[1].items[0].caption or "").startswith("🔎 Tshirts\n")
        # the unfiltered answer's T-shirts come first, in its order: a filter never reorders
        shown_tshirts = [title(item) for item in first.items if known[title(item)]["articleType"] == "Tshirts"]
        assert only[: len(shown_tshirts)] == shown_tshirts
        narrowed = await next_prompt(served, 34, prompt)
        assert narrowed["text"] == "Products 1-5 most similar to your photo (Tshirts). Want to see more?"
        assert {"Next 5 ▶", f"{ACTIVE}Only Tshirts", CLEAR} <= set(buttons(narrowed))
        # the pressed prompt's buttons are gone (the demo catalogue has no product links to keep)
        old = next(m for m in served.api.sent_messages(34) if m["message_id"] == prompt["message_id"])
        assert not old.get("reply_markup")
        served.api.user_presses_button(narrowed, buttons(narrowed)[f"{ACTIVE}Only Tshirts"])
        albums = await served.albums(34, 3)
        assert [title(item) for item in albums[2].items] == [title(item) for item in first.items]
        assert not any((item.caption or "").startswith("🔎") for item in albums[2].items)
        cleared = await next_prompt(served, 34, narrowed)
        assert cleared["text"] == "Products 1-5 most similar to your photo. Want to see more?"
        assert CLEAR not in buttons(cleared) and "Only Tshirts" in buttons(cleared)


async def test_a_colour_word_filters_by_base_colour_to_the_last_page(serve: Serve) -> None:
    async with serve() as served:
        served.api.user_sends_photo(served.photo(TSHIRT), chat_id=35, caption="Something like this in RED?")
        (album,) = await served.albums(35)
        known = labels(served)
        assert all(known[title(item)]["baseColour"] == "Red" for item in album.items)
        assert (album.items[0].caption or "").startswith("🔎 Red\n")
        assert not any((item.caption or "").startswith("🔎") for item in album.items[1:])  # only the first caption says it
        reds = sum(1 for item in served.demo_index.catalogue.items if item.labels["baseColour"] == "Red")
        assert reds == 14  # 7 kinds x 2 variants: pages of 5, 5 and 4
        prompt = await next_prompt(served, 35)
        seen = [title(item) for item in album.items]
        for page in (2, 3):
            served.api.user_presses_button(prompt, buttons(prompt)["Next 5 ▶"])
            following = (await served.albums(35, page))[page - 1]
            assert all(known[title(item)]["baseColour"] == "Red" for item in following.items)
            seen += [title(item) for item in following.items]
            prompt = await next_prompt(served, 35, prompt)
        assert len(seen) == len(set(seen)) == reds
        assert prompt["text"] == "Products 11-14 most similar to your photo (Red)."
        assert "Next 5 ▶" not in buttons(prompt) and f"{ACTIVE}Only Tshirts" not in buttons(prompt)
        assert {"Only Tshirts", CLEAR} <= set(buttons(prompt))  # the filter buttons stay on the last page


async def test_caption_words_and_a_gender_button_combine(serve: Serve) -> None:
    async with serve() as served:
        served.api.user_sends_photo(served.photo(TSHIRT), chat_id=36, caption="red")
        await served.albums(36)
        prompt = await next_prompt(served, 36)
        assert prompt["text"].endswith("(Red). Want to see more?")
        served.api.user_presses_button(prompt, buttons(prompt)["Women"])
        albums = await served.albums(36, 2)
        known = labels(served)
        both = [known[title(item)] for item in albums[1].items]
        # red AND women: the demo's red dresses and handbags, 2 variants each
        assert len(both) == 4 and all(item["baseColour"] == "Red" and item["gender"] == "Women" for item in both)
        assert (albums[1].items[0].caption or "").startswith("🔎 Red · Women\n")
        combined = await next_prompt(served, 36, prompt)
        assert combined["text"] == "Products 1-4 most similar to your photo (Red · Women)."
        assert "Next 5 ▶" not in buttons(combined) and {f"{ACTIVE}Women", CLEAR} <= set(buttons(combined))
        # another gender replaces Women and keeps Red
        served.api.user_presses_button(combined, buttons(combined)["Unisex"])
        albums = await served.albums(36, 3)
        assert all(known[title(item)]["baseColour"] == "Red" and known[title(item)]["gender"] == "Unisex" for item in albums[2].items)
        assert (albums[2].items[0].caption or "").startswith("🔎 Red · Unisex\n")


async def test_in_a_group_similar_with_words_replying_to_a_photo_narrows_the_answer(serve: Serve) -> None:
    group, member = -3401, 3402
    async with serve() as served:
        api = served.api
        plain = api.user_sends_photo(served.photo(TSHIRT), chat_id=group, user_id=member)  # not for the bot
        api.user_sends_text("/similar women", chat_id=group, user_id=member, reply_to=plain)
        (album,) = await served.albums(group)
        known = labels(served)
        assert all(known[title(item)]["gender"] == "Women" for item in album.items)
        assert (album.items[0].caption or "").startswith("🔎 Women\n")
        assert album.messages[0]["reply_to_message"]["message_id"] == plain["message"]["message_id"]  # it answers that photo
        prompt = await next_prompt(served, group)
        assert prompt["text"].endswith("(Women). Want to see more?")
        # a member presses a button in the group: the same photo, another filter
        api.user_presses_button(prompt, buttons(prompt)["Unisex"], user_id=member)
        albums = await served.albums(group, 2)
        assert all(known[title(item)]["gender"] == "Unisex" for item in albums[1].items)
        # a photo that mentions the bot: the mention is not a filter word, the rest of the caption is
        api.user_sends_photo(served.photo(TSHIRT), chat_id=group, user_id=member, caption="@test_fashion_bot red please")
        albums = await served.albums(group, 3)
        assert all(known[title(item)]["baseColour"] == "Red" for item in albums[2].items)
        assert (albums[2].items[0].caption or "").startswith("🔎 Red\n")
        assert len(api.albums(group)) == 3  # the first photo alone got nothing


def with_links(recommender: Any) -> Any:
    """A copy of the session's demo recommender whose catalogue has a product page per product (nothing rebuilt;
    the session's recommender itself is left as it is)."""
    index = recommender.index
    products = [{**product, "link": f"https://shop.example/p/{product['id']}"} for product in index.products]
    linked = copy.copy(recommender)
    linked.index = dataclasses.replace(index, products=products, columns=[*index.columns, "link"])
    linked._masks, linked._words = {}, None
    return linked


async def test_a_filter_press_leaves_only_the_product_links_on_the_old_prompt(serve: Serve, demo_recommender) -> None:
    async with serve() as served:
        served.runtime.inference.swap(with_links(demo_recommender))  # as a reload would serve a catalogue with links
        served.api.user_sends_photo(served.photo(TSHIRT), chat_id=37)
        (album,) = await served.albums(37)
        prompt = await next_prompt(served, 37)
        links = keyboard(prompt)[-1]
        assert [button["text"] for button in links] == ["1", "2", "3", "4", "5"] and all("url" in button for button in links)
        served.api.user_presses_button(prompt, buttons(prompt)["Women"])
        albums = await served.albums(37, 2)
        old = next(m for m in served.api.sent_messages(37) if m["message_id"] == prompt["message_id"])
        assert keyboard(old) == [links]  # the album above it stays, and so do its products' pages
        women = await next_prompt(served, 37, prompt)
        by_name = {item.labels["productDisplayName"]: item.id for item in served.demo_index.catalogue.items}
        expected = [f"https://shop.example/p/{by_name[title(item)]}" for item in albums[1].items]
        assert [button["url"] for button in keyboard(women)[-1]] == expected


async def test_filtered_searches_and_filters_that_leave_nothing_are_counted(serve: Serve) -> None:
    async with serve() as served:
        registry = served.runtime.metrics.registry

        def no_match() -> float:
            return registry.get_sample_value("lookalike_refusals_total", {"reason": "no_match"}) or 0.0

        served.api.user_sends_photo(served.photo(TSHIRT), chat_id=38, caption="so nice!")  # no label word: not filtered
        await served.albums(38)
        prompt = await next_prompt(served, 38)
        assert (filtered_count(served, "caption"), filtered_count(served, "button")) == (0, 0)
        served.api.user_presses_button(prompt, buttons(prompt)["Next 5 ▶"])  # a page, not a filter
        await served.albums(38, 2)
        following = await next_prompt(served, 38, prompt)
        served.api.user_presses_button(following, buttons(following)["Women"])
        await served.albums(38, 3)
        await served.until(lambda: filtered_count(served, "button") == 1)
        served.api.user_sends_photo(served.photo(TSHIRT), chat_id=39, caption="women")
        await served.albums(39)
        await served.until(lambda: filtered_count(served, "caption") == 1)
        served.api.user_sends_photo(served.photo(TSHIRT), chat_id=39, caption="women caps")  # nothing passes
        await served.answers(39, 2)
        await served.until(lambda: no_match() == 1)
        assert filtered_count(served, "caption") == 2 and filtered_count(served, "button") == 1
        assert registry.get_sample_value("lookalike_photos_total", {"outcome": "refused"}) == 1
        assert registry.get_sample_value("lookalike_photos_total", {"outcome": "album"}) == 2


async def test_a_filter_button_from_before_a_reload_says_the_search_expired(serve: Serve, demo_recommender) -> None:
    async with serve() as served:
        served.api.user_sends_photo(served.photo(TSHIRT), chat_id=40)
        await served.albums(40)
        prompt = await next_prompt(served, 40)
        served.runtime.inference.swap(demo_recommender)  # a reload: the button's rows may be other products now
        served.api.user_presses_button(prompt, buttons(prompt)["Women"])
        await served.until(lambda: handlers.EXPIRED in served.texts(40))
        assert len(served.api.albums(40)) == 1
