"""Send recommendations as a Telegram album, re-using uploaded photos by ``file_id``.

Telegram's refusals are handled item by item, so one bad catalogue photo never costs the shopper
the whole page:

* a photo Telegram would refuse (too big, too long, damaged) is replaced before sending by a
  conforming JPEG (:mod:`bot.telegram_photos`); one that cannot be made conforming is left out;
* a photo Telegram refuses anyway (``failed to send message #N ...: IMAGE_PROCESS_FAILED``) is
  replaced by its conforming copy, or dropped, and the rest is sent again; one remaining photo
  goes out with ``sendPhoto``;
* a cached ``file_id`` is forgotten only when Telegram's error is about a file identifier; any
  other refusal keeps the valid ids;
* the album replies to the shopper's photo with ``allow_sending_without_reply``, so a deleted
  original does not fail it (and an answer saying the original is gone is sent without a reply);
* a send that may have reached Telegram (read timeout) is never repeated (``bot/retry.py``): no
  duplicate albums.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from telegram import Bot, InputMediaPhoto, Message, ReplyParameters
from telegram.error import BadRequest

from recommender import Match

from .file_id_cache import FileIdCache
from .telegram_photos import PhotoUpload, UnusablePhoto, photo_for_upload

log = logging.getLogger(__name__)
CAPTION_LIMIT = 1024
#: Reading (and, rarely, converting) catalogue photos for upload runs on threads of its own: a few
#: slow conversions must not occupy the loop's default executor, where every chat's search runs.
_photo_readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="photo-upload")
#: Seconds to wait for Telegram's answer: it processes every uploaded photo before answering an
#: album. Waiting too little turns a slow success into a timeout.
ALBUM_READ_TIMEOUT = 60.0
#: Seconds one chunk of an upload may take to be sent (httpx's write timeout is per chunk).
ALBUM_WRITE_TIMEOUT = 60.0

_POSITION = re.compile(r"failed to send message #(\d+)", re.IGNORECASE)
_FILE_ID_ERROR = re.compile(
    r"wrong (remote )?file identifier|file_reference_|file reference|file_id_invalid|invalid file_?id|can't use file of type",
    re.IGNORECASE,
)
_PHOTO_REFUSED = re.compile(
    r"image_process_failed|photo_invalid_dimensions|photo_ext_invalid|photo_save_file_invalid|photo_invalid|"
    r"photo is too big|file is too big",
    re.IGNORECASE,
)
_REPLY_GONE = re.compile(r"(message to be )?repl(ied|y) (message )?not found", re.IGNORECASE)


def caption_for(match: Match, header: str | None = None) -> str:
    """The product's caption, under ``header`` (the album's active filter) when given."""
    text = f"{header}\n{match.caption()}" if header else match.caption()
    return text if len(text) <= CAPTION_LIMIT else text[: CAPTION_LIMIT - 1] + "…"


@dataclass
class _Item:
    """One product of the album and what is sent for it: a cached file_id or an upload."""

    match: Match
    key: str
    file_id: str | None = None
    upload: PhotoUpload | None = None
    #: a first line above the caption (the album's first item names the active filter)
    header: str | None = None

    def photo(self) -> tuple[str | bytes, str | None]:
        """What to send: (file_id, no file name) or (the upload's bytes, its file name)."""
        if self.file_id is not None:
            return self.file_id, None
        if self.upload is None:  # items without either are dropped before sending
            raise ValueError(f"product {self.match.id} has nothing to send")
        return self.upload.data, self.upload.filename

    def media(self) -> InputMediaPhoto:
        photo, filename = self.photo()
        return InputMediaPhoto(photo, caption=caption_for(self.match, self.header), filename=filename)


async def _upload_for(match: Match, photo_dir: Path | None, force_copy: bool = False) -> PhotoUpload | None:
    try:
        loop = asyncio.get_running_loop()
        call = functools.partial(photo_for_upload, match.id, match.image_path, photo_dir, force_copy=force_copy)
        return await loop.run_in_executor(_photo_readers, call)
    except UnusablePhoto as exc:
        log.warning("Catalogue photo of product %s cannot be sent (%s); leaving it out.", match.id, exc)
        return None


async def _prepare(match: Match, cache: FileIdCache, photo_dir: Path | None) -> _Item | None:
    try:
        key = await FileIdCache.key_for(match.id, match.image_path)
    except OSError as exc:
        log.warning("Catalogue photo of product %s is unreadable (%s); leaving it out.", match.id, exc)
        return None
    file_id = cache.get(key)
    if file_id:
        return _Item(match, key, file_id=file_id)
    upload = await _upload_for(match, photo_dir)
    return _Item(match, key, upload=upload) if upload is not None else None


async def send_album(
    bot: Bot,
    chat_id: int,
    matches: Sequence[Match],
    cache: FileIdCache,
    reply_to: int | None = None,
    *,
    photo_dir: Path | None = None,
    header: str | None = None,
    read_timeout: float = ALBUM_READ_TIMEOUT,
    write_timeout: float = ALBUM_WRITE_TIMEOUT,
) -> list[Message]:
    """Send the matches' photos (an album for 2-10, a single photo for one) with captions; ``header``
    heads the first photo's caption, which Telegram shows under the album.

    Returns the messages sent: fewer than the matches when some photos could not be sent, empty
    when none could. Per-photo refusals never raise; other Telegram errors do. ``photo_dir``
    keeps Telegram-ready copies of photos that need one (without it they are made each time).
    """
    items = [item for item in await asyncio.gather(*(_prepare(m, cache, photo_dir) for m in matches)) if item is not None]
    reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to is not None else None
    # Each refusal converts, re-uploads or drops an item (at most 3 steps each) or drops the reply.
    for _ in range(3 * len(items) + 2):
        if not items:
            return []
        for position, item in enumerate(items):  # the first photo still sent heads the album
            item.header = header if position == 0 else None
        try:
            messages = await _send(bot, chat_id, items, reply, read_timeout, write_timeout)
        except BadRequest as exc:
            items, reply = await _recover(exc, items, reply, cache, photo_dir)
            continue
        for item, message in zip(items, messages):
            if message.photo:
                cache.put(item.key, message.photo[-1].file_id)
        await cache.save()
        return messages
    log.error("Telegram kept refusing the album for chat %s; giving up.", chat_id)
    return []


async def _send(
    bot: Bot,
    chat_id: int,
    items: list[_Item],
    reply: ReplyParameters | None,
    read_timeout: float,
    write_timeout: float,
) -> list[Message]:
    if len(items) == 1:
        item = items[0]
        photo, filename = item.photo()
        message = await bot.send_photo(
            chat_id, photo, caption=caption_for(item.match, item.header), filename=filename, reply_parameters=reply,
            read_timeout=read_timeout, write_timeout=write_timeout,
        )
        return [message]
    media = [item.media() for item in items]
    return list(
        await bot.send_media_group(chat_id, media, reply_parameters=reply, read_timeout=read_timeout, write_timeout=write_timeout)
    )


async def _recover(
    exc: BadRequest, items: list[_Item], reply: ReplyParameters | None, cache: FileIdCache, photo_dir: Path | None
) -> tuple[list[_Item], ReplyParameters | None]:
    """The items (and reply) to try next after Telegram refused the send; re-raises what no item caused."""
    text = exc.message
    if reply is not None and _REPLY_GONE.search(text):
        log.info("The shopper's message is gone; sending the photos without a reply.")
        return items, None
    numbered = _POSITION.search(text)
    position = int(numbered.group(1)) - 1 if numbered else (0 if len(items) == 1 else None)
    if position is not None and not 0 <= position < len(items):
        raise exc
    if _FILE_ID_ERROR.search(text):
        suspects = [items[position]] if position is not None else items
        suspects = [item for item in suspects if item.file_id is not None]
        if not suspects:
            raise exc
        for item in suspects:
            log.warning("Telegram refused the cached file_id of product %s (%s); uploading it again.", item.match.id, text)
            cache.forget(item.key)
            item.file_id = None
            item.upload = await _upload_for(item.match, photo_dir)
    elif _PHOTO_REFUSED.search(text):
        if position is not None:
            suspects = [items[position]]
        else:  # not told which: every original sent as it is becomes its conforming copy
            suspects = [item for item in items if item.file_id is None and item.upload is not None and not item.upload.converted]
            if not suspects:
                raise exc
        for item in suspects:
            if item.file_id is None and item.upload is not None and not item.upload.converted:
                log.warning("Telegram refused the photo of product %s (%s); sending a converted copy.", item.match.id, text)
                item.upload = await _upload_for(item.match, photo_dir, force_copy=True)
            else:  # a copy (or a photo known by file_id) refused: leave it out, keep its file_id
                log.warning("Telegram refused the photo of product %s (%s); leaving it out.", item.match.id, text)
                item.file_id, item.upload = None, None
    elif numbered and position is not None:  # another refusal of one item: send the others
        item = items[position]
        log.warning("Telegram refused product %s in the album (%s); leaving it out.", item.match.id, text)
        item.file_id, item.upload = None, None
    else:
        raise exc
    return [item for item in items if item.file_id is not None or item.upload is not None], reply
