"""Fetch the shopper's image from Telegram: which file of a message to use, and its bytes.

A file over the size limit is refused before a single byte of it is downloaded, whether the
message states its size or only ``getFile`` does.
"""

from __future__ import annotations

from pathlib import Path

from telegram import Bot, Message

from recommender.catalogue import IMAGE_SUFFIXES
from recommender.errors import ImageTooBig


def image_file(message: Message) -> tuple[str, int | None] | None:
    """(file_id, size) of the photo's largest version or of an image document; None for anything else."""
    if message.photo:
        largest = max(message.photo, key=lambda size: (size.width * size.height, size.file_size or 0))
        return largest.file_id, largest.file_size
    document = message.document
    if document and (
        (document.mime_type or "").startswith("image/")
        or Path(document.file_name or "").suffix.lower() in IMAGE_SUFFIXES
    ):
        return document.file_id, document.file_size
    return None


async def download_image(bot: Bot, file_id: str, size: int | None, limit: int) -> bytearray:
    """The file's bytes, in one buffer (no copy); :class:`ImageTooBig` when ``getFile`` reports over ``limit``.

    ``size`` is the one the message stated (the caller refuses a stated size over the limit at once).
    """
    telegram_file = await bot.get_file(file_id)
    reported = telegram_file.file_size
    if size is None and reported is not None and reported > limit:
        raise ImageTooBig(reported, limit)
    return await telegram_file.download_as_bytearray()
