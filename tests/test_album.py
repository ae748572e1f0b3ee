"""Albums (``bot/album.py``) through Telegram's refusals: they survive bad catalogue photos, deleted
originals, stale file_ids, error answers and late answers, without duplicates or lost ids.

A real PTB ``Bot`` on the bot's request class (``bot/retry.py``) talks HTTP to the stand-in Bot
API; ``send_album`` gets real ``Match``es over real photo files made with Pillow.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from telegram import Bot
from telegram.error import TimedOut

from bot.album import send_album
from bot.file_id_cache import FileIdCache
from bot.retry import RetryingRequest, telegram_may_have_acted
from bot.telegram_photos import MAX_PHOTO_BYTES
from recommender import Match
from standin_bot_api import BOT_USER, FakeBotApi

CHAT = 5101
COPY_NAME = re.compile(r"[0-9a-f]{32}-\d+-\d+\.jpg")


@pytest.fixture
def server() -> Iterator[FakeBotApi]:
    with FakeBotApi() as srv:
        srv.user_sends_text("/start", chat_id=CHAT)  # the chat exists
        yield srv


@pytest.fixture
async def bot(server: FakeBotApi) -> AsyncIterator[Bot]:
    async with Bot(server.token, base_url=server.base_url, base_file_url=server.base_file_url, request=RetryingRequest()) as b:
        yield b


@pytest.fixture
async def cache(tmp_path: Path) -> FileIdCache:
    ids = FileIdCache(tmp_path / "ids.json", BOT_USER["id"])
    await ids.load()
    return ids


def jpeg_file(path: Path, width: int = 400, height: int = 600, color: tuple[int, int, int] = (200, 40, 40)) -> Path:
    Image.new("RGB", (width, height), color).save(path, "JPEG", quality=90)
    return path


def match(n: int, path: Path) -> Match:
    return Match(rank=n, row=n, id=f"p{n}", score=1.0 - n / 100, display_name=f"Product {n}", image_path=path,
                 labels={"articleType": "Tshirts"})


def normal_matches(folder: Path, count: int = 5) -> list[Match]:
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (40, 200, 200)]
    return [match(n, jpeg_file(folder / f"p{n}.jpg", color=colours[n % 5])) for n in range(count)]


def damaged_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.effect_noise((800, 800), 60).convert("RGB").save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: buffer.tell() // 2])  # the file ends halfway through the picture
    return path


def captions(album) -> list[str]:
    return [item.caption.split("\n")[0] for item in album.items]


async def test_photos_telegram_would_refuse_are_sent_as_conforming_copies(
    bot: Bot, server: FakeBotApi, cache: FileIdCache, tmp_path: Path
) -> None:
    photo_dir = tmp_path / "telegram-photos"
    banner = jpeg_file(tmp_path / "banner.jpg", 12000, 300)  # sides sum > 10000, ratio 40:1
    huge = tmp_path / "huge.jpg"
    Image.new("RGB", (6000, 5000), (90, 90, 160)).save(huge, "JPEG")  # 6000 + 5000 > 10000
    noise = tmp_path / "noise.png"  # an incompressible PNG over Telegram's 10 MB photo limit
    Image.fromarray(np.random.default_rng(7).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)).save(noise, compress_level=1)
    assert noise.stat().st_size > MAX_PHOTO_BYTES
    ok_a, ok_b = jpeg_file(tmp_path / "a.jpg"), jpeg_file(tmp_path / "b.jpg", color=(10, 120, 10))
    matches = [match(0, ok_a), match(1, banner), match(2, noise), match(3, damaged_jpeg(tmp_path / "bad.jpg")),
               match(4, huge), match(5, ok_b)]

    sent = await send_album(bot, CHAT, matches, cache, photo_dir=photo_dir)

    (album,) = server.albums(CHAT)  # one album, the damaged photo left out
    assert len(sent) == 5 and captions(album) == ["Product 0", "Product 1", "Product 2", "Product 4", "Product 5"]
    for item in album.items:  # what Telegram stored is a photo it accepts
        stored = server.file(item.file_id)
        assert stored.width is not None and stored.height is not None
        assert stored.width + stored.height <= 10000 and max(stored.width, stored.height) <= 20 * min(stored.width, stored.height)
        assert stored.file_size <= MAX_PHOTO_BYTES
    banner_photo = server.file(album.items[1].file_id)
    assert banner_photo.width == 2560 and banner_photo.height == 128  # shrunk, then padded to 20:1
    copies = sorted(photo_dir.iterdir())
    assert len(copies) == 3 and all(COPY_NAME.fullmatch(p.name) for p in copies)
    assert len(cache) == 5

    # Made once: another bot (empty cache) sends the same copies without converting again.
    stamps = {p.name: p.stat().st_mtime_ns for p in copies}
    fresh = FileIdCache(tmp_path / "other.json", BOT_USER["id"])
    assert len(await send_album(bot, CHAT, matches, fresh, photo_dir=photo_dir)) == 5
    assert {p.name: p.stat().st_mtime_ns for p in photo_dir.iterdir()} == stamps


async def test_one_refused_photo_leaves_the_others_and_their_file_ids_alone(
    bot: Bot, server: FakeBotApi, cache: FileIdCache, tmp_path: Path
) -> None:
    matches = normal_matches(tmp_path)
    first = await send_album(bot, CHAT, matches, cache, photo_dir=tmp_path / "copies")
    ids = [m.photo[-1].file_id for m in first]
    jpeg_file(matches[2].image_path, 410, 600, (0, 0, 0))  # product 2's photo changed: uploaded again
    server.fail_next("sendMediaGroup", status=400,
                     description='Bad Request: failed to send message #3 with the error message "IMAGE_PROCESS_FAILED"')

    sent = await send_album(bot, CHAT, matches, cache, photo_dir=tmp_path / "copies")

    assert len(sent) == 5 and len(server.albums(CHAT)) == 2
    second = server.albums(CHAT)[1]
    assert [i.source for i in second.items] == ["file_id", "file_id", "upload", "file_id", "file_id"]
    assert [i.file_id for n, i in enumerate(second.items) if n != 2] == [f for n, f in enumerate(ids) if n != 2]
    assert server.file(second.items[2].file_id).width == 410  # the refused original went as a JPEG copy
    assert len(list((tmp_path / "copies").iterdir())) == 1
    for m, file_id in zip(matches, ids):  # the valid ids are still cached
        if m.id != "p2":
            assert cache.get(await FileIdCache.key_for(m.id, m.image_path)) == file_id


async def test_only_a_file_id_error_forgets_that_file_id(bot: Bot, server: FakeBotApi, cache: FileIdCache, tmp_path: Path) -> None:
    matches = normal_matches(tmp_path)
    ids = [m.photo[-1].file_id for m in await send_album(bot, CHAT, matches, cache)]
    server.fail_next("sendMediaGroup", status=400, description='Bad Request: failed to send message #2 with the error '
                                                              'message "Wrong file identifier/HTTP URL specified"')
    sent = await send_album(bot, CHAT, matches, cache)
    second = server.albums(CHAT)[-1]
    assert [i.source for i in second.items] == ["file_id", "upload", "file_id", "file_id", "file_id"]
    assert [m.photo[-1].file_id for m in sent][2:] == ids[2:]
    key = await FileIdCache.key_for("p1", matches[1].image_path)
    assert cache.get(key) == sent[1].photo[-1].file_id != ids[1]  # re-learnt from the new upload

    # An unknown file_id (not attributable to one item): the file_id items are uploaded again.
    cache.put(key, "AgACAgIAAxk-no-such-file")
    assert len(await send_album(bot, CHAT, matches, cache)) == 5
    assert cache.get(key) not in (None, "AgACAgIAAxk-no-such-file")


async def test_damaged_photos_are_left_out_and_a_lone_survivor_goes_as_one_photo(
    bot: Bot, server: FakeBotApi, cache: FileIdCache, tmp_path: Path
) -> None:
    bad = [match(n, damaged_jpeg(tmp_path / f"bad{n}.jpg")) for n in range(3)]
    good = match(9, jpeg_file(tmp_path / "good.jpg"))
    sent = await send_album(bot, CHAT, [bad[0], good, bad[1]], cache, photo_dir=tmp_path / "copies")
    assert len(sent) == 1 and (sent[0].caption or "").startswith("Product 9")
    assert server.albums(CHAT) == [] and [c.ok for c in server.calls_to("sendPhoto")] == [True]
    assert await send_album(bot, CHAT, bad, cache, photo_dir=tmp_path / "copies") == []  # nothing sendable: no error
    assert len(server.calls_to("sendPhoto")) == 1 and not server.calls_to("sendMediaGroup")


async def test_album_replies_even_when_the_shoppers_photo_was_deleted(
    bot: Bot, server: FakeBotApi, cache: FileIdCache, tmp_path: Path
) -> None:
    matches = normal_matches(tmp_path)
    asked = server.user_sends_photo(Path(matches[0].image_path).read_bytes(), chat_id=CHAT)["message"]
    first = await send_album(bot, CHAT, matches, cache, reply_to=asked["message_id"])
    assert {m.reply_to_message.message_id if m.reply_to_message else None for m in first} == {asked["message_id"]}  # a reply while it exists
    again = server.user_sends_photo(Path(matches[1].image_path).read_bytes(), chat_id=CHAT)
    server.user_deletes(again)

    sent = await send_album(bot, CHAT, matches, cache, reply_to=again["message"]["message_id"])

    assert len(sent) == 5 and all(m.reply_to_message is None for m in sent)
    assert len(server.albums(CHAT)) == 2 and {i.source for i in server.albums(CHAT)[1].items} == {"file_id"}
    assert [m.photo[-1].file_id for m in sent] == [m.photo[-1].file_id for m in first]
    assert all(c.ok for c in server.calls_to("sendMediaGroup"))  # no refusal, no re-upload

    # A single photo, too; and were Telegram to answer "not found" anyway, the reply is dropped.
    server.fail_next("sendPhoto", status=400, description="Bad Request: message to be replied not found")
    (one,) = await send_album(bot, CHAT, matches[:1], cache, reply_to=again["message"]["message_id"])
    assert one.photo[-1].file_id == first[0].photo[-1].file_id and len(cache) == 5


async def test_an_album_answered_after_the_read_timeout_is_not_sent_twice(
    server: FakeBotApi, cache: FileIdCache, tmp_path: Path
) -> None:
    matches = normal_matches(tmp_path)
    short = RetryingRequest(read_timeout=0.3, connection_pool_size=4)
    async with Bot(server.token, base_url=server.base_url, base_file_url=server.base_file_url, request=short) as slow:
        # Uploads get their own, longer timeout: an album Telegram answers after 1 s arrives once.
        server.fail_next("sendMediaGroup", late=1.0)
        assert len(await send_album(slow, CHAT, matches, cache)) == 5
        assert len(server.albums(CHAT)) == 1 and len(server.calls_to("sendMediaGroup")) == 1

        # Answered later than even that: the album went out, so it is not sent again.
        server.fail_next("sendMediaGroup", late=1.5)
        with pytest.raises(TimedOut) as timed_out:
            await send_album(slow, CHAT, matches[::-1], cache, read_timeout=0.3)
        assert telegram_may_have_acted(timed_out.value)
        await server.await_for(lambda s: len(s.albums(CHAT)) == 2)
        assert len(server.calls_to("sendMediaGroup")) == 2  # no second try
        assert captions(server.albums(CHAT)[1]) == [f"Product {n}" for n in range(4, -1, -1)]


async def test_an_album_refused_by_error_answers_is_sent_again(bot: Bot, server: FakeBotApi, cache: FileIdCache, tmp_path: Path) -> None:
    matches = normal_matches(tmp_path)
    server.fail_next("sendMediaGroup", status=500)  # an error answer: nothing was sent
    server.fail_next("sendMediaGroup", retry_after=1)  # flood control: nothing was sent
    assert len(await send_album(bot, CHAT, matches, cache)) == 5
    assert len(server.albums(CHAT)) == 1 and [c.status for c in server.calls_to("sendMediaGroup")] == [500, 429, 200]
