"""End-to-end: the real bot (``python -m bot``) talks HTTP to the stand-in Bot API server.

One bot process serves most tests (each test uses its own chat); the bot builds its own demo
index at first start, exactly as ``make run`` does on a fresh clone.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from bot import handlers
from recommender.recommender import EXACT_MATCH_LINE
from standin_bot_api import Album, AlbumItem, FakeBotApi

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 240
ANSWER_TIMEOUT = 60
RATE_LIMIT = 12


class BotProcess:
    """A ``python -m bot`` subprocess with its output captured to a file."""

    def __init__(self, api: FakeBotApi, data_dir: Path, log_path: Path, **env: str) -> None:
        self.api = api
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")
        environment = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": api.token,
            "TELEGRAM_API_BASE_URL": api.base_url,
            "TELEGRAM_API_FILE_URL": api.base_file_url,
            "DATA_DIR": str(data_dir),
            "INDEX_WEIGHTS": "none",
            "LOG_LEVEL": "DEBUG",
            "RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT),
            **env,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot"], cwd=ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, polls_before: int = 0) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"bot exited with {self.process.returncode}:\n{self.output()[-4000:]}")
            if len(self.api.calls_to("getUpdates")) > polls_before:
                return
            time.sleep(0.1)
        raise AssertionError(f"bot not polling after {START_TIMEOUT}s:\n{self.output()[-4000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def sigterm_twice(self, gap: float, limit: float) -> tuple[int, float]:
        """SIGTERM, then an impatient second one ``gap`` s later (as supervisors send): (exit code, seconds)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        time.sleep(gap)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=max(0.1, limit - gap))
        except subprocess.TimeoutExpired:
            pytest.fail(f"bot still running {limit}s after SIGTERM:\n{self.output()[-3000:]}")
        return code, time.monotonic() - started

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def api() -> Iterator[FakeBotApi]:
    with FakeBotApi() as server:
        yield server


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bot-data")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def bot(api: FakeBotApi, data_dir: Path, metrics_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotProcess]:
    process = BotProcess(api, data_dir, tmp_path_factory.mktemp("logs") / "bot.log", METRICS_PORT=str(metrics_port))
    try:
        process.wait_ready()
        yield process
    finally:
        code = process.stop()
        output = process.output()
        # Checked here so every test of the module ran against a bot that also shut down cleanly.
        assert code == 0, f"bot did not stop cleanly (exit {code}):\n{output[-3000:]}"
        assert "Stopped cleanly" in output


