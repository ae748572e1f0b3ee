"""What the bot says and does for each kind of update."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters, Update
from telegram.constants import ChatAction
from telegram.error import BadRequest, TelegramError
from telegram.ext import ApplicationHandlerStop, ContextTypes

from recommender import ImageDecodeError, Match
from recommender.catalogue import IMAGE_SUFFIXES

from .album import send_album
from .config import TELEGRAM_DOWNLOAD_LIMIT, Settings
from .file_id_cache import FileIdCache
from .inference import InferenceService
from .rate_limit import RateLimiter
from .retry import with_retries

log = logging.getLogger(__name__)

PAGE = 5
MAX_RESULTS = 50

HELP = (
    "👋 Send me a photo of a garment, shoe or accessory and I'll show you the 5 most similar "
    "products from our catalogue.\n\n"
    "• Send it as a photo, or as a file (JPEG/PNG/WebP) for full quality.\n"
    "• Several photos at once? I'll answer each one, in order.\n"
    "• Tap “Next 5” under an answer to see more.\n\n"
    "/help shows this message again."
)
SEND_A_PHOTO = "I can only search with pictures 🙂 Please send a photo of a garment, shoe or accessory."
TEXT_REPLY = "Send me a photo of a piece of clothing, shoes or an accessory and I'll find similar products. /help explains more."
FAILED = "Sorry, something went wrong on my side while handling that. Please try again in a moment."


@dataclass
class BotRuntime:
    """Everything handlers share, created once at start-up (``post_init``)."""

    settings: Settings
    inference: InferenceService
    file_ids: FileIdCache
    catalogue_size: int
    rate_limiter: RateLimiter
    #: query vectors of recent photos, so "Next 5" needs no second download and embedding
    sessions: "OrderedDict[str, np.ndarray]" = field(default_factory=OrderedDict)
    max_sessions: int = 5000
    _chat_tails: dict[int, asyncio.Future[None]] = field(default_factory=dict)

    def remember(self, vector: np.ndarray) -> str:
        token = secrets.token_urlsafe(9)
        self.sessions[token] = vector
        while len(self.sessions) > self.max_sessions:
            self.sessions.popitem(last=False)
        return token

    def reserve_turn(self, chat_id: int) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        """Answers to one chat go out in the order its updates arrived, however long each takes."""
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        previous = self._chat_tails.get(chat_id)
        self._chat_tails[chat_id] = mine
        return previous, mine

    def end_turn(self, chat_id: int, mine: asyncio.Future[None]) -> None:
        if not mine.done():
            mine.set_result(None)
        if self._chat_tails.get(chat_id) is mine:
            del self._chat_tails[chat_id]


def runtime_of(context: ContextTypes.DEFAULT_TYPE) -> BotRuntime:
    return context.application.bot_data["runtime"]


async def reply(message: Message, text: str, **kwargs: object) -> Message:
    return await with_retries(lambda: message.reply_text(text, **kwargs))  # type: ignore[arg-type]


async def gate(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Runs before every handler: a private bot answers only its allowed users."""
    allowed = runtime_of(context).settings.allowed_user_ids
    user = update.effective_user
    if allowed and (user is None or user.id not in allowed):
        if update.callback_query:
            await update.callback_query.answer("This is a private bot.")
        elif update.effective_message:
            await reply(update.effective_message, "Sorry, this is a private bot.")
        raise ApplicationHandlerStop


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    if update.effective_message:
        await reply(update.effective_message, HELP)


async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    if update.effective_message:
        await reply(update.effective_message, TEXT_REPLY)


