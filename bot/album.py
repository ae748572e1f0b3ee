"""Send recommendations as a Telegram album, re-using uploaded photos by ``file_id``."""

from __future__ import annotations

import logging
from typing import Sequence

import aiofiles
from telegram import Bot, InputMediaPhoto, Message
from telegram.error import BadRequest

from recommender import Match

from .file_id_cache import FileIdCache
from .retry import with_retries

log = logging.getLogger(__name__)
CAPTION_LIMIT = 1024


def caption_for(match: Match) -> str:
    text = match.caption()
    return text if len(text) <= CAPTION_LIMIT else text[: CAPTION_LIMIT - 1] + "…"


async def _media_for(match: Match, cache: FileIdCache, use_cache: bool) -> tuple[InputMediaPhoto, str] | None:
    try:
        key = await FileIdCache.key_for(match.id, match.image_path)
        file_id = cache.get(key) if use_cache else None
        if file_id:
            return InputMediaPhoto(file_id, caption=caption_for(match)), key
        async with aiofiles.open(match.image_path, "rb") as handle:
            data = await handle.read()
    except OSError as exc:
        log.warning("Catalogue photo of product %s is unreadable (%s); leaving it out.", match.id, exc)
        return None
    return InputMediaPhoto(data, caption=caption_for(match), filename=f"{match.id}{match.image_path.suffix or '.jpg'}"), key


async def send_album(bot: Bot, chat_id: int, matches: Sequence[Match], cache: FileIdCache, reply_to: int | None = None) -> list[Message]:
    """Send the matches' photos (an album for 2-10, a single photo for one) with captions."""
    for use_cache in (True, False):
        prepared = [item for item in [await _media_for(m, cache, use_cache) for m in matches] if item is not None]
        if not prepared:
            return []
        media = [item[0] for item in prepared]
        try:
            if len(media) == 1:
                single = media[0]
                messages = [
                    await with_retries(
                        lambda: bot.send_photo(chat_id, single.media, caption=single.caption, reply_to_message_id=reply_to)
                    )
                ]
            else:
                messages = list(
                    await with_retries(lambda: bot.send_media_group(chat_id, media, reply_to_message_id=reply_to))
                )
        except BadRequest as exc:
            if use_cache and any(isinstance(m.media, str) for m in media):
                # A stale file_id (e.g. the cache came from another bot): forget them and upload.
                log.warning("Album by file_id refused (%s); uploading the photos instead.", exc)
                for _, key in prepared:
                    cache.forget(key)
                continue
            raise
        for (_, key), message in zip(prepared, messages):
            if message.photo:
                cache.put(key, message.photo[-1].file_id)
        await cache.save()
        return messages
    return []
