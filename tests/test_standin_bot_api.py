"""Drive FakeBotApi with PTB's real ``telegram.Bot`` to prove it speaks PTB's wire protocol."""

from __future__ import annotations

import asyncio
import datetime as dtm
import io
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from PIL import Image
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputMediaPhoto, Message, ReplyParameters, Update
from telegram.error import BadRequest, Conflict, InvalidToken, NetworkError, RetryAfter, TimedOut
from telegram.ext import Application, CommandHandler, ContextTypes

from standin_bot_api import FakeBotApi

CHAT = 1001


def message_of(update: Update) -> Message:
    assert update.message is not None
    return update.message


def jpeg(width: int = 640, height: int = 480, color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def server() -> Iterator[FakeBotApi]:
    with FakeBotApi() as srv:
        yield srv


@pytest.fixture
async def bot(server: FakeBotApi) -> AsyncIterator[Bot]:
    async with Bot(server.token, base_url=server.base_url,
                   base_file_url=server.base_file_url) as b:
        yield b


async def test_get_me(bot: Bot, server: FakeBotApi) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (4242, "test_fashion_bot", True)
    assert server.calls_to("getMe")


async def test_long_poll_photo_update_and_download(bot: Bot, server: FakeBotApi) -> None:
    original = jpeg(1280, 960)
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.3)
    assert not poll.done()  # really waiting
    server.user_sends_photo(original, chat_id=CHAT, caption="like this")
    updates = await poll
    assert 0.25 < time.monotonic() - started < 3
    assert len(updates) == 1
    msg = updates[0].message
    assert msg is not None and msg.chat.id == CHAT and msg.caption == "like this"
    assert [max(p.width, p.height) for p in msg.photo] == [90, 320, 1280]
    assert len({p.file_id for p in msg.photo}) == 3
    data = await (await bot.get_file(msg.photo[-1].file_id)).download_as_bytearray()
    assert bytes(data) == original
    assert server.downloads == [msg.photo[-1].file_id]
    # offset confirms; nothing left, and timeout=0 answers at once
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=0) == ()
    assert server.pending_updates() == []


async def test_updates_limit_and_monotonic_ids(bot: Bot, server: FakeBotApi) -> None:
    for i in range(3):
        server.user_sends_text(f"hello {i}")
    first = await bot.get_updates(limit=2)
    assert [message_of(u).text for u in first] == ["hello 0", "hello 1"]
    rest = await bot.get_updates(offset=first[-1].update_id + 1)
    assert [message_of(u).text for u in rest] == ["hello 2"]
    assert rest[0].update_id == first[-1].update_id + 1


async def test_media_group_uploads_then_file_id(bot: Bot, server: FakeBotApi) -> None:
    server.user_sends_text("/start")
    media = [InputMediaPhoto(jpeg(color=c), caption=f"Item {i}")
             for i, c in enumerate(["red", "green", "blue", "white", "black"])]
    messages = await bot.send_media_group(CHAT, media)
    assert len(messages) == 5
    assert len({m.media_group_id for m in messages}) == 1
    assert [m.caption for m in messages] == [f"Item {i}" for i in range(5)]
    assert all(m.photo[-1].width == 640 for m in messages)
    (album,) = server.albums(CHAT)
    assert [i.source for i in album.items] == ["upload"] * 5
    assert len(server.calls_to("sendMediaGroup")[0].files) == 5

    reuse = [InputMediaPhoto(messages[0].photo[-1].file_id, caption="again"),
             InputMediaPhoto(jpeg(color="yellow"))]
    again = await bot.send_media_group(CHAT, reuse)
    assert again[0].photo[-1].file_id == messages[0].photo[-1].file_id
    assert [i.source for i in server.albums(CHAT)[1].items] == ["file_id", "upload"]


@pytest.mark.parametrize("count", [1, 11])
async def test_media_group_size_limits(bot: Bot, server: FakeBotApi, count: int) -> None:
    server.user_sends_text("hi")
    with pytest.raises(BadRequest):
        await bot.send_media_group(CHAT, [InputMediaPhoto(jpeg(64, 64)) for _ in range(count)])
    assert server.albums() == []