async def on_other(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stickers, voice, video, non-image files...: never silence."""
    if update.effective_message:
        await reply(update.effective_message, SEND_A_PHOTO)


def _image_file(message: Message) -> tuple[str, int | None] | None:
    """(file_id, size) of the photo's largest version or of an image document."""
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


async def on_image(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A photo or image file: answer with an album of the most similar products."""
    message = update.effective_message
    if message is None:
        return
    runtime = runtime_of(context)
    found = _image_file(message)
    if found is None:
        await on_other(update, context)
        return
    chat_id = message.chat_id
    previous, mine = runtime.reserve_turn(chat_id)  # before any await: keeps arrival order
    try:
        answer = await _first_page(update, context, runtime, message, found)
        await _after(previous)
        if isinstance(answer, str):
            await reply(message, answer)
        else:
            vector, matches = answer
            await _send_page(context, runtime, message, chat_id, vector, matches, 0)
    finally:
        runtime.end_turn(chat_id, mine)


async def _first_page(
    update: Update, context: ContextTypes.DEFAULT_TYPE, runtime: BotRuntime, message: Message, found: tuple[str, int | None]
) -> str | tuple[np.ndarray, list[Match]]:
    """The photo's query vector and first page of matches, or the polite refusal to send instead."""
    chat_id = message.chat_id
    wait = runtime.rate_limiter.retry_in(update.effective_user.id if update.effective_user else chat_id)
    if wait > 0:
        return f"You're sending photos faster than I can look 🙂 Please try again in {int(wait) + 1} s."
    await _chat_action(context, chat_id)
    file_id, size = found
    limit = min(runtime.settings.max_image_bytes, TELEGRAM_DOWNLOAD_LIMIT)
    if size is not None and size > limit:
        return f"That image is too big ({size / 1e6:.1f} MB). Please send one under {limit // (1024 * 1024)} MB."
    try:
        data = await _download(context, file_id)
        vector = await runtime.inference.embed(data)
    except ImageDecodeError as exc:
        return f"I couldn't use that image: {exc} Please send a normal photo (JPEG, PNG or WebP)."
    except BadRequest as exc:  # e.g. Telegram's "file is too big" on getFile
        log.info("getFile refused for chat %s: %s", chat_id, exc)
        return "I couldn't download that image; it may be too big. Please send a smaller photo."
    return vector, await runtime.inference.search(vector, PAGE, 0)


async def on_more(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The "Next 5" button: the following page of results for the same photo."""
    query = update.callback_query
    if query is None or query.message is None or not isinstance(query.message, Message):
        return
    runtime = runtime_of(context)
    _, token, raw_offset = (query.data or "more::0").split(":", 2)
    message = query.message
    vector = runtime.sessions.get(token)
    await query.answer()
    if vector is None:
        await reply(message, "That search has expired. Please send the photo again.")
        return
    offset = int(raw_offset) if raw_offset.isdigit() else PAGE
    await _chat_action(context, message.chat_id)
    try:
        await with_retries(lambda: message.edit_reply_markup(reply_markup=None))
    except TelegramError as exc:
        log.debug("could not remove the old button: %s", exc)
    matches = await runtime.inference.search(vector, PAGE, offset)
    await _send_page(context, runtime, message, message.chat_id, vector, matches, offset, token)


async def _send_page(
    context: ContextTypes.DEFAULT_TYPE,
    runtime: BotRuntime,
    message: Message,
    chat_id: int,
    vector: np.ndarray,
    matches: list[Match],
    offset: int,
    token: str | None = None,
) -> None:
    if not matches:
        await reply(message, "That's everything similar I have in the catalogue.")
        return
    reply_to = message.message_id if offset == 0 else None
    if not await send_album(context.bot, chat_id, matches, runtime.file_ids, reply_to=reply_to):
        await reply(message, "Sorry, I found similar products but could not load their photos. Please try again later.")
        return
    next_offset = offset + len(matches)
    if next_offset < min(runtime.catalogue_size, MAX_RESULTS) and len(matches) == PAGE:
        token = token or runtime.remember(vector)
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(f"Next {PAGE} ▶", callback_data=f"more:{token}:{next_offset}")]])
        shown = f"{offset + 1}-{next_offset}"
        await with_retries(
            lambda: context.bot.send_message(
                chat_id,
                f"Products {shown} most similar to your photo. Want to see more?",
                reply_markup=keyboard,
                reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True) if offset == 0 else None,
            )
        )


async def _after(previous: asyncio.Future[None] | None) -> None:
    if previous is not None:
        await asyncio.shield(previous)


async def _chat_action(context: ContextTypes.DEFAULT_TYPE, chat_id: int) -> None:
    try:
        await context.bot.send_chat_action(chat_id, ChatAction.UPLOAD_PHOTO)
    except TelegramError as exc:  # cosmetic: never worth failing the answer for
        log.debug("send_chat_action failed: %s", exc)


async def _download(context: ContextTypes.DEFAULT_TYPE, file_id: str) -> bytes:
    telegram_file = await with_retries(lambda: context.bot.get_file(file_id))
    return bytes(await with_retries(lambda: telegram_file.download_as_bytearray()))


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log every unexpected failure with context; tell the user without details."""
    where = ""
    if isinstance(update, Update):
        chat = update.effective_chat
        where = f" (update {update.update_id}, chat {chat.id if chat else '?'})"
    log.error("Unhandled error%s: %s", where, context.error, exc_info=context.error)
    if isinstance(update, Update) and update.effective_message:
        try:
            await reply(update.effective_message, FAILED)
        except TelegramError:
            log.warning("Could not tell the user about the error%s", where)
