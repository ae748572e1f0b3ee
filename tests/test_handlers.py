"""The handlers in-process: the real Application (``bot.app.build_application``) polls the stand-in Bot
API over real HTTP inside the test's event loop, with the session's demo index and recommender.

Start-up from the environment, shutdown by signal and the wire as a whole are covered by the
subprocess tests (``test_bot_e2e.py``, ``test_bot_floods.py``, ``test_bot_shutdown.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from bot import handlers
from bot.pages import MAX_RESULTS, PAGE
from standin_bot_api import FakeBotApi
from tests.served_bot import Serve, title


async def test_start_and_help_explain_the_bot(serve: Serve) -> None:
    async with serve() as served:
        served.api.user_sends_text("/start", chat_id=10)
        served.api.user_sends_text("/help", chat_id=10)
        assert await served.answers(10, 2) == [handlers.HELP, handlers.HELP]
        (commands,) = served.api.commands.values()  # set at start-up
        assert [c["command"] for c in commands] == ["start", "help", "similar"]


async def test_photo_gets_an_album_and_a_next_five_button(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "CHAT_ACTION_AFTER_S", 30.0)
    async with serve() as served:
        served.api.user_sends_photo(served.photo(10), chat_id=11)
        (album,) = await served.albums(11)
        assert len(album.items) == PAGE
        assert title(album.items[0]) == served.name(10)  # the catalogue photo finds itself first
        assert served.api.chat_actions(11) == []  # answered before a "sending a photo…" status was due
        prompt = await served.prompt(11)
        assert prompt["text"] == "Products 1-5 most similar to your photo. Want to see more?"
        (button,) = prompt["reply_markup"]["inline_keyboard"][0]
        # The library's opaque key to the cached NextPage, within Telegram's 64-byte limit.
        assert button["text"] == "Next 5 ▶" and 1 <= len(button["callback_data"].encode()) <= 64


async def test_a_slow_answer_shows_that_photos_are_on_their_way(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "CHAT_ACTION_AFTER_S", 0.2)
    async with serve() as served:
        served.api.fail_next("getFile", delay=1.0)  # Telegram slow to hand over the photo
        served.api.user_sends_photo(served.photo(12), chat_id=16)
        await served.albums(16)
        assert served.api.chat_actions(16) == ["upload_photo"]  # once, while the shopper waited
        sent = [call.method for call in served.api.calls if call.params.get("chat_id") in (16, "16")]
        assert sent.index("sendChatAction") < sent.index("sendMediaGroup")
        prompt = await served.prompt(16)
        served.api.fail_next("sendMediaGroup", delay=1.0)
        await served.press_next(prompt)
        await served.albums(16, 2)
        assert served.api.chat_actions(16) == ["upload_photo", "upload_photo"]  # a slow "Next 5" too


async def test_image_sent_as_a_file_is_answered_like_a_photo(serve: Serve) -> None:
    async with serve() as served:
        served.api.user_sends_document(served.photo(30), file_name="look.jpg", mime_type="image/jpeg", chat_id=12)
        (album,) = await served.albums(12)
        assert len(album.items) == PAGE and title(album.items[0]) == served.name(30)


async def test_next_five_shows_the_following_products(serve: Serve) -> None:
    async with serve() as served:
        served.api.user_sends_photo(served.photo(40), chat_id=13)
        first = (await served.albums(13))[0]
        prompt = await served.prompt(13)
        query = await served.press_next(prompt)
        second = (await served.albums(13, 2))[1]
        assert len(second.items) == PAGE
        assert not {i.caption for i in first.items} & {i.caption for i in second.items}
        await served.answered({query["callback_query"]["id"]})
        following = await served.prompt(13)
        assert following["text"] == "Products 6-10 most similar to your photo. Want to see more?"
        # The pressed button was taken off its message: only the new prompt carries one.
        assert [m["message_id"] for m in served.prompts(13)] == [following["message_id"]]


async def test_paging_stops_at_the_last_result_offered(serve: Serve) -> None:
    pages = MAX_RESULTS // PAGE
    async with serve() as served:
        served.api.user_sends_photo(served.photo(3), chat_id=14)
        for page in range(1, pages):
            text = f"Products {PAGE * (page - 1) + 1}-{PAGE * page} most similar to your photo. Want to see more?"
            await served.press_next(await served.prompt_saying(14, text))
        await served.albums(14, pages)
        served.api.user_sends_text("/help", chat_id=14)  # answered after the last page's job is done
        await served.until(lambda: handlers.HELP in served.texts(14))
        assert served.prompts(14) == []  # every button used up, and none under the last page
        assert len({i.caption for a in served.api.albums(14) for i in a.items}) == MAX_RESULTS


async def test_a_forgotten_button_says_the_search_expired(serve: Serve) -> None:
    async with serve() as served:
        served.api.user_sends_photo(served.photo(41), chat_id=15)
        await served.albums(15)
        prompt = await served.prompt(15)
        cache = served.application.bot.callback_data_cache
        assert cache is not None
        cache.clear_callback_data()  # as after a restart
        query = await served.press_next(prompt)
        assert (await served.answers(15, 2))[1] == handlers.EXPIRED
        await served.answered({query["callback_query"]["id"]})
        assert len(served.api.albums(15)) == 1


async def test_the_oldest_buttons_are_forgotten_first(serve: Serve) -> None:
    async with serve(max_buttons=2) as served:
        prompts = []
        for n in range(3):
            served.api.user_sends_photo(served.photo(50 + n), chat_id=16)
            await served.albums(16, n + 1)
            prompts.append(await served.prompt(16, n + 1))
        await served.press_next(prompts[0])
        assert (await served.answers(16, 4))[3] == handlers.EXPIRED
        await served.press_next(prompts[2])  # the newest is still remembered
        fourth = (await served.albums(16, 4))[3]
        assert len(fourth.items) == PAGE and served.api.albums(16)[2].items[0].caption != fourth.items[0].caption


async def test_forged_buttons_say_the_search_expired(serve: Serve) -> None:
    async with serve() as served:
        served.api.user_sends_photo(served.photo(42), chat_id=17)
        await served.albums(17)
        prompt = await served.prompt(17)
        real = prompt["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        forged = ["more:", "more:x:٣", "more:tok:999999", real[:32] + "0" * 32, real[::-1], "☃" * 20, "like:42"]
        queries = [served.api.user_presses_button(prompt, data, forged=True) for data in forged]
        await served.until(lambda: served.texts(17).count(handlers.EXPIRED) >= len(forged))
        assert handlers.FAILED not in served.texts(17)
        assert len(served.api.albums(17)) == 1  # no page for any of them
        await served.answered({q["callback_query"]["id"] for q in queries})


async def test_a_button_answer_that_fails_in_transit_is_retried(serve: Serve) -> None:
    async with serve() as served:
        served.api.user_sends_photo(served.photo(43), chat_id=18)
        await served.albums(18)
        served.api.fail_next("answerCallbackQuery", status=502)
        query = await served.press_next(await served.prompt(18))
        await served.albums(18, 2)
        await served.answered({query["callback_query"]["id"]})
        assert [c.status for c in served.api.calls_to("answerCallbackQuery")] == [502, 200]


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda api, chat: api.user_sends_text("hello there", chat_id=chat), handlers.TEXT_REPLY),
        (lambda api, chat: api.user_sends_sticker(chat_id=chat), handlers.SEND_A_PHOTO),
        (lambda api, chat: api.user_sends_voice(chat_id=chat), handlers.SEND_A_PHOTO),
        (lambda api, chat: api.user_sends_video(chat_id=chat), handlers.SEND_A_PHOTO),
        (lambda api, chat: api.user_sends_text("/unknown", chat_id=chat), handlers.HELP),
        (lambda api, chat: api.user_sends_document(b"%PDF-1.4 not a picture", "catalogue.pdf", "application/pdf", chat_id=chat), handlers.SEND_A_PHOTO),
        (lambda api, chat: api.user_sends_document(b"\xff\xd8\xff\xe0 broken jpeg", "broken.jpg", "image/jpeg", chat_id=chat), "couldn't use that image"),
        (
            lambda api, chat: api.user_sends_document(b"\x89PNG big", "huge.png", "image/png", chat_id=chat, declared_size=25 * 1024 * 1024),
            "too big",
        ),
    ],
    ids=["text", "sticker", "voice", "video", "unknown-command", "pdf", "corrupt-image", "over-20MB"],
)
async def test_anything_else_gets_a_helpful_answer(serve: Serve, send: Callable[[FakeBotApi, int], object], expected: str) -> None:
    async with serve() as served:
        send(served.api, 19)
        (answer,) = await served.answers(19)
        assert expected in answer
        assert not served.api.albums(19)


async def test_editing_an_earlier_photo_is_not_a_new_request(serve: Serve) -> None:
    async with serve() as served:
        photo = served.api.user_sends_photo(served.photo(20), chat_id=20)
        await served.prompt(20)
        served.api.user_edits(photo, caption="this one, in red?")
        served.api.user_sends_text("/help", chat_id=20)
        assert (await served.answers(20, 2))[1] == handlers.HELP  # the edit was handled before it: silently
        assert len(served.api.albums(20)) == 1


async def test_photos_over_the_rate_limit_get_one_notice(serve: Serve) -> None:
    async with serve(rate_limit_per_minute=2) as served:
        for n in range(2):
            served.api.user_sends_photo(served.photo(n), chat_id=21)
            await served.albums(21, n + 1)
        for n in range(3):  # over the limit: refused at once, with one notice for the three
            served.api.user_sends_photo(served.photo(n), chat_id=21)
        served.api.user_sends_text("/help", chat_id=21)
        await served.until(lambda: handlers.HELP in served.texts(21))
        notices = [t for t in served.texts(21) if "faster" in t]
        assert len(notices) == 1 and "try again in" in notices[0]
        assert len(served.api.albums(21)) == 2


async def test_chatter_is_rate_limited_too(serve: Serve) -> None:
    async with serve() as served:
        for n in range(handlers.CHATTER_PER_MINUTE + 5):
            served.api.user_sends_text(f"hello {n}", chat_id=22)
        served.api.user_sends_photo(served.photo(7), chat_id=22)  # photos have their own limit
        await served.albums(22)
        await served.prompt(22)
        texts = [t for t in served.texts(22) if not t.startswith("Products 1-5")]
        assert sum("faster" in t for t in texts) == 1
        assert texts.count(handlers.TEXT_REPLY) == handlers.CHATTER_PER_MINUTE


async def test_a_chat_under_long_flood_control_is_muted(serve: Serve) -> None:
    async with serve() as served:
        served.api.flood_control(23, messages=1, seconds=600, retry_after=120)  # longer than the retries wait
        served.api.user_sends_text("hello", chat_id=23)
        await served.answers(23)
        served.api.user_sends_text("again", chat_id=23)
        await served.until(lambda: served.api.flood_refusals.get(23) == 1)
        await served.until(lambda: served.runtime.queues.muted(23))
        muted = served.api.user_sends_text("and again", chat_id=23)
        await served.until(lambda: muted["update_id"] in served.api.delivered_at)
        served.api.user_sends_text("hello", chat_id=24)  # other chats are answered as usual
        await served.answers(24)
        assert served.api.flood_refusals[23] == 1  # nothing more was even tried


async def test_a_private_bot_answers_only_its_users(serve: Serve) -> None:
    async with serve(allowed_user_ids=frozenset({25})) as served:
        served.api.user_sends_photo(served.photo(5), chat_id=26)
        (refusal,) = await served.answers(26)
        assert refusal == handlers.PRIVATE and not served.api.albums(26)
        query = served.api.user_presses_button(served.api.sent_messages(26)[0], "anything", forged=True)
        await served.answered({query["callback_query"]["id"]})
        answer = [c for c in served.api.calls_to("answerCallbackQuery") if c.params["callback_query_id"] == query["callback_query"]["id"]]
        assert answer[0].params["text"] == handlers.PRIVATE_BUTTON
        served.api.user_sends_photo(served.photo(5), chat_id=25)
        assert len((await served.albums(25))[0].items) == PAGE


async def test_an_unexpected_failure_is_logged_and_the_shopper_told(
    serve: Serve, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serve() as served:

        async def broken_search(*args: object) -> tuple[object, list[object]]:
            raise RuntimeError("a bug")

        monkeypatch.setattr(served.runtime.inference, "embed_and_page", broken_search)
        with caplog.at_level(logging.ERROR, logger="bot.handlers"):
            served.api.user_sends_photo(served.photo(6), chat_id=27)
            (answer,) = await served.answers(27)
        assert answer == handlers.FAILED
        assert "Unhandled error (update" in caplog.text and "a bug" in caplog.text
        served.api.user_sends_text("hi", chat_id=27)  # the chat goes on
        assert (await served.answers(27, 2))[1] == handlers.TEXT_REPLY
