"""What the bot says and does for each kind of update.

Handlers only decide: they check the rate limits and hand the answer to the chat's queue
(``bot/chat_queue.py``), which sends it after that chat's earlier answers. A handler never waits
for Telegram, so python-telegram-bot's update slots are free for every other chat. Refusals are
immediate, and a chat gets one "slow down" notice per burst of refused messages, not one each.
Every reply tolerates a deleted original (``allow_sending_without_reply``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from telegram import Bot, CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters, Update
from telegram.constants import ChatAction, ChatType
from telegram.error import BadRequest, NetworkError, TelegramError
from telegram.ext import ApplicationHandlerStop, ContextTypes

from recommender import ImageDecodeError, Match
from recommender.catalogue import IMAGE_SUFFIXES

from .album import send_album
from .chat_queue import ChatQueues
from .config import TELEGRAM_DOWNLOAD_LIMIT, Settings
from .file_id_cache import FileIdCache
from .inference import InferenceService
from .rate_limit import BurstNotices, RateLimiter
from .retry import send_once, telegram_may_have_acted, with_retries
from .sessions import Sessions

log = logging.getLogger(__name__)

PAGE = 5
MAX_RESULTS = 50
#: Replies to texts, stickers, commands... per user and minute: cheap for us, not for Telegram.
CHATTER_PER_MINUTE = 10
#: Answers waiting per chat: room for a full minute of chatter replies plus a photo or two, so a
#: photo sent after ten quick texts is still answered (a 10-photo album is rate-limited anyway).
CHAT_BACKLOG = CHATTER_PER_MINUTE + 6
#: Download + decode + embed + search of one photo; past this the shopper is asked to retry, so a
#: Telegram back-off never holds an analysis slot for minutes.
ANALYSIS_TIMEOUT_S = 45.0

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
EXPIRED = "That search has expired. Please send the photo again."
TOO_FAST_PHOTOS = "You're sending photos faster than I can look 🙂 I'll skip these; please try again in {seconds} s."
TOO_MANY_WAITING = (
    "You're sending photos faster than I can look 🙂 I'm still on your earlier ones and will skip "
    "the rest; send them again once I've answered."
)
TOO_FAST_MESSAGES = "You're sending messages faster than I can answer 🙂 I'll stay quiet for {seconds} s."
BUSY = "Telegram is slow to hand me your photo right now. Please try again in a minute."

#: "Next 5" callback data: ``more:<session token>:<offset>``, ASCII only.
_MORE = re.compile(r"more:([A-Za-z0-9_-]{8,32}):([0-9]{1,3})")


class ImageTooBig(Exception):
    """The photo is over the download limit (known before downloading it)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"That image is too big ({size / 1e6:.1f} MB). Please send one under {limit // (1024 * 1024)} MB.")


@dataclass
class BotRuntime:
    """Everything handlers share, created once at start-up (``post_init``)."""

    settings: Settings
    inference: InferenceService
    file_ids: FileIdCache
    catalogue_size: int
    #: photo searches and "Next 5" pages per user (RATE_LIMIT_PER_MINUTE)
    rate_limiter: RateLimiter
    queues: ChatQueues
    #: replies to anything else per user
    chatter: RateLimiter = field(default_factory=lambda: RateLimiter(CHATTER_PER_MINUTE))
    notices: BurstNotices = field(default_factory=BurstNotices)
    sessions: Sessions = field(default_factory=Sessions)
    #: photos being downloaded and analysed at once, over all chats (MAX_CONCURRENT_UPDATES)
    analysis: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(64))


def runtime_of(context: ContextTypes.DEFAULT_TYPE) -> BotRuntime:
    return context.application.bot_data["runtime"]


def reply_parameters(message: Message, quote: bool | None = None) -> ReplyParameters | None:
    """Quote ``message`` (by default only in groups), and still answer if it has been deleted."""
    if quote is None:
        quote = message.chat.type != ChatType.PRIVATE
    return ReplyParameters(message.message_id, allow_sending_without_reply=True) if quote else None


async def reply(bot: Bot, message: Message, text: str, quote: bool | None = None, **kwargs: object) -> Message:
    return await send_once(
        lambda: bot.send_message(message.chat_id, text, reply_parameters=reply_parameters(message, quote), **kwargs)  # type: ignore[arg-type]
    )


def _user_id(update: Update, message: Message) -> int:
    return update.effective_user.id if update.effective_user else message.chat_id


def _tell_once(context: ContextTypes.DEFAULT_TYPE, runtime: BotRuntime, chat_id: int, text: str) -> None:
    """A refusal: the chat's first of this burst is told at once (outside its queue), the rest are dropped."""
    if runtime.notices.should_tell(chat_id):
        runtime.queues.spawn(send_once(lambda: context.bot.send_message(chat_id, text)), chat_id)
    else:
        log.debug("Dropped a message from chat %s (burst already told to slow down).", chat_id)


