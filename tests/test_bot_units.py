"""The bot's small parts on their own: settings, token redaction, retries, rate limits, file_id cache,
per-chat queues, "Next 5" sessions and callback data, size checks before downloading."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from telegram import Bot
from telegram.error import BadRequest, Forbidden, RetryAfter, TimedOut

from bot.chat_queue import ChatQueues
from bot.config import ConfigError, load_settings
from bot.file_id_cache import FileIdCache
from bot.handlers import PAGE, ImageTooBig, download_image, parse_more
from bot.logging_setup import REDACTED, RedactTokenFilter
from bot.rate_limit import BurstNotices, RateLimiter
from bot.retry import with_retries
from bot.sessions import Sessions
from standin_bot_api import FakeBotApi

TOKEN = "4242:FAKE-test-token-secret_part"


def test_settings_read_every_variable() -> None:
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "INDEX_DIR": "/srv/index",
            "ALLOWED_USER_IDS": "1, 2;3",
            "RATE_LIMIT_PER_MINUTE": "5",
            "TELEGRAM_API_BASE_URL": "http://localhost:8081/bot",
            "LOG_LEVEL": "debug",
        }
    )
    assert settings.index_dir == Path("/srv/index")
    assert settings.allowed_user_ids == frozenset({1, 2, 3})
    assert settings.rate_limit_per_minute == 5
    assert settings.api_base_url == "http://localhost:8081/bot"
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "TELEGRAM_BOT_TOKEN is not set"),
        ({"TELEGRAM_BOT_TOKEN": "no-colon"}, "does not look like a bot token"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "ALLOWED_USER_IDS": "alice"}, "ALLOWED_USER_IDS"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "RATE_LIMIT_PER_MINUTE": "many"}, "RATE_LIMIT_PER_MINUTE must be a whole number"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_bad_settings_give_one_clear_message(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_dotenv_file_is_read_but_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nINDEX_DIR=/from/dotenv\nLOG_LEVEL=WARNING\n", encoding="utf-8")
    for name in ("TELEGRAM_BOT_TOKEN", "INDEX_DIR"):
        # set, then delete: monkeypatch then restores the variable's original state, also when
        # load_dotenv wrote it (a leaked INDEX_DIR would point later bots at a missing index)
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    settings = load_settings(dotenv_path=dotenv)
    assert settings.token == TOKEN and settings.index_dir == Path("/from/dotenv") and settings.log_level == "ERROR"


def test_token_is_redacted_from_messages_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redaction")
    logger.addFilter(RedactTokenFilter(TOKEN))
    with caplog.at_level(logging.INFO, logger="test.redaction"):
        logger.info("POST https://api.telegram.org/bot%s/sendMessage", TOKEN)
        try:
            raise RuntimeError(f"failed for {TOKEN.split(':')[1]}")
        except RuntimeError:
            logger.exception("boom")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert REDACTED in text
    assert TOKEN not in text and TOKEN.split(":")[1] not in text


async def test_retry_waits_out_flood_control_then_succeeds() -> None:
    attempts = []

    async def call() -> str:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 3:
            raise RetryAfter(1) if len(attempts) == 1 else TimedOut()
        return "sent"

    assert await with_retries(call) == "sent"
    assert len(attempts) == 3 and attempts[1] - attempts[0] >= 0.95


@pytest.mark.parametrize("error", [BadRequest("Wrong file identifier"), Forbidden("bot was blocked by the user")])
async def test_final_errors_are_not_retried(error: Exception) -> None:
    calls = 0

    async def call() -> None:
        nonlocal calls
        calls += 1
        raise error

    with pytest.raises(type(error)):
        await with_retries(call)
    assert calls == 1


def test_rate_limiter_window() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert limiter.retry_in(7) == 0 and limiter.retry_in(7) == 0
    assert limiter.retry_in(7) == pytest.approx(60.0)
    assert limiter.retry_in(8) == 0  # other users are not affected
    now[0] = 60.0
    assert limiter.retry_in(7) == 0
    assert RateLimiter(0).retry_in(7) == 0  # 0 = unlimited


async def test_file_id_cache_round_trip_is_atomic_and_per_bot(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "ids.json"
    photo = tmp_path / "1.jpg"
    photo.write_bytes(b"jpeg")
    cache = FileIdCache(path, bot_id=1)
    key = await FileIdCache.key_for("1", photo)
    cache.put(key, "FILE-A")
    await cache.save()
    assert json.loads(path.read_text())["files"] == {key: "FILE-A"}
    assert [p.name for p in path.parent.iterdir()] == ["ids.json"]  # no temp files left

    same_bot = FileIdCache(path, bot_id=1)
    await same_bot.load()
    assert same_bot.get(key) == "FILE-A"
    other_bot = FileIdCache(path, bot_id=2)
    await other_bot.load()
    assert other_bot.get(key) is None  # file_ids are valid for one bot only

    photo.write_bytes(b"a different photo")  # replaced photo: new key, uploaded afresh
    assert await FileIdCache.key_for("1", photo) != key


async def test_corrupt_file_id_cache_is_ignored_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "ids.json"
    path.write_text("{truncated", encoding="utf-8")
    cache = FileIdCache(path, bot_id=1)
    await cache.load()
    assert len(cache) == 0


def test_rate_limiter_forgets_idle_users() -> None:
    """A bot that runs for months meets millions of users: the table holds only recent ones."""
    now = [0.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    for user in range(100_000):  # 100 new users a second for 1000 s
        now[0] = user / 100
        assert limiter.retry_in(user) == 0
    assert len(limiter) <= 2 * 60 * 100  # at most two windows' worth
    assert limiter.retry_in(99_999) == 0 and limiter.retry_in(99_999) == 0
    assert limiter.retry_in(99_999) > 0  # pruning never forgets a user still in their window


def test_burst_notices_tell_once_per_burst_and_forget() -> None:
    now = [0.0]
    notices = BurstNotices(gap=10.0, clock=lambda: now[0])
    told = []
    for step in range(100):  # a flood: one refused message every 0.2 s
        now[0] = step * 0.2
        told.append(notices.should_tell(1))
    assert told == [True] + [False] * 99
    assert notices.should_tell(2)  # other chats have their own bursts
    now[0] += 10.0  # quiet for the gap: a new burst is told again
    assert notices.should_tell(1)
    for chat in range(1000):
        now[0] += 1.0
        notices.should_tell(chat + 10)
    assert len(notices) <= 21  # two gaps' worth of chats at one a second


def test_sessions_keep_a_copy_not_a_view_of_the_batch() -> None:
    batch = np.random.default_rng(0).random((16, 2048), dtype=np.float32)
    sessions = Sessions(max_sessions=2)
    token = sessions.remember(batch[3])
    stored = sessions.get(token)
    assert stored is not None and stored.base is None and stored.flags.owndata  # does not pin the batch
    assert np.array_equal(stored, batch[3])
    batch[3] = 0
    assert stored.any()
    sessions.remember(batch[4])
    sessions.remember(batch[5])
    assert sessions.get(token) is None and len(sessions) == 2  # oldest dropped


async def test_inference_hands_out_vectors_that_own_their_data(demo_recommender, demo_photo: Path) -> None:
    from bot.inference import InferenceService

    service = InferenceService(demo_recommender)
    service.start()
    try:
        data = demo_photo.read_bytes()
        vectors = await asyncio.gather(*(service.embed(data) for _ in range(4)))
    finally:
        service.stop()
    assert all(v.base is None for v in vectors)
    assert np.allclose(vectors[0], vectors[3])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("more:AbC-_12345678:5", ("AbC-_12345678", 5)),
        ("more:AbC-_12345678:45", ("AbC-_12345678", 45)),
        ("more:", None),
        ("more::5", None),
        ("more:AbC-_12345678:", None),
        ("more:AbC-_12345678:٣", None),  # Arabic-Indic digit: isdigit() is True, int() would even accept it
        ("more:AbC-_12345678:²", None),  # superscript: isdigit() is True, int() raises
        ("more:AbC-_12345678:0", None),
        ("more:AbC-_12345678:7", None),  # not a page boundary
        ("more:AbC-_12345678:50", None),  # past MAX_RESULTS
        ("more:AbC-_12345678:999999", None),
        ("more:AbC-_12345678:5:extra", None),
        ("more:tök12345678:5", None),
        (None, None),
    ],
)
def test_next_five_callback_data_is_parsed_strictly(data: str | None, expected: tuple[str, int] | None) -> None:
    assert parse_more(data) == expected
    assert PAGE == 5


async def test_chat_queue_keeps_order_per_chat_and_bounds_the_backlog() -> None:
    done: list[tuple[int, int]] = []
    release = asyncio.Event()

    def job(chat: int, n: int):
        async def run() -> None:
            if chat == 1:
                await release.wait()  # chat 1 is stuck (e.g. waiting out a 429)
            done.append((chat, n))
        return run

    queues = ChatQueues(backlog=3)
    accepted = [queues.submit(1, job(1, n)) for n in range(6)]
    assert accepted == [True, True, True, False, False, False]  # 3 waiting at most
    for n in range(3):
        assert queues.submit(2, job(2, n))
    await asyncio.wait_for(_until(lambda: len(done) == 3), 5)
    assert done == [(2, 0), (2, 1), (2, 2)]  # chat 2 never waited for stuck chat 1
    release.set()
    await asyncio.wait_for(_until(lambda: len(done) == 6), 5)
    assert done[3:] == [(1, 0), (1, 1), (1, 2)]  # in arrival order
    assert queues.chats == 0 and len(queues) == 0  # idle chats leave nothing behind


async def test_chat_queue_close_cancels_stuck_work_by_the_deadline() -> None:
    started = asyncio.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.sleep(3600)

    queues = ChatQueues(backlog=5)
    for _ in range(4):
        queues.submit(1, stuck)

    async def notice() -> None:
        await asyncio.sleep(3600)

    queues.spawn(notice())
    await started.wait()
    began = time.monotonic()
    await queues.close(deadline=time.monotonic() + 0.3)
    assert 0.25 <= time.monotonic() - began < 2.0
    assert queues.chats == 0 and len(queues) == 0
    assert not queues.submit(1, stuck)  # closed: nothing new is taken


async def test_chat_queue_reports_unexpected_errors_and_goes_on() -> None:
    errors: list[tuple[object, BaseException]] = []
    done: list[int] = []

    async def on_error(update: object, error: BaseException) -> None:
        errors.append((update, error))

    async def broken() -> None:
        raise ValueError("bug")

    async def flood_controlled() -> None:
        raise Forbidden("Forbidden: bot was blocked by the user")  # logged, nobody to tell

    async def fine() -> None:
        done.append(1)

    queues = ChatQueues(on_error=on_error)
    queues.submit(1, broken, update="update-1")
    queues.submit(1, flood_controlled, update="update-2")
    queues.submit(1, fine)
    await asyncio.wait_for(_until(lambda: done), 5)
    assert [(u, type(e)) for u, e in errors] == [("update-1", ValueError)]


async def test_chat_queue_mutes_a_chat_under_flood_control_and_spares_the_others() -> None:
    """A 429 that outlasted the retries: that chat's waiting answers are dropped and nothing is
    sent to it until Telegram's retry_after has passed; other chats go on."""
    done: list[tuple[int, int]] = []

    def job(chat: int, n: int):
        async def run() -> None:
            done.append((chat, n))
        return run

    async def refused() -> None:
        raise RetryAfter(0.4)

    queues = ChatQueues(backlog=5)
    queues.submit(1, refused)
    queues.submit(1, job(1, 0))  # waiting behind the refused send: dropped with it
    queues.submit(2, job(2, 0))
    await asyncio.wait_for(_until(lambda: queues.chats == 0), 5)
    assert done == [(2, 0)]
    assert queues.muted(1) and not queues.muted(2)
    assert queues.submit(1, job(1, 1))  # accepted but not run: the chat is muted
    notice_sent: list[int] = []

    async def notice() -> None:
        notice_sent.append(1)

    queues.spawn(notice(), chat_id=1)
    await asyncio.sleep(0.05)
    assert done == [(2, 0)] and not notice_sent and queues.chats == 0
    await asyncio.sleep(0.4)  # flood control is over
    assert not queues.muted(1)
    assert queues.submit(1, job(1, 2))
    await asyncio.wait_for(_until(lambda: (1, 2) in done), 5)
    assert done == [(2, 0), (1, 2)]


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.01)


async def test_size_reported_by_getfile_is_checked_before_downloading() -> None:
    """A message need not carry the file's size; getFile's is used, and nothing is downloaded."""
    limit = 1024 * 1024
    with FakeBotApi() as api:
        big = api.user_sends_document(b"\x89PNG" + bytes(100), "big.png", "image/png", chat_id=5, declared_size=limit + 1)
        small = api.user_sends_document(b"\x89PNG small", "small.png", "image/png", chat_id=5)
        async with Bot(api.token, base_url=api.base_url, base_file_url=api.base_file_url) as bot:
            with pytest.raises(ImageTooBig, match="too big"):
                await download_image(bot, big["message"]["document"]["file_id"], None, limit)
            assert api.downloads == []
            data = await download_image(bot, small["message"]["document"]["file_id"], None, limit)
        assert bytes(data) == b"\x89PNG small"
        assert api.downloads == [small["message"]["document"]["file_id"]]
