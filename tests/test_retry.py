"""The bot's one retry policy (``bot/retry.py``), through a real ``Bot`` talking HTTP to the stand-in Bot API:
what is repeated, what never is, how long it waits, and what the caller finally sees."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from telegram import Bot
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

from bot.retry import RetryingRequest, Rule, retry_after_seconds, rule_for, telegram_may_have_acted
from standin_bot_api import FakeBotApi

CHAT = 5201


@pytest.fixture
def server() -> Iterator[FakeBotApi]:
    with FakeBotApi() as srv:
        srv.user_sends_text("/start", chat_id=CHAT)  # the chat exists
        yield srv


def retrying_bot(server: FakeBotApi, **options: Any) -> Bot:
    """A plain ``Bot`` on the bot's request class (``options``: attempts, max_total_wait, read_timeout...)."""
    return Bot(server.token, base_url=server.base_url, base_file_url=server.base_file_url, request=RetryingRequest(**options))


@pytest.fixture
async def bot(server: FakeBotApi) -> AsyncIterator[Bot]:
    async with retrying_bot(server) as b:
        yield b


def statuses(server: FakeBotApi, method: str) -> list[int]:
    return [c.status for c in server.calls_to(method)]


@pytest.mark.parametrize(
    ("url", "method", "rule"),
    [
        ("http://127.0.0.1/bot1:secret/sendMessage", "POST", Rule.SEND),
        ("http://127.0.0.1/bot1:secret/sendMediaGroup", "POST", Rule.SEND),
        ("http://127.0.0.1/bot1:secret/someFutureMethod", "POST", Rule.SEND),  # unknown: the safe default
        ("http://127.0.0.1/bot1:secret/getFile", "POST", Rule.IDEMPOTENT),
        ("http://127.0.0.1/bot1:secret/answerCallbackQuery", "POST", Rule.IDEMPOTENT),
        ("http://127.0.0.1/bot1:secret/setMyCommands", "POST", Rule.IDEMPOTENT),
        ("http://127.0.0.1/bot1:secret/sendChatAction", "POST", Rule.COSMETIC),
        ("http://127.0.0.1/file/bot1:secret/photos/file_7.jpg", "GET", Rule.IDEMPOTENT),
    ],
)
def test_each_endpoint_has_its_rule(url: str, method: str, rule: Rule) -> None:
    assert rule_for(url, method) is rule


async def test_retry_waits_out_flood_control_then_succeeds(server: FakeBotApi) -> None:
    async with retrying_bot(server, read_timeout=0.3) as bot:
        server.fail_next("getMe", retry_after=1)
        server.fail_next("getMe", late=1.0)  # answered after the read timeout: TimedOut
        calls_before = len(server.calls_to("getMe"))
        me = await bot.get_me()
    attempts = server.calls_to("getMe")[calls_before:]
    assert me.username and len(attempts) == 3
    assert attempts[1].time - attempts[0].time >= 0.95  # it waited as long as Telegram asked


@pytest.mark.parametrize(
    ("method", "status", "description", "error"),
    [
        ("sendMessage", 400, "Bad Request: Wrong file identifier", BadRequest),
        ("sendMessage", 403, "Forbidden: bot was blocked by the user", Forbidden),
        ("setMyCommands", 400, "Bad Request: BOT_COMMAND_INVALID", BadRequest),  # final for idempotent calls too
    ],
)
async def test_final_errors_are_not_retried(bot: Bot, server: FakeBotApi, method: str, status: int, description: str, error: type) -> None:
    server.fail_next(method, status=status, description=description)
    with pytest.raises(error):
        if method == "sendMessage":
            await bot.send_message(CHAT, "hello")
        else:
            await bot.set_my_commands([("start", "Start")])
    assert statuses(server, method) == [status]


async def test_sends_are_retried_after_error_answers(bot: Bot, server: FakeBotApi) -> None:
    server.fail_next("sendMessage", status=500)  # an error answer: nothing was sent
    server.fail_next("sendMessage", retry_after=1)  # flood control: nothing was sent
    await bot.send_message(CHAT, "hello")
    assert statuses(server, "sendMessage") == [500, 429, 200]
    assert [m["text"] for m in server.sent_messages(CHAT)] == ["hello"]