async def test_media_group_rejects_bad_media(bot: Bot, server: FakeBotApi) -> None:
    server.user_sends_text("hi")
    ok = InputMediaPhoto(jpeg(64, 64))
    with pytest.raises(BadRequest, match="(?i)caption is too long"):
        await bot.send_media_group(CHAT, [InputMediaPhoto(jpeg(64, 64), caption="x" * 1025), ok])
    with pytest.raises(BadRequest, match="(?i)image_process_failed"):
        await bot.send_media_group(CHAT, [InputMediaPhoto(b"not an image"), ok])
    with pytest.raises(BadRequest, match="(?i)wrong file identifier"):
        await bot.send_media_group(CHAT, [InputMediaPhoto("AgACunknown"), ok])
    with pytest.raises(BadRequest, match="(?i)HTTP URL"):
        await bot.send_media_group(CHAT, [InputMediaPhoto("https://example.com/a.jpg"), ok])
    with pytest.raises(BadRequest, match="(?i)photo_invalid_dimensions"):
        await bot.send_media_group(CHAT, [InputMediaPhoto(b"\xff" * (10 * 1024 * 1024 + 1)), ok])
    with pytest.raises(BadRequest, match="(?i)photo_invalid_dimensions"):
        await bot.send_media_group(CHAT, [InputMediaPhoto(jpeg(2100, 100)), ok])
    with pytest.raises(BadRequest, match="(?i)chat not found"):
        await bot.send_media_group(999, [ok, ok])
    assert server.albums() == []
    longest = InputMediaPhoto(jpeg(64, 64), caption="y" * 1024)
    assert await bot.send_media_group(CHAT, [ok, longest])


def test_user_photo_must_be_an_image(server: FakeBotApi) -> None:
    with pytest.raises(ValueError):
        server.user_sends_photo(b"garbage")


async def test_send_photo_and_message(bot: Bot, server: FakeBotApi) -> None:
    server.user_sends_text("hi")
    sent = await bot.send_photo(CHAT, jpeg(), caption="look")
    assert sent.photo[-1].width == 640 and sent.caption == "look"
    again = await bot.send_photo(CHAT, sent.photo[-1].file_id)
    assert again.photo[-1].file_id == sent.photo[-1].file_id
    text = await bot.send_message(CHAT, "<b>Top</b> match &amp; more", parse_mode="HTML")
    assert text.message_id == again.message_id + 1
    with pytest.raises(BadRequest, match="(?i)can't parse entities"):
        await bot.send_message(CHAT, "price < 5", parse_mode="HTML")
    with pytest.raises(BadRequest, match="(?i)reserved"):
        await bot.send_message(CHAT, "Total: 5.00", parse_mode="MarkdownV2")
    await bot.send_chat_action(CHAT, "upload_photo")
    assert server.chat_actions(CHAT) == ["upload_photo"]
    assert [m.get("text") for m in server.sent_messages(CHAT)][-1] == "<b>Top</b> match &amp; more"


async def test_retry_after_injection(bot: Bot, server: FakeBotApi,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    server.user_sends_text("hi")
    server.fail_next("sendMessage", retry_after=7)
    with pytest.raises(RetryAfter) as info:
        await bot.send_message(CHAT, "hello")
    retry_after = info.value.retry_after  # timedelta with PTB_TIMEDELTA, else int (deprecated)
    assert (retry_after.total_seconds() if isinstance(retry_after, dtm.timedelta) else retry_after) == 7
    assert server.injected_count("sendmessage") == 1
    assert (await bot.send_message(CHAT, "hello")).text == "hello"
    assert [c.status for c in server.calls_to("sendMessage")] == [429, 200]


async def test_server_error_and_delay_injection(bot: Bot, server: FakeBotApi) -> None:
    server.fail_next("getMe", status=500)
    with pytest.raises(NetworkError, match="Internal Server Error"):
        await bot.get_me()
    server.fail_next("getMe", delay=1.0)
    with pytest.raises(TimedOut):
        await bot.get_me(read_timeout=0.2)
    assert server.injected_count("getMe") == 2
    assert (await bot.get_me()).id == 4242


async def test_wrong_token(server: FakeBotApi) -> None:
    with pytest.raises(InvalidToken):
        async with Bot("1:wrong", base_url=server.base_url, base_file_url=server.base_file_url):
            pass


async def test_get_file_too_big(bot: Bot, server: FakeBotApi) -> None:
    update = server.user_sends_document(b"tiny", "huge.zip", "application/zip",
                                        declared_size=25 * 1024 * 1024)
    with pytest.raises(BadRequest, match="(?i)file is too big"):
        await bot.get_file(update["message"]["document"]["file_id"])


async def test_callback_query_round_trip(bot: Bot, server: FakeBotApi) -> None:
    server.user_sends_text("hi")
    await bot.get_updates(offset=-1)
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("More", callback_data="more:1")]])
    sent = await bot.send_message(CHAT, "Results", reply_markup=markup)
    with pytest.raises(ValueError):
        server.user_presses_button(sent, "nope")
    server.user_presses_button(sent, "more:1")
    (update,) = await bot.get_updates(offset=-1, timeout=1)
    query = update.callback_query
    assert query is not None and query.data == "more:1" and query.message is not None
    assert query.message.message_id == sent.message_id and query.from_user.id == CHAT
    assert await bot.answer_callback_query(query.id, text="Loading")
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_callback_query(query.id)
    edited = await bot.edit_message_text("Results (page 2)", CHAT, sent.message_id,
                                         reply_markup=markup)
    assert isinstance(edited, Message) and edited.text == "Results (page 2)"
    with pytest.raises(BadRequest, match="(?i)not modified"):
        await bot.edit_message_text("Results (page 2)", CHAT, sent.message_id, reply_markup=markup)
    await bot.edit_message_reply_markup(CHAT, sent.message_id)
    assert "reply_markup" not in server.sent_messages(CHAT)[-1]
    assert await bot.delete_message(CHAT, sent.message_id)
    with pytest.raises(BadRequest, match="(?i)not found"):
        await bot.delete_message(CHAT, sent.message_id)


