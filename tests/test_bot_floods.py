"""Fairness under floods, end to end: the real bot (``python -m bot``) against the stand-in server.

One chat floods the bot like a real client would (a few messages a second: photos, texts and
stickers, and Telegram's per-chat flood control answering 429 once the bot has written too much
to it); another chat's answers must keep their idle speed, the flooder gets one "slow down"
notice rather than one per message, and SIGTERM with a backlog still stops the bot quickly and
cleanly. The bot serves the session's demo index (built once for the whole test session).
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from standin_bot_api import FakeBotApi
from tests.test_bot_e2e import BotProcess

FLOODER, SHOPPER = 7001, 7002
FLOOD_UPDATES = 200
RATE_LIMIT = 40  # the shopper sends ~35 photos in the test
NOTICE = "faster than I can"
SHUTDOWN_LIMIT_S = 10.0


@pytest.fixture
def served(demo_index, tmp_path: Path) -> Iterator[tuple[FakeBotApi, BotProcess, list[bytes]]]:
    photos = [(demo_index.catalogue.images_dir / item.image).read_bytes() for item in demo_index.catalogue.items[:20]]
    with FakeBotApi() as api:
        bot = BotProcess(
            api, tmp_path / "data", tmp_path / "bot.log",
            INDEX_DIR=str(demo_index.path), RATE_LIMIT_PER_MINUTE=str(RATE_LIMIT), LOG_LEVEL="INFO",
        )
        try:
            bot.wait_ready()
            yield api, bot, photos
        finally:
            bot.stop()


def prompts(api: FakeBotApi, chat: int) -> int:
    return sum(1 for m in api.sent_messages(chat) if m.get("reply_markup"))


def answer_time(api: FakeBotApi, chat: int, photo: bytes) -> float:
    """Seconds from the photo's delivery to the bot (getUpdates) until its album arrived."""
    albums, asked = len(api.albums(chat)), prompts(api, chat)
    update = api.user_sends_photo(photo, chat_id=chat)
    api.wait_for(lambda s: len(s.albums(chat)) > albums, timeout=60, interval=0.005)
    seen = time.perf_counter()
    api.wait_for(lambda s: prompts(s, chat) > asked, timeout=60)  # the whole answer is out
    return seen - api.delivered_at[update["update_id"]]


def flood(api: FakeBotApi, photos: list[bytes], stop: threading.Event, sent: list[int]) -> None:
    """A client sending as fast as a thumb can: one update every 30-150 ms."""
    rng = random.Random(7)
    for n in range(FLOOD_UPDATES):
        if stop.is_set():
            return
        sent[0] = n
        kind = n % 4
        if kind in (0, 2):
            api.user_sends_photo(photos[n % len(photos)], chat_id=FLOODER)
        elif kind == 1:
            api.user_sends_text(f"hello {n}", chat_id=FLOODER)
        else:
            api.user_sends_sticker(chat_id=FLOODER)
        time.sleep(rng.uniform(0.03, 0.15))


def test_a_flooding_chat_neither_slows_others_nor_blocks_shutdown(served) -> None:
    api, bot, photos = served
    answer_time(api, SHOPPER, photos[0])  # first answer uploads the catalogue photos: not timed
    idle = statistics.median(answer_time(api, SHOPPER, photos[n % 3]) for n in range(5))

    # Telegram's own flood control: one message a second to the flooder (10 in 10 s), then 429s.
    api.flood_control(FLOODER, messages=10, seconds=10)
    stop, sent = threading.Event(), [0]
    flooder = threading.Thread(target=flood, args=(api, photos, stop, sent), daemon=True)
    flooder.start()
    try:
        time.sleep(2.0)  # let the flood build up
        busy: list[float] = []
        while sent[0] < FLOOD_UPDATES - 20:
            busy.append(answer_time(api, SHOPPER, photos[len(busy) % 3]))
            time.sleep(0.5)
        flooded = statistics.median(busy)
        # The flooder was told to slow down once, not once per message.
        notices = [m["text"] for m in api.sent_messages(FLOODER) if NOTICE in m.get("text", "")]

        # SIGTERM while the flood goes on, with the flooder's backlog queued and waiting out 429s;
        # then an impatient second one, as supervisors send: a quick, clean, complete stop all the same.
        code, took = bot.sigterm_twice(0.5, SHUTDOWN_LIMIT_S)
    finally:
        stop.set()
        flooder.join()
    print(f"shopper idle {idle:.3f}s, under the flood {flooded:.3f}s (max {max(busy):.3f}s, {len(busy)} photos); stopped in {took:.1f}s")
    output = bot.output()
    assert len(busy) >= 5, f"only {len(busy)} answers during the flood: {busy}"
    # The machine is noisy: 2x the idle median plus 100 ms of slack, and no answer stuck behind the flood.
    assert flooded <= 2 * idle + 0.1, f"shopper's answer time went from {idle:.3f}s idle to {flooded:.3f}s under a flood: {busy}"
    assert max(busy) <= max(1.0, 5 * idle), f"a shopper's answer waited behind the flood: {busy} (idle {idle:.3f}s)"
    assert 1 <= len(notices) <= 2, notices
    assert len(api.albums(FLOODER)) <= RATE_LIMIT
    assert "Shutdown: cancelled" in output  # there was a backlog to cut short
    assert code == 0, f"exit {code} after {took:.1f}s:\n{output[-3000:]}"
    assert "Stopped cleanly" in output
    for bad in ("never awaited", "Traceback", "Task was destroyed"):
        assert bad not in output, f"{bad!r} in the bot's output:\n{output[-3000:]}"
    assert (bot.log_path.parent / "data" / "telegram-file-ids.json").is_file()  # post_shutdown saved the cache
