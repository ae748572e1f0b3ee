"""Fetching the shopper's image (``bot/downloads.py``): which file of a message, and no download of a file
over the limit, whether the message or only getFile states its size."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from telegram import Bot, Message

from bot.downloads import ImageTooBig, download_image, image_file
from standin_bot_api import FakeBotApi


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


async def test_the_largest_photo_or_an_image_document_is_chosen() -> None:
    with FakeBotApi() as api:
        async with Bot(api.token, base_url=api.base_url, base_file_url=api.base_file_url) as bot:

            def message(update: dict) -> Message:
                return Message.de_json(update["message"], bot)

            photo = message(api.user_sends_photo(jpeg(1280, 960), chat_id=5))
            largest = max(photo.photo, key=lambda size: size.width * size.height)
            assert len(photo.photo) > 1 and image_file(photo) == (largest.file_id, largest.file_size)
            by_type = message(api.user_sends_document(jpeg(64, 64), "no-suffix", "image/jpeg", chat_id=5))
            by_suffix = message(api.user_sends_document(jpeg(64, 64), "look.webp", "application/octet-stream", chat_id=5))
            for document in (by_type, by_suffix):
                assert document.document is not None
                assert image_file(document) == (document.document.file_id, document.document.file_size)
            assert image_file(message(api.user_sends_document(b"%PDF-1.4", "catalogue.pdf", "application/pdf", chat_id=5))) is None
            assert image_file(message(api.user_sends_text("hello", chat_id=5))) is None


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()