async def test_simulated_message_kinds(bot: Bot, server: FakeBotApi) -> None:
    server.user_sends_text("/start@test_fashion_bot now")
    server.user_sends_sticker()
    server.user_sends_voice()
    server.user_sends_video()
    server.user_sends_album([jpeg(100, 100), jpeg(200, 100)], caption="two")
    ups = await bot.get_updates()
    cmd, sticker, voice, video, a1, a2 = (message_of(u) for u in ups)
    assert cmd.entities[0].type == "bot_command" and cmd.entities[0].length == 23
    assert sticker.sticker and voice.voice and video.video
    assert a1.media_group_id == a2.media_group_id and a1.caption == "two" and a2.caption is None
    assert [u.update_id for u in ups] == sorted(u.update_id for u in ups)


async def test_raw_wire_formats(server: FakeBotApi) -> None:
    server.user_sends_text("hi")
    api = f"{server.base_url}{server.token}"
    async with httpx.AsyncClient() as client:
        got = (await client.get(f"{api}/GETME")).json()
        assert got["ok"] and got["result"]["id"] == 4242
        markup = json.dumps({"inline_keyboard": [[{"text": "a", "callback_data": "a"}]]})
        query = urllib.parse.urlencode({"chat_id": CHAT, "text": "123", "reply_markup": markup})
        got = (await client.get(f"{api}/sendMessage?{query}")).json()
        assert got["result"]["text"] == "123"
        assert got["result"]["reply_markup"]["inline_keyboard"][0][0]["text"] == "a"
        got = (await client.post(f"{api}/sendMessage", json={"chat_id": CHAT, "text": "j"})).json()
        assert got["result"]["chat"]["id"] == CHAT
        missing = await client.post(f"{api}/noSuchMethod")
        assert missing.status_code == 404
        assert missing.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        bad = await client.get(f"{server.base_url}1:bad/getMe")
        assert bad.status_code == 401 and bad.json()["description"] == "Unauthorized"
    assert server.calls_to("sendMessage")[0].params["chat_id"] == CHAT


async def test_webhook_commands_and_allowed_updates(bot: Bot, server: FakeBotApi) -> None:
    server.user_sends_text("old")
    assert await bot.delete_webhook(drop_pending_updates=True)
    assert server.pending_updates() == []
    commands = [("start", "Begin"), ("help", "How it works")]
    assert await bot.set_my_commands(commands)
    assert [(c.command, c.description) for c in await bot.get_my_commands()] == commands
    assert await bot.set_webhook("https://example.com/hook")
    with pytest.raises(Conflict):
        await bot.get_updates()
    await bot.delete_webhook()
    server.user_sends_text("hi")
    sent = await bot.send_message(CHAT, "pick", reply_markup=InlineKeyboardMarkup(
        [[InlineKeyboardButton("A", callback_data="a")]]))
    server.user_presses_button(sent, "a")
    (only,) = await bot.get_updates(allowed_updates=["callback_query"])
    assert only.callback_query is not None and [u["update_id"] for u in server.pending_updates()] == [only.update_id]