@pytest.fixture(scope="module")
def catalogue(bot: BotProcess, data_dir: Path) -> list[dict[str, str]]:
    """The demo catalogue the bot built its index from."""
    with open(data_dir / "demo-catalogue" / "styles.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def photo_of(data_dir: Path, product_id: str) -> bytes:
    return (data_dir / "demo-catalogue" / "images" / f"{product_id}.jpg").read_bytes()


def texts(api: FakeBotApi, chat: int) -> list[str]:
    return [m.get("text", "") for m in api.sent_messages(chat) if "text" in m]


def product_lines(item: AlbumItem) -> list[str]:
    """A caption's product name and details, past an "Exact match" first line."""
    return (item.caption or "").removeprefix(EXACT_MATCH_LINE + "\n").split("\n")


def wait_albums(api: FakeBotApi, chat: int, count: int = 1) -> list[Album]:
    api.wait_for(lambda s: len(s.albums(chat)) >= count, timeout=ANSWER_TIMEOUT)
    return api.albums(chat)


def wait_text(api: FakeBotApi, chat: int, count: int = 1) -> list[str]:
    api.wait_for(lambda s: len(texts(s, chat)) >= count, timeout=ANSWER_TIMEOUT)
    return texts(api, chat)


def test_start_and_help_explain_the_bot(api: FakeBotApi, bot: BotProcess) -> None:
    api.user_sends_text("/start", chat_id=2001)
    api.user_sends_text("/help", chat_id=2001)
    answers = wait_text(api, 2001, 2)
    assert all("photo" in text and "similar" in text for text in answers)


def test_the_bot_serves_the_search_backend_it_was_asked_for(bot: BotProcess) -> None:
    """``INDEX_BACKEND=ann`` or ``milvus`` in the environment runs this whole module against a bot whose
    demo index was built with that backend (the module passes unchanged on each); by default, exact."""
    expected = os.environ.get("INDEX_BACKEND", "").strip().lower() or "exact"
    assert f"search {expected})" in bot.output()


def test_photo_gets_album_of_five_captioned_products(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    product = catalogue[10]
    api.user_sends_photo(photo_of(data_dir, product["id"]), chat_id=2002)
    album = wait_albums(api, 2002)[0]
    assert len(album.items) == 5
    # The exact catalogue photo finds itself first; every caption names a product and its category.
    assert product_lines(album.items[0])[0] == product["productDisplayName"]
    names = {row["productDisplayName"]: row for row in catalogue}
    for item in album.items:
        name, details = product_lines(item)
        assert name in names and names[name]["articleType"] in details and names[name]["baseColour"] in details
    # Below the album: a message with the "Next 5" button; its data is the library's key to the cached page.
    more = api.wait_for(lambda s: [m for m in s.sent_messages(2002) if m.get("reply_markup")], timeout=ANSWER_TIMEOUT)[0]
    button = more["reply_markup"]["inline_keyboard"][0][0]
    assert button["text"].startswith("Next 5") and 1 <= len(button["callback_data"].encode()) <= 64


def test_image_sent_as_file_is_answered_like_a_photo(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    product = catalogue[30]
    png = io.BytesIO()
    Image.open(io.BytesIO(photo_of(data_dir, product["id"]))).save(png, format="PNG")
    api.user_sends_document(png.getvalue(), file_name="look.png", mime_type="image/png", chat_id=2003)
    album = wait_albums(api, 2003)[0]
    assert len(album.items) == 5
    assert product_lines(album.items[0])[0] == product["productDisplayName"]


def test_next_five_button_shows_the_following_products(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    api.user_sends_photo(photo_of(data_dir, catalogue[40]["id"]), chat_id=2004)
    first = wait_albums(api, 2004)[0]
    more = api.wait_for(lambda s: [m for m in s.sent_messages(2004) if m.get("reply_markup")], timeout=ANSWER_TIMEOUT)[0]
    api.user_presses_button(more, more["reply_markup"]["inline_keyboard"][0][0]["callback_data"])
    second = wait_albums(api, 2004, 2)[1]
    assert len(second.items) == 5
    assert not {i.caption for i in first.items} & {i.caption for i in second.items}
    assert api.wait_for(lambda s: [c for c in s.calls_to("answerCallbackQuery") if c.ok], timeout=ANSWER_TIMEOUT)
    # The new page offers the page after it.
    prompts = api.wait_for(
        lambda s: [m["text"] for m in s.sent_messages(2004) if m.get("reply_markup") and m["message_id"] != more["message_id"]],
        timeout=ANSWER_TIMEOUT,
    )
    assert prompts[-1].startswith("Products 6-10")


def _prompt(api: FakeBotApi, chat: int) -> dict:
    return api.wait_for(lambda s: [m for m in s.sent_messages(chat) if m.get("reply_markup")], timeout=ANSWER_TIMEOUT)[-1]


def test_late_next_five_press_still_shows_the_page(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    """Telegram refuses to answer a button pressed long ago ("query is too old"): the page comes all the same."""
    chat = 2005
    api.user_sends_photo(photo_of(data_dir, catalogue[41]["id"]), chat_id=chat)
    wait_albums(api, chat)
    more = _prompt(api, chat)
    refused = len([c for c in api.calls_to("answerCallbackQuery") if not c.ok])
    api.fail_next("answerCallbackQuery", status=400, description="Bad Request: query is too old and response timeout expired or query ID is invalid")
    api.user_presses_button(more, more["reply_markup"]["inline_keyboard"][0][0]["callback_data"])
    assert len(wait_albums(api, chat, 2)[1].items) == 5
    assert len([c for c in api.calls_to("answerCallbackQuery") if not c.ok]) == refused + 1
    assert not [t for t in texts(api, chat) if "went wrong" in t]


def test_malformed_or_forged_buttons_say_the_search_expired(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    chat = 2006
    api.user_sends_photo(photo_of(data_dir, catalogue[42]["id"]), chat_id=chat)
    wait_albums(api, chat)
    more = _prompt(api, chat)
    real = more["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    # Old-style "more:<session>:<offset>" data, and the real key with its button half or its end altered.
    forged = ["more:", "more:x:٣", "more:tok:999999", f"more:{real[:12]}:5", real[:32] + "0" * 32, real[:-1] + "x", real + "5", "☃" * 20, "like:42"]
    for data in forged:
        api.user_presses_button(more, data, forged=True)
    api.wait_for(lambda s: len([t for t in texts(s, chat) if "expired" in t]) >= len(forged), timeout=ANSWER_TIMEOUT)
    assert not [t for t in texts(api, chat) if "went wrong" in t]
    assert len(api.albums(chat)) == 1  # no page for any of them
    # Every press was answered (the button's spinner stops).
    pressed = {u["callback_query"]["id"] for u in api.updates if "callback_query" in u and u["callback_query"]["data"] in forged}
    api.wait_for(lambda s: pressed <= {c.params.get("callback_query_id") for c in s.calls_to("answerCallbackQuery") if c.ok}, timeout=ANSWER_TIMEOUT)


def test_answers_arrive_although_the_shopper_deleted_the_photo(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    """Replies quote the shopper's message but must not need it: it may be gone by the time they go out."""
    chat = 2007
    with api.simultaneously():  # deleted before the bot even sees it
        photo = api.user_sends_photo(photo_of(data_dir, catalogue[43]["id"]), chat_id=chat)
        api.user_deletes(photo)
        broken = api.user_sends_document(b"\xff\xd8\xff\xe0 broken jpeg", "broken.jpg", "image/jpeg", chat_id=chat)
        api.user_deletes(broken)
    album = wait_albums(api, chat)[0]
    assert len(album.items) == 5 and {i.source for i in album.items} <= {"upload", "file_id"}
    answers = wait_text(api, chat, 2)
    assert answers[0].startswith("Products 1-5") and "couldn't use that image" in answers[1]
    assert not [t for t in texts(api, chat) if "went wrong" in t]
    assert not [c for c in api.calls_to("sendMessage") + api.calls_to("sendMediaGroup") if "replied not found" in (c.description or "")]


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda api, chat: api.user_sends_text("hello there", chat_id=chat), "Send me a photo"),
        (lambda api, chat: api.user_sends_sticker(chat_id=chat), "Please send a photo"),
        (lambda api, chat: api.user_sends_voice(chat_id=chat), "Please send a photo"),
        (lambda api, chat: api.user_sends_video(chat_id=chat), "Please send a photo"),
        (
            lambda api, chat: api.user_sends_document(b"%PDF-1.4 not a picture", "catalogue.pdf", "application/pdf", chat_id=chat),
            "Please send a photo",
        ),
        (
            lambda api, chat: api.user_sends_document(b"\xff\xd8\xff\xe0 broken jpeg", "broken.jpg", "image/jpeg", chat_id=chat),
            "couldn't use that image",
        ),
        (
            lambda api, chat: api.user_sends_document(b"\x89PNG big", "huge.png", "image/png", chat_id=chat, declared_size=25 * 1024 * 1024),
            "too big",
        ),
    ],
    ids=["text", "sticker", "voice", "video", "pdf", "corrupt-image", "over-20MB"],
)
def test_anything_else_gets_a_helpful_answer(api: FakeBotApi, bot: BotProcess, send, expected: str) -> None:
    chat = 2100 + len(api.updates)
    send(api, chat)
    answer = wait_text(api, chat)[0]
    assert expected.lower() in answer.lower()
    assert not api.albums(chat)


def test_editing_an_earlier_photo_is_not_a_new_request(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    chat = 2150
    photo = api.user_sends_photo(photo_of(data_dir, catalogue[20]["id"]), chat_id=chat)
    wait_albums(api, chat)
    wait_text(api, chat, 1)  # the Next-5 prompt follows the album: wait for it, or /help can overtake it
    api.user_edits(photo, caption="this one, in red?")
    api.user_sends_text("/help", chat_id=chat)
    wait_text(api, chat, 2)  # the help answer: the edit was processed before it
    time.sleep(1.0)
    assert len(api.albums(chat)) == 1
    answers = texts(api, chat)
    assert len(answers) == 2 and answers[0].startswith("Products 1-5") and "/help shows" in answers[1]


def test_image_over_the_pixel_limit_is_refused_politely(api: FakeBotApi, bot: BotProcess) -> None:
    huge = io.BytesIO()
    Image.new("RGB", (9000, 5000), (200, 30, 40)).save(huge, format="PNG")  # 45 MP > 40 MP limit, ~100 kB
    api.user_sends_document(huge.getvalue(), file_name="huge.png", mime_type="image/png", chat_id=2201)
    assert "too large" in wait_text(api, 2201)[0]


def test_flood_control_429_is_waited_out_and_album_delivered(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    before = api.injected_count("sendMediaGroup")
    api.fail_next("sendMediaGroup", retry_after=1)
    started = time.monotonic()
    api.user_sends_photo(photo_of(data_dir, catalogue[50]["id"]), chat_id=2301)
    album = wait_albums(api, 2301)[0]
    assert len(album.items) == 5
    assert api.injected_count("sendMediaGroup") == before + 1
    assert time.monotonic() - started >= 1.0  # it waited as long as Telegram asked


def test_server_errors_and_timeouts_are_retried(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    api.fail_next("getFile", status=500)
    api.fail_next("sendMediaGroup", status=502)
    api.user_sends_photo(photo_of(data_dir, catalogue[51]["id"]), chat_id=2302)
    assert len(wait_albums(api, 2302)[0].items) == 5


def test_twenty_shoppers_at_once_all_get_albums(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    chats = list(range(3000, 3020))
    for n, chat in enumerate(chats):
        api.user_sends_photo(photo_of(data_dir, catalogue[n * 4]["id"]), chat_id=chat)
    api.wait_for(lambda s: all(s.albums(chat) for chat in chats), timeout=ANSWER_TIMEOUT * 2)
    for n, chat in enumerate(chats):
        assert product_lines(api.albums(chat)[0].items[0])[0] == catalogue[n * 4]["productDisplayName"]


def test_album_of_photos_is_answered_in_order(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    products = [catalogue[5], catalogue[60], catalogue[90]]
    api.user_sends_album([photo_of(data_dir, p["id"]) for p in products], chat_id=2401)
    albums = wait_albums(api, 2401, 3)
    assert [product_lines(a.items[0])[0] for a in albums[:3]] == [p["productDisplayName"] for p in products]


def test_catalogue_photos_are_resent_by_file_id(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    photo = photo_of(data_dir, catalogue[70]["id"])
    api.user_sends_photo(photo, chat_id=2501)
    first = wait_albums(api, 2501)[0]
    wait_text(api, 2501)  # the Next-5 prompt goes out after the album's file_ids are cached
    api.user_sends_photo(photo, chat_id=2502)
    second = wait_albums(api, 2502)[0]
    assert [i.caption for i in first.items] == [i.caption for i in second.items]
    assert {i.source for i in second.items} == {"file_id"}
    assert [i.file_id for i in second.items] == [i.file_id for i in first.items]


def test_rate_limit_answers_politely_once_per_burst(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    chat = 2601
    for n in range(RATE_LIMIT):
        api.user_sends_photo(photo_of(data_dir, catalogue[n]["id"]), chat_id=chat)
        wait_albums(api, chat, n + 1)
    for n in range(3):  # over the limit: refused at once, with one notice for the three
        api.user_sends_photo(photo_of(data_dir, catalogue[n]["id"]), chat_id=chat)
    api.user_sends_text("/help", chat_id=chat)  # decided after the three photos, answered in turn
    api.wait_for(
        lambda s: any("/help shows" in t for t in texts(s, chat)) and any("faster" in t for t in texts(s, chat)),
        timeout=ANSWER_TIMEOUT,
    )
    notices = [t for t in texts(api, chat) if "faster" in t]
    assert len(notices) == 1 and "try again in" in notices[0]
    assert len(api.albums(chat)) == RATE_LIMIT


def test_chatter_is_rate_limited_too(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    """Texts and stickers get answers up to a limit, then one notice, then silence; photos still work."""
    chat = 2602
    for n in range(handlers.CHATTER_PER_MINUTE + 15):
        if n % 2:
            api.user_sends_sticker(chat_id=chat)
        else:
            api.user_sends_text(f"hello {n}", chat_id=chat)
    api.user_sends_photo(photo_of(data_dir, catalogue[7]["id"]), chat_id=chat)
    # The album is answered after every accepted reply (in order), the notice at once.
    api.wait_for(lambda s: s.albums(chat) and any("faster" in t for t in texts(s, chat)), timeout=ANSWER_TIMEOUT)
    answers = [t for t in texts(api, chat) if not t.startswith("Products 1-5")]
    assert sum("faster" in t for t in answers) == 1
    assert len(answers) == handlers.CHATTER_PER_MINUTE + 1, answers


def test_a_download_that_keeps_failing_gets_a_busy_answer_not_silence(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    chat = 2020
    api.fail_next("getFile", times=5, status=502)  # every attempt of the bot's retries fails
    api.user_sends_photo(photo_of(data_dir, catalogue[7]["id"]), chat_id=chat)
    answer = wait_text(api, chat)[0]
    assert "try again" in answer and "went wrong" not in answer
    assert not api.albums(chat)
    # The next photo is answered as usual.
    api.user_sends_photo(photo_of(data_dir, catalogue[7]["id"]), chat_id=chat)
    assert len(wait_albums(api, chat)[0].items) == 5


def test_in_a_group_the_bot_answers_only_what_is_meant_for_it(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    """A group chat is not flooded: a photo or text not meant for the bot gets nothing; a photo that
    mentions it, /similar replying to a photo or as its caption, and a reply to the bot are answered."""
    group, member = -5001, 5002
    photo = photo_of(data_dir, catalogue[8]["id"])
    plain = api.user_sends_photo(photo, chat_id=group, user_id=member)  # members sharing photos among themselves
    api.user_sends_text("nice dress!", chat_id=group, user_id=member)
    api.user_sends_text("/start@some_other_bot", chat_id=group, user_id=member)  # another bot's command
    api.user_sends_photo(photo, chat_id=group, user_id=member, caption="@test_fashion_bot anything like this?")
    assert len(wait_albums(api, group, 1)[0].items) == 5
    api.user_sends_text("/similar", chat_id=group, user_id=member, reply_to=plain)
    wait_albums(api, group, 2)
    api.user_sends_photo(photo, chat_id=group, user_id=member, caption="/similar")
    wait_albums(api, group, 3)
    api.user_sends_text("/similar", chat_id=group, user_id=member)  # replying to nothing
    api.wait_for(lambda s: handlers.SIMILAR_HOW in texts(s, group), timeout=ANSWER_TIMEOUT)
    prompt = api.sent_messages(group)[-2]
    api.user_sends_text("thanks!", chat_id=group, user_id=member, reply_to=prompt)
    api.wait_for(lambda s: handlers.TEXT_REPLY in texts(s, group), timeout=ANSWER_TIMEOUT)
    # One chat, one queue: everything sent before the last answer has been handled by now.
    assert len(api.albums(group)) == 3
    said = texts(api, group)
    assert said.count(handlers.TEXT_REPLY) == 1 and handlers.SEND_A_PHOTO not in said and handlers.HELP not in said


def _filtered_name(item: AlbumItem) -> str:
    """The product name of a filtered album's caption: past its "🔎 <filter>" and "Exact match" lines."""
    return next(line for line in (item.caption or "").split("\n") if not line.startswith("🔎 ") and line != EXACT_MATCH_LINE)


def _filter_buttons(message: dict) -> dict[str, str]:
    """Button text → callback data of a prompt (its product links left out)."""
    return {b["text"]: b["callback_data"] for row in message["reply_markup"]["inline_keyboard"] for b in row if "callback_data" in b}


def test_caption_words_narrow_the_album_of_the_real_bot(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    """A photo captioned "women" gets Women's products only, the album's first caption names the filter, and
    the prompt offers to clear it. (The filter tests come before the tests that stop the module's bot.)"""
    chat = 2051
    by_name = {row["productDisplayName"]: row for row in catalogue}
    shirt = next(row for row in catalogue if row["articleType"] == "Tshirts")  # a Men's product
    api.user_sends_photo(photo_of(data_dir, shirt["id"]), chat_id=chat, caption="Do you have this for women?")
    album = wait_albums(api, chat)[0]
    assert len(album.items) == 5
    assert (album.items[0].caption or "").startswith("🔎 Women\n")
    assert all(by_name[_filtered_name(item)]["gender"] == "Women" for item in album.items)
    prompt = _prompt(api, chat)
    assert prompt["text"] == "Products 1-5 most similar to your photo (Women). Want to see more?"
    assert "✖ All products" in _filter_buttons(prompt)


def test_a_gender_button_under_the_real_bots_album_filters_it(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    chat = 2052
    by_name = {row["productDisplayName"]: row for row in catalogue}
    shirt = next(row for row in catalogue if row["articleType"] == "Tshirts")
    api.user_sends_photo(photo_of(data_dir, shirt["id"]), chat_id=chat)
    wait_albums(api, chat)
    prompt = _prompt(api, chat)
    pressed = _filter_buttons(prompt)
    assert {"Men", "Women", "Unisex", "Only Tshirts"} <= set(pressed)
    api.user_presses_button(prompt, pressed["Unisex"])
    filtered = wait_albums(api, chat, 2)[1]
    assert (filtered.items[0].caption or "").startswith("🔎 Unisex\n")
    names = [_filtered_name(item) for item in filtered.items]
    assert len(names) == 5 and all(by_name[name]["gender"] == "Unisex" for name in names)
    following = api.wait_for(
        lambda s: [m for m in s.sent_messages(chat) if m.get("reply_markup") and m["message_id"] > prompt["message_id"]],
        timeout=ANSWER_TIMEOUT,
    )[0]
    assert following["text"] == "Products 1-5 most similar to your photo (Unisex). Want to see more?"
    assert "✓ Unisex" in _filter_buttons(following)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed by the Prometheus client's own parser: {(sample name, labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }  # fmt: skip


def wait_scrape(port: int, ready, timeout: float = ANSWER_TIMEOUT):
    """Scrape until ``ready(samples)``: the counters move just after the album is sent, not before."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def test_metrics_and_health_are_served(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue, metrics_port: int) -> None:
    """METRICS_PORT: /metrics in the Prometheus text format counts the album, its time, the forward pass and
    the file-id cache, and a refusal with its reason; /healthz says the model and index are loaded."""
    album_key = ("lookalike_photos_total", (("outcome", "album"),))
    refused_key = ("lookalike_photos_total", (("outcome", "refused"),))
    not_an_image = ("lookalike_refusals_total", (("reason", "not_an_image"),))
    cache = [("lookalike_file_id_cache_total", (("result", result),)) for result in ("hit", "miss")]
    before = scrape(metrics_port)
    assert before[("lookalike_index_products", ())] == len(catalogue)

    api.user_sends_photo(photo_of(data_dir, catalogue[12]["id"]), chat_id=2990)
    wait_albums(api, 2990)
    after = wait_scrape(metrics_port, lambda s: s[album_key] > before[album_key])
    assert after[album_key] == before[album_key] + 1
    assert after[("lookalike_photo_to_album_seconds_count", ())] == before[("lookalike_photo_to_album_seconds_count", ())] + 1
    assert after[("lookalike_photo_to_album_seconds_sum", ())] > before[("lookalike_photo_to_album_seconds_sum", ())]
    assert after[("lookalike_forward_pass_photos_count", ())] > before[("lookalike_forward_pass_photos_count", ())]
    assert sum(after[key] for key in cache) >= sum(before[key] for key in cache) + 5  # one lookup per album photo

    api.user_sends_document(b"\xff\xd8\xff\xe0 broken jpeg", "broken.jpg", "image/jpeg", chat_id=2990)
    wait_text(api, 2990, 2)
    refused = wait_scrape(metrics_port, lambda s: s[not_an_image] > after[not_an_image])
    assert refused[not_an_image] == after[not_an_image] + 1 and refused[refused_key] == after[refused_key] + 1
    assert refused[album_key] == after[album_key]

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=10) as response:
        health = json.loads(response.read())
    assert health["ok"] and health["model_loaded"] and health["index_loaded"] and health["inference_running"]
    assert health["products"] == len(catalogue) and health["search_backend"] in ("exact", "ann", "milvus") and health["mode"] == "polling"
    assert health["seconds_since_last_update"] is not None and health["seconds_since_last_update"] < ANSWER_TIMEOUT
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/elsewhere", timeout=10)
    assert missing.value.code == 404


def test_a_taken_metrics_port_is_one_clear_message(api: FakeBotApi, bot: BotProcess, data_dir: Path, tmp_path: Path) -> None:
    """A second bot on the first one's index whose METRICS_PORT is taken stops at start: exit 2, one line, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        second = BotProcess(api, data_dir, tmp_path / "second.log", METRICS_PORT=str(port))
        try:
            code = second.process.wait(timeout=START_TIMEOUT)
        finally:
            second.stop()
    output = second.output()
    assert code == 2, output[-3000:]
    assert f"Cannot serve /metrics on 127.0.0.1:{port}" in output and "Traceback" not in output

def test_token_never_appears_in_logs(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue) -> None:
    api.user_sends_photo(photo_of(data_dir, catalogue[3]["id"]), chat_id=2701)
    wait_albums(api, 2701)
    output = bot.output()
    assert "Ready:" in output and "DEBUG" in output  # the log is really being captured, at DEBUG
    secret = api.token.split(":", 1)[1]
    assert api.token not in output and secret not in output


def test_file_id_cache_survives_restart_and_private_mode(api: FakeBotApi, bot: BotProcess, data_dir: Path, catalogue, tmp_path: Path) -> None:
    """A second bot on the same index and cache re-sends by file_id at once; strangers are turned away."""
    photo = photo_of(data_dir, catalogue[80]["id"])
    cache = data_dir / "telegram-file-ids.json"
    api.user_sends_photo(photo, chat_id=2801)
    wait_albums(api, 2801)
    wait_text(api, 2801)  # the Next-5 prompt goes out after the album's file_ids are saved
    assert cache.is_file()
    bot.stop()  # the module fixture's teardown re-checks the clean exit
    polls = len(api.calls_to("getUpdates"))
    second = BotProcess(api, data_dir, tmp_path / "second.log", ALLOWED_USER_IDS="2802")
    try:
        second.wait_ready(polls)
        api.user_sends_photo(photo, chat_id=2802)
        album = wait_albums(api, 2802)[0]
        assert {i.source for i in album.items} == {"file_id"}
        api.user_sends_photo(photo, chat_id=2803)
        assert "private" in wait_text(api, 2803)[0]
        assert not api.albums(2803)
    finally:
        assert second.stop() == 0


def run_bot_expecting_failure(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TELEGRAM_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bot"], cwd=tmp_path, env={**environment, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=120,
    )


def test_missing_token_is_one_clear_message(tmp_path: Path) -> None:
    result = run_bot_expecting_failure({}, tmp_path)
    assert result.returncode == 2
    assert "TELEGRAM_BOT_TOKEN is not set" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_corrupt_index_is_one_clear_message(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    (index / "manifest.json").write_text("{not json", encoding="utf-8")
    result = run_bot_expecting_failure({"TELEGRAM_BOT_TOKEN": "1:secret-for-this-test", "INDEX_DIR": str(index)}, tmp_path)
    output = result.stderr + result.stdout
    assert result.returncode == 2
    assert "manifest" in output and "unreadable" in output
    assert "Traceback" not in output


def test_a_bot_on_an_onnx_index_answers_without_tensorflow(demo_catalogue, mobilenet_random, tmp_path: Path) -> None:
    """An index built with ``--runtime onnx``: the bot serves it through ONNX Runtime and never imports TensorFlow."""
    from recommender import build_index

    index = tmp_path / "index"
    build_index(demo_catalogue, index, mobilenet_random, runtime="onnx", precision="fp32")
    with FakeBotApi() as own_api:  # its own server: no other bot polls these updates
        process = BotProcess(own_api, tmp_path / "data", tmp_path / "onnx.log", INDEX_DIR=str(index))
        try:
            process.wait_ready()
            own_api.user_sends_photo((demo_catalogue.images_dir / demo_catalogue.items[3].image).read_bytes(), chat_id=2901)
            album = wait_albums(own_api, 2901)[0]
            assert len(album.items) == 5 and all(item.caption for item in album.items)
        finally:
            assert process.stop() == 0
    output = process.output()
    assert "runtime onnx-fp32, TensorFlow not loaded" in output, output[-3000:]


def test_a_shoppers_photo_of_a_catalogue_product_is_captioned_exact_match(fashion_catalogue, mobilenet_real, tmp_path: Path) -> None:
    """Real photos, real MobileNetV2, the bot process: a phone photo of a catalogue product gets that product
    first, captioned "Exact match"; a phone photo of a product the shop does not sell gets no such caption."""
    from recommender import build_index
    from tests.build_helpers import subset
    from tests.test_exact_match import TEXTURED, item_with, shopper_bytes, spread

    items = spread(fashion_catalogue, 0, 30)
    index = tmp_path / "index"
    build_index(subset(fashion_catalogue, items), index, mobilenet_real, runtime="onnx", precision="fp32", refine="none", exact_items=True)
    stranger = fashion_catalogue.items[1]  # not in the index (every 100th product is)
    with FakeBotApi() as own_api:
        process = BotProcess(own_api, tmp_path / "data", tmp_path / "exact.log", INDEX_DIR=str(index))
        try:
            process.wait_ready()
            wanted = item_with(items, TEXTURED[0])
            own_api.user_sends_photo(shopper_bytes(fashion_catalogue, wanted), chat_id=2951)
            own_api.user_sends_photo(shopper_bytes(fashion_catalogue, stranger), chat_id=2952)
            exact, other = wait_albums(own_api, 2951)[0], wait_albums(own_api, 2952)[0]
        finally:
            assert process.stop() == 0
    first = (exact.items[0].caption or "").split("\n")
    assert first[0] == EXACT_MATCH_LINE and first[1] == wanted.labels["productDisplayName"]
    assert not any((item.caption or "").startswith(EXACT_MATCH_LINE) for item in exact.items[1:])
    assert len(exact.items) == 5 and not any((item.caption or "").startswith(EXACT_MATCH_LINE) for item in other.items)
