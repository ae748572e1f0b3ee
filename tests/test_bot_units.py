"""The bot's small parts on their own: settings, token redaction, retries, rate limit, file_id cache."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from telegram.error import BadRequest, Forbidden, RetryAfter, TimedOut

from bot.config import ConfigError, load_settings
from bot.file_id_cache import FileIdCache
from bot.logging_setup import REDACTED, RedactTokenFilter
from bot.rate_limit import RateLimiter
from bot.retry import with_retries

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
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.delenv("INDEX_DIR", raising=False)
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