async def test_wait_helpers(server: FakeBotApi) -> None:
    with pytest.raises(TimeoutError, match="calls per method"):
        await server.await_for(lambda s: s.albums(), timeout=0.1)
    with pytest.raises(TimeoutError):
        server.wait_for(lambda s: s.sent_messages(CHAT), timeout=0.1)


async def test_real_application_polls_and_replies(server: FakeBotApi) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await message_of(update).reply_text("Send me a photo")

    app = (Application.builder().token(server.token).base_url(server.base_url)
           .base_file_url(server.base_file_url).build())
    app.add_handler(CommandHandler("start", start))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=1)
        server.user_sends_text("/start")
        messages = await server.await_for(lambda s: s.sent_messages(CHAT), timeout=5)
        await app.updater.stop()
        await app.stop()
    assert messages[0]["text"] == "Send me a photo"


async def test_simultaneous_updates_arrive_together_with_delivery_times(bot: Bot, server: FakeBotApi) -> None:
    with server.simultaneously():
        sent = [server.user_sends_text(f"hi {n}", chat_id=1000 + n) for n in range(3)]
        assert await bot.get_updates(timeout=0) == ()  # held back until the block ends
    updates = await bot.get_updates(timeout=1)
    assert [u.update_id for u in updates] == [u["update_id"] for u in sent]
    delivered = {server.delivered_at[u["update_id"]] for u in sent}
    assert len(delivered) == 1 and delivered.pop() <= time.perf_counter()


async def test_album_items_telegram_cannot_process_are_named_by_position(bot: Bot, server: FakeBotApi) -> None:
    server.user_sends_text("hi")
    ok, banner = InputMediaPhoto(jpeg(64, 64)), InputMediaPhoto(jpeg(2100, 100))
    damaged = InputMediaPhoto(jpeg(640, 480)[:300])
    with pytest.raises(BadRequest, match='(?i)failed to send message #2 with the error message "image_process_failed"'):
        await bot.send_media_group(CHAT, [ok, damaged, banner])
    with pytest.raises(BadRequest, match='(?i)failed to send message #3 .*"photo_invalid_dimensions"'):
        await bot.send_media_group(CHAT, [ok, ok, banner])
    with pytest.raises(BadRequest, match="(?i)^wrong file identifier"):  # file errors fail the whole request first
        await bot.send_media_group(CHAT, [damaged, InputMediaPhoto("AgACunknown")])
    with pytest.raises(BadRequest, match="(?i)^image_process_failed$"):
        await bot.send_photo(CHAT, jpeg(640, 480)[:300])
    assert server.albums() == []


async def test_replies_to_a_deleted_message(bot: Bot, server: FakeBotApi) -> None:
    asked = server.user_sends_photo(jpeg(), chat_id=CHAT)
    message_id = asked["message"]["message_id"]
    reply = await bot.send_message(CHAT, "found it", reply_to_message_id=message_id)
    assert reply.reply_to_message is not None and reply.reply_to_message.message_id == message_id
    album = await bot.send_media_group(CHAT, [InputMediaPhoto(jpeg()), InputMediaPhoto(jpeg())],
                                       reply_parameters=ReplyParameters(message_id))
    assert {m.reply_to_message.message_id if m.reply_to_message else None for m in album} == {message_id}

    server.user_deletes(asked)
    with pytest.raises(ValueError):
        server.user_deletes(asked)
    for send in (lambda **kw: bot.send_message(CHAT, "late", **kw),
                 lambda **kw: bot.send_photo(CHAT, jpeg(), **kw),
                 lambda **kw: bot.send_media_group(CHAT, [InputMediaPhoto(jpeg())] * 2, **kw)):
        with pytest.raises(BadRequest, match="(?i)message to be replied not found"):
            await send(reply_to_message_id=message_id)
        sent = await send(reply_parameters=ReplyParameters(message_id, allow_sending_without_reply=True))
        assert all(m.reply_to_message is None for m in (sent if isinstance(sent, tuple) else [sent]))
    assert len(server.albums()) == 2


async def test_a_late_answer_after_the_call_was_carried_out(bot: Bot, server: FakeBotApi) -> None:
    server.user_sends_text("hi")
    server.fail_next("sendMessage", late=1.0)
    with pytest.raises(TimedOut):
        await bot.send_message(CHAT, "delivered anyway", read_timeout=0.2)
    assert [m.get("text") for m in server.sent_messages(CHAT)] == ["delivered anyway"]
    assert [c.status for c in server.calls_to("sendMessage")] == [200]
    assert (await bot.send_message(CHAT, "next")).text == "next"  # later calls are answered at once