async def test_a_send_that_may_have_arrived_is_not_repeated(server: FakeBotApi) -> None:
    async with retrying_bot(server, read_timeout=0.3) as bot:
        server.fail_next("sendMessage", late=1.0)
        with pytest.raises(TimedOut) as timed_out:
            await bot.send_message(CHAT, "only once")
        assert telegram_may_have_acted(timed_out.value)
        await server.await_for(lambda s: len(s.sent_messages(CHAT)) == 1)
        await asyncio.sleep(1.0)  # a retry would have arrived by now
    assert len(server.calls_to("sendMessage")) == 1 and len(server.sent_messages(CHAT)) == 1


async def test_a_send_that_never_left_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listening: the request never left, so a send may be retried; then the error surfaces."""
    gone = FakeBotApi().start()
    async with retrying_bot(gone, attempts=2) as unreachable:
        gone.stop()
        with caplog.at_level(logging.WARNING, logger="bot.retry"), pytest.raises(NetworkError) as refused:
            await unreachable.send_message(CHAT, "hello")
    retries = [r for r in caplog.records if "retry 1 in" in r.getMessage()]
    assert len(retries) == 1 and "sendMessage" in retries[0].getMessage()  # two attempts in all
    assert not telegram_may_have_acted(refused.value)
    assert gone.token not in caplog.text and gone.token.split(":")[1] not in caplog.text  # endpoint names, not URLs


async def test_long_flood_control_is_not_waited_out(bot: Bot, server: FakeBotApi) -> None:
    server.fail_next("sendMessage", retry_after=600)
    with pytest.raises(RetryAfter):  # the caller gets the error at once and can say so
        await asyncio.wait_for(bot.send_message(CHAT, "hi"), timeout=20)
    async with retrying_bot(server, max_total_wait=1.5) as budgeted:
        server.fail_next("sendMessage", retry_after=1, times=2)
        with pytest.raises(RetryAfter):  # within the budget one wait is made, not a second
            await budgeted.send_message(CHAT, "hi")
    assert statuses(server, "sendMessage") == [429, 429, 429]


async def test_calls_once_left_unwrapped_are_retried_and_cosmetic_ones_are_not(bot: Bot, server: FakeBotApi) -> None:
    """setMyCommands (and answerCallbackQuery) go through the same policy as every other call."""
    server.fail_next("setMyCommands", status=502)
    assert await bot.set_my_commands([("start", "What this bot does")])
    assert statuses(server, "setMyCommands") == [502, 200]
    server.fail_next("sendChatAction", status=502)
    with pytest.raises(NetworkError):  # an upload_photo hint is not worth delaying the answer for
        await bot.send_chat_action(CHAT, "upload_photo")
    assert statuses(server, "sendChatAction") == [502]


async def test_a_download_that_keeps_failing_gives_up_within_its_attempts(server: FakeBotApi) -> None:
    photo = server.user_sends_document(b"\x89PNG data", "a.png", "image/png", chat_id=CHAT)["message"]["document"]["file_id"]
    async with retrying_bot(server, attempts=3) as bot:
        server.fail_next("getFile", times=3, status=502)
        with pytest.raises(NetworkError):
            await bot.get_file(photo)
        assert statuses(server, "getFile") == [502, 502, 502]
        server.fail_next("getFile", status=502)
        assert bytes(await (await bot.get_file(photo)).download_as_bytearray()) == b"\x89PNG data"


@pytest.mark.parametrize("as_timedelta", [True, False])
def test_retry_after_is_read_in_either_form(monkeypatch: pytest.MonkeyPatch, as_timedelta: bool) -> None:
    """python-telegram-bot gives an int, or a timedelta when PTB_TIMEDELTA is set (as main() does)."""
    if not as_timedelta:
        monkeypatch.delenv("PTB_TIMEDELTA")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the int form is deprecated by python-telegram-bot
        assert retry_after_seconds(RetryAfter(3)) == 3.0
