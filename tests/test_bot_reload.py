"""Catalogue updates without a restart: the real bot, the stand-in Bot API, and a real rebuild of its index.

Two disjoint halves of the demo catalogue, A and B: the bot serves A; a photo stream runs while the
test rebuilds the same index folder with B (as ``lookalike-build-index`` does, swapped in with
renames). Every album must be complete and come from one index; the bot must switch by itself
(``INDEX_CHECK_SECONDS``), log what changed, and an old "Next 5" button must say it expired.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from bot import handlers
from recommender import build_index
from standin_bot_api import FakeBotApi
from tests.build_helpers import subset
from tests.test_bot_e2e import ANSWER_TIMEOUT, BotProcess, product_lines, texts, wait_albums

ADMIN = 3100
STREAM = 3101
LATER = 3102


def build(catalogue, items, out: Path, extractor) -> None:
    build_index(subset(catalogue, items), out, extractor, runtime="onnx", precision="fp32", head="none", refine="none", exact_items=False)


def names(album) -> set[str]:
    return {product_lines(item)[0] for item in album.items}


def test_a_rebuilt_index_is_served_without_a_restart_and_no_answer_mixes_the_two(demo_catalogue, mobilenet_random, tmp_path: Path) -> None:
    items = list(demo_catalogue.items)
    half_a, half_b = items[: len(items) // 2], items[len(items) // 2 :]
    name_a = {item.labels["productDisplayName"] for item in half_a}
    name_b = {item.labels["productDisplayName"] for item in half_b}
    assert not name_a & name_b, "the halves must be told apart by their captions"
    index = tmp_path / "index"
    build(demo_catalogue, half_a, index, mobilenet_random)
    photos = [(demo_catalogue.images_dir / item.image).read_bytes() for item in items[:12]]

    with FakeBotApi() as api:
        bot = BotProcess(
            api, tmp_path / "data", tmp_path / "bot.log",
            INDEX_DIR=str(index), INDEX_CHECK_SECONDS="1", ADMIN_USER_IDS=str(ADMIN), RATE_LIMIT_PER_MINUTE="200",
        )  # fmt: skip
        try:
            bot.wait_ready()
            api.user_sends_photo(photos[0], chat_id=ADMIN)
            first = wait_albums(api, ADMIN)[0]
            assert names(first) <= name_a
            button = api.wait_for(lambda s: [m for m in s.sent_messages(ADMIN) if m.get("reply_markup")], timeout=ANSWER_TIMEOUT)[0]

            # A shopper keeps sending photos, one after another, before, during and after the rebuild and swap.
            reloaded, done = threading.Event(), threading.Event()

            def stream() -> None:
                after = 0
                for number in range(300):
                    api.user_sends_photo(photos[number % len(photos)], chat_id=STREAM)
                    api.wait_for(lambda s: len(s.albums(STREAM)) > number, timeout=ANSWER_TIMEOUT)  # noqa: B023 (used at once)
                    after += reloaded.is_set()
                    if after >= 4:
                        break
                done.set()

            shopper = threading.Thread(target=stream)
            shopper.start()
            build(demo_catalogue, half_b, index, mobilenet_random)
            api.wait_for(lambda s: "Index reloaded (the index changed)" in bot.output(), timeout=ANSWER_TIMEOUT)
            reloaded.set()
            shopper.join(timeout=ANSWER_TIMEOUT * 5)
            assert done.is_set()
            albums = api.albums(STREAM)
            for album in albums:  # complete, and from one index
                assert len(album.items) == 5 and (names(album) <= name_a or names(album) <= name_b), names(album)
            from_a = [album for album in albums if names(album) <= name_a]
            assert from_a and len(from_a) < len(albums)  # the stream really ran across the switch
            assert all(names(album) <= name_b for album in albums[len(from_a) :])  # and never went back

            output = bot.output()
            assert f"{len(half_b)} products, {len(half_b)} added, {len(half_a)} removed" in output
            api.user_sends_photo(photos[1], chat_id=LATER)
            assert names(wait_albums(api, LATER)[0]) <= name_b  # served from B now

            # The old button's rows were A's products: it says so instead of showing B's.
            api.user_presses_button(button, button["reply_markup"]["inline_keyboard"][0][0]["callback_data"])
            api.wait_for(lambda s: handlers.EXPIRED in texts(s, ADMIN), timeout=ANSWER_TIMEOUT)
            assert len(api.albums(ADMIN)) == 1

            # SIGHUP and an admin's /reload reload on demand; /stats reads the figures; others get the help.
            bot.process.send_signal(signal.SIGHUP)
            api.wait_for(lambda s: "Index reloaded (SIGHUP)" in bot.output(), timeout=ANSWER_TIMEOUT)
            api.user_sends_text("/reload", chat_id=ADMIN)
            api.wait_for(lambda s: any(t.startswith("Index reloaded (/reload by admin") for t in texts(s, ADMIN)), timeout=ANSWER_TIMEOUT)
            api.user_sends_text("/stats", chat_id=ADMIN)
            stats = api.wait_for(lambda s: [t for t in texts(s, ADMIN) if t.startswith("Catalogue:")], timeout=ANSWER_TIMEOUT)[0]
            assert f"Catalogue: {len(half_b)} products" in stats and "index generation 4" in stats
            assert "Filtered searches: 0 by caption words, 0 by buttons." in stats and "updates by polling." in stats
            api.user_sends_text("/stats", chat_id=LATER)
            api.wait_for(lambda s: handlers.HELP in texts(s, LATER), timeout=ANSWER_TIMEOUT)
            assert not [t for t in texts(api, LATER) if t.startswith("Catalogue:")]
        finally:
            code = bot.stop()
    assert code == 0, bot.output()[-3000:]
    assert "Traceback" not in bot.output()


def test_a_broken_index_is_logged_and_the_old_one_keeps_serving(demo_catalogue, mobilenet_random, tmp_path: Path) -> None:
    """A reload that cannot load (here: a damaged manifest) changes nothing a shopper sees."""
    index = tmp_path / "index"
    build(demo_catalogue, demo_catalogue.items[:20], index, mobilenet_random)
    photo = (demo_catalogue.images_dir / demo_catalogue.items[3].image).read_bytes()
    with FakeBotApi() as api:
        bot = BotProcess(api, tmp_path / "data", tmp_path / "bot.log", INDEX_DIR=str(index), INDEX_CHECK_SECONDS="0")
        try:
            bot.wait_ready()
            (index / "manifest.json").write_text("{not json", encoding="utf-8")
            bot.process.send_signal(signal.SIGHUP)
            api.wait_for(lambda s: "Could not reload the index (SIGHUP)" in bot.output(), timeout=ANSWER_TIMEOUT)
            api.user_sends_photo(photo, chat_id=3200)
            assert len(wait_albums(api, 3200)[0].items) == 5
        finally:
            code = bot.stop()
    assert code == 0, bot.output()[-3000:]
    assert "Still serving the previous one" in bot.output()