def _queue_answer(
    update: Update, context: ContextTypes.DEFAULT_TYPE, runtime: BotRuntime, message: Message, job: Callable[[], Awaitable[None]]
) -> None:
    if not runtime.queues.submit(message.chat_id, job, update):
        _tell_once(context, runtime, message.chat_id, TOO_MANY_WAITING)


def _chatter(update: Update, context: ContextTypes.DEFAULT_TYPE, text: str) -> None:
    """A cheap text reply, in order with the chat's other answers, within the chatter limit."""
    message = update.effective_message
    if message is None:
        return
    runtime = runtime_of(context)
    if _within_limit(context, runtime, runtime.chatter, update, message, TOO_FAST_MESSAGES):
        _queue_answer(update, context, runtime, message, lambda: reply(context.bot, message, text))


def _within_limit(
    context: ContextTypes.DEFAULT_TYPE, runtime: BotRuntime, limiter: RateLimiter, update: Update, message: Message, too_fast: str
) -> bool:
    """Whether the sender may have an answer now; if not, the burst's one notice says when."""
    wait = limiter.retry_in(_user_id(update, message))
    if wait > 0:
        _tell_once(context, runtime, message.chat_id, too_fast.format(seconds=int(wait) + 1))
        return False
    return True


async def gate(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Runs before every handler: a private bot answers only its allowed users."""
    runtime = runtime_of(context)
    allowed = runtime.settings.allowed_user_ids
    user = update.effective_user
    if allowed and (user is None or user.id not in allowed):
        if update.callback_query:
            runtime.queues.spawn(_answer_query(update.callback_query, "This is a private bot."))
        elif update.effective_message:
            _chatter(update, context, "Sorry, this is a private bot.")
        raise ApplicationHandlerStop


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    _chatter(update, context, HELP)


async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    _chatter(update, context, TEXT_REPLY)


async def on_other(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stickers, voice, video, non-image files...: never silence (within the chatter limit)."""
    _chatter(update, context, SEND_A_PHOTO)


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
    found = _image_file(message)
    if found is None:
        await on_other(update, context)
        return
    runtime = runtime_of(context)
    if _within_limit(context, runtime, runtime.rate_limiter, update, message, TOO_FAST_PHOTOS):
        _queue_answer(update, context, runtime, message, lambda: _answer_photo(context, runtime, message, found))


async def _answer_photo(context: ContextTypes.DEFAULT_TYPE, runtime: BotRuntime, message: Message, found: tuple[str, int | None]) -> None:
    answer = await _first_page(context, runtime, message, found)
    if isinstance(answer, str):
        await reply(context.bot, message, answer, quote=True)
        return
    vector, matches = answer
    await _send_page(context, runtime, message, vector, matches, 0)


async def _first_page(
    context: ContextTypes.DEFAULT_TYPE, runtime: BotRuntime, message: Message, found: tuple[str, int | None]
) -> str | tuple[np.ndarray, list[Match]]:
    """The photo's query vector and first page of matches, or the polite refusal to send instead."""
    chat_id = message.chat_id
    await _chat_action(context, chat_id)
    file_id, size = found
    limit = min(runtime.settings.max_image_bytes, TELEGRAM_DOWNLOAD_LIMIT)
    if size is not None and size > limit:
        return str(ImageTooBig(size, limit))
    try:
        # The wait for a slot counts too: behind a crowd of slow downloads the shopper hears "busy",
        # not silence.
        async with asyncio.timeout(ANALYSIS_TIMEOUT_S), runtime.analysis:
            data = await download_image(context.bot, file_id, size, limit)
            vector = await runtime.inference.embed(data)
            del data
            return vector, await runtime.inference.search(vector, PAGE, 0)
    except ImageTooBig as exc:
        return str(exc)
    except ImageDecodeError as exc:
        return f"I couldn't use that image: {exc} Please send a normal photo (JPEG, PNG or WebP)."
    except BadRequest as exc:  # e.g. Telegram's "file is too big" on getFile
        log.info("getFile refused for chat %s: %s", chat_id, exc)
        return "I couldn't download that image; it may be too big. Please send a smaller photo."
    except TimeoutError:
        log.warning("Analysing a photo of chat %s took over %.0fs; asked to retry.", chat_id, ANALYSIS_TIMEOUT_S)
        return BUSY
    except NetworkError as exc:  # getFile or the download failed after its retries (not a refusal)
        log.warning("Could not download a photo of chat %s (%s: %s); asked to retry.", chat_id, type(exc).__name__, exc)
        return BUSY


async def download_image(bot: Bot, file_id: str, size: int | None, limit: int) -> bytearray:
    """The file's bytes, in one buffer (no copy), refused before downloading when over ``limit``.

    A message need not carry the file's size; ``getFile`` reports it, so a huge file is refused
    before a single byte of it is fetched.
    """
    telegram_file = await with_retries(lambda: bot.get_file(file_id))
    reported = telegram_file.file_size
    if size is None and reported is not None and reported > limit:
        raise ImageTooBig(reported, limit)
    return await with_retries(lambda: telegram_file.download_as_bytearray())


def parse_more(data: str | None) -> tuple[str, int] | None:
    """(session token, offset) of a "Next 5" button, or None for anything malformed or forged."""
    match = _MORE.fullmatch(data or "")
    if match is None:
        return None
    offset = int(match.group(2))
    if offset <= 0 or offset % PAGE or offset >= MAX_RESULTS:
        return None
    return match.group(1), offset


async def _answer_query(query: CallbackQuery, text: str | None = None) -> None:
    """Stop the button's spinner; a query Telegram considers too old is not worth an error."""
    try:
        await query.answer(text)
    except TelegramError as exc:
        log.debug("Could not answer a button press (%s); going on.", exc)


async def on_more(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The "Next 5" button: the following page of results for the same photo."""
    query = update.callback_query
    if query is None:
        return
    runtime = runtime_of(context)
    if not isinstance(query.message, Message):  # a message too old for Telegram to show the bot
        runtime.queues.spawn(_answer_query(query, EXPIRED))
        return
    message = query.message
    parsed = parse_more(query.data)
    vector = runtime.sessions.get(parsed[0]) if parsed else None
    if parsed is None or vector is None:
        log.info("Expired or malformed button %r in chat %s.", query.data, message.chat_id)
        runtime.queues.spawn(_answer_query(query))
        _chatter(update, context, EXPIRED)
        return
    wait = runtime.rate_limiter.retry_in(_user_id(update, message))
    if wait > 0:
        text = TOO_FAST_PHOTOS.format(seconds=int(wait) + 1) if runtime.notices.should_tell(message.chat_id) else None
        runtime.queues.spawn(_answer_query(query, text))
        return
    runtime.queues.spawn(_answer_query(query))
    token, offset = parsed
    _queue_answer(update, context, runtime, message, lambda: _next_page(context, runtime, message, vector, token, offset))


async def _next_page(
    context: ContextTypes.DEFAULT_TYPE, runtime: BotRuntime, message: Message, vector: np.ndarray, token: str, offset: int
) -> None:
    await _chat_action(context, message.chat_id)
    try:
        await with_retries(lambda: message.edit_reply_markup(reply_markup=None))
    except TelegramError as exc:
        log.debug("could not remove the old button: %s", exc)
    async with runtime.analysis:
        matches = await runtime.inference.search(vector, PAGE, offset)
    await _send_page(context, runtime, message, vector, matches, offset, token)


async def _send_page(
    context: ContextTypes.DEFAULT_TYPE,
    runtime: BotRuntime,
    message: Message,
    vector: np.ndarray,
    matches: list[Match],
    offset: int,
    token: str | None = None,
) -> None:
    chat_id = message.chat_id
    first = offset == 0
    if not matches:
        await reply(context.bot, message, "That's everything similar I have in the catalogue.", quote=first)
        return
    # Albums answer the shopper's photo; a deleted photo is fine (the bot's Defaults allow it).
    reply_to = message.message_id if first else None
    try:
        sent = await send_album(
            context.bot, chat_id, matches, runtime.file_ids, reply_to=reply_to, photo_dir=runtime.settings.telegram_photo_dir
        )
    except TelegramError as exc:
        if not telegram_may_have_acted(exc):
            raise
        # Telegram may have delivered the album and answered too late: sending it again could
        # show the shopper the same album twice, and "something went wrong" under it would be false.
        log.warning("Album for chat %s may or may not have arrived (%s: %s); not sending it again.", chat_id, type(exc).__name__, exc)
        sent = None
    if sent is not None and not sent:
        await reply(context.bot, message, "Sorry, I found similar products but could not load their photos. Please try again later.", quote=first)
        return
    next_offset = offset + len(matches)
    if next_offset < min(runtime.catalogue_size, MAX_RESULTS) and len(matches) == PAGE:
        token = token or runtime.sessions.remember(vector)
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(f"Next {PAGE} ▶", callback_data=f"more:{token}:{next_offset}")]])
        shown = f"{offset + 1}-{next_offset}"
        await reply(context.bot, message, f"Products {shown} most similar to your photo. Want to see more?", quote=first, reply_markup=keyboard)


async def _chat_action(context: ContextTypes.DEFAULT_TYPE, chat_id: int) -> None:
    try:
        await context.bot.send_chat_action(chat_id, ChatAction.UPLOAD_PHOTO)
    except TelegramError as exc:  # cosmetic: never worth failing the answer for
        log.debug("send_chat_action failed: %s", exc)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log every unexpected failure with context; tell the user without details."""
    where = ""
    if isinstance(update, Update):
        chat = update.effective_chat
        where = f" (update {update.update_id}, chat {chat.id if chat else '?'})"
    log.error("Unhandled error%s: %s", where, context.error, exc_info=context.error)
    if isinstance(update, Update) and update.effective_message:
        message = update.effective_message
        try:
            await asyncio.wait_for(reply(context.bot, message, FAILED), timeout=30)
        except (TelegramError, TimeoutError):
            log.warning("Could not tell the user about the error%s", where)
