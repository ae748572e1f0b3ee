"""SIGTERM while Telegram answers slowly: the real bot (``python -m bot``) still stops fully and cleanly.

On SIGTERM python-telegram-bot stops the updater, whose last step is one more ``getUpdates``
(offset confirmation). When Telegram is slow to answer it, the stop is still in progress a second
later; the bot must not stop the event loop again then (``RuntimeError: Event loop stopped before
Future completed``, skipping post_stop and post_shutdown: file_id cache not saved, inference not
stopped). The bot serves the session's demo index (built once for the whole test session).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from standin_bot_api import FakeBotApi
from tests.test_bot_e2e import BotProcess

CHAT = 7301
SLOW_S = 2.5  # past the bot's 1 s re-check, under PTB's 5 s read timeout for getUpdates
SHUTDOWN_LIMIT_S = 10.0


@pytest.fixture
def served(demo_index, tmp_path: Path) -> Iterator[tuple[FakeBotApi, BotProcess, bytes]]:
    photo = (demo_index.catalogue.images_dir / demo_index.catalogue.items[0].image).read_bytes()
    with FakeBotApi() as api:
        bot = BotProcess(api, tmp_path / "data", tmp_path / "bot.log", INDEX_DIR=str(demo_index.path), LOG_LEVEL="INFO")
        try:
            bot.wait_ready()
            yield api, bot, photo
        finally:
            bot.stop()


def test_sigterm_while_the_last_getupdates_is_slow_still_stops_cleanly(served) -> None:
    api, bot, photo = served
    api.user_sends_photo(photo, chat_id=CHAT)  # an answer, so the cache has photo file_ids to save
    api.wait_for(lambda s: any(m.get("reply_markup") for m in s.sent_messages(CHAT)), timeout=60)

    # Every next getUpdates is slow: the clean-up call after SIGTERM (and a long poll that might
    # just be starting, which the stop cancels). Then a supervisor's impatient second SIGTERM.
    api.fail_next("getUpdates", times=2, delay=SLOW_S)
    code, took = bot.sigterm_twice(1.5, SHUTDOWN_LIMIT_S)
    output = bot.output()

    cleanup = [c for c in api.calls_to("getUpdates") if c.time >= time.time() - took - 0.5 and not c.params.get("timeout")]
    assert cleanup, "the bot never made its clean-up getUpdates after SIGTERM: the slow path was not exercised"
    assert code == 0, f"exit {code} after {took:.1f}s:\n{output[-3000:]}"
    assert "Stopped cleanly" in output and "Embedded 1 photos" in output  # post_shutdown ran in full
    for bad in ("Traceback", "RuntimeError", "never awaited", "Task was destroyed"):
        assert bad not in output, f"{bad!r} in the bot's output:\n{output[-3000:]}"
    assert took >= SLOW_S, f"stopped in {took:.1f}s without waiting for the slow getUpdates"
    cache = json.loads((bot.log_path.parent / "data" / "telegram-file-ids.json").read_text(encoding="utf-8"))
    assert len(cache["files"]) == 5, cache  # the answer's five catalogue photos
