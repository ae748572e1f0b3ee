"""What the bot says and does for each kind of update.

Handlers only decide: they check the rate limits and hand the answer to the chat's queue
(``bot/chat_queue.py``), which sends it after that chat's earlier answers. A handler never waits
for Telegram, so python-telegram-bot's update slots are free for every other chat. Refusals are
immediate, and a chat gets one "slow down" notice per burst of refused messages, not one each.
Every reply tolerates a deleted original (``allow_sending_without_reply``). Retries are not a
handler's business: the bot's request object applies one policy to every call (``bot/retry.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace

from telegram import Bot, CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters, Update
from telegram.constants import ChatAction, ChatType
from telegram.error import BadRequest, NetworkError, TelegramError
from telegram.ext import ApplicationHandlerStop, InvalidCallbackData

from recommender import ImageDecodeError, Match, Query
from recommender.errors import ExpiredSearchError, FilterError, SearchUnavailableError
from recommender.filter_words import Named
from recommender.filters import Where

from .album import send_album
from .config import TELEGRAM_DOWNLOAD_LIMIT
from .context import BotContext, BotRuntime
from .downloads import ImageTooBig, download_image, image_file
from .inference import Answer
from .metrics import REFUSAL_REASONS
from .pages import PAGE, NextPage, next_page
from .rate_limit import RateLimiter
from .retry import telegram_may_have_acted
from .shopper_filters import CLEAR, GENDER, describe, filter_rows

log = logging.getLogger(__name__)

#: Replies to texts, stickers, commands... per user and minute: cheap for us, not for Telegram.
CHATTER_PER_MINUTE = 10
#: Answers waiting per chat: room for a full minute of chatter replies plus a photo or two, so a
#: photo sent after ten quick texts is still answered (a 10-photo album is rate-limited anyway).
CHAT_BACKLOG = CHATTER_PER_MINUTE + 6
#: An answer still in the making after this many seconds shows "sending a photo…" in the chat.
CHAT_ACTION_AFTER_S = 1.0
#: Download + decode + embed + search of one photo; past this the shopper is asked to retry, so a
#: Telegram back-off never holds an analysis slot for minutes.
ANALYSIS_TIMEOUT_S = 45.0

HELP = (
    "👋 Send me a photo of a garment, shoe or accessory and I'll show you the 5 most similar "
    "products from our catalogue.\n\n"
    "• Send it as a photo, or as a file (JPEG/PNG/WebP) for full quality.\n"
    "• Several photos at once? I'll answer each one, in order.\n"
    "• Tap “Next 5” under an answer to see more.\n"
    "• Narrow it down: add words to the photo's caption (“women”, “red”, “shoes”), or tap the buttons "
    "under an answer (a gender, or the same kind of product only).\n"
    "• In a group, mention me in a photo's caption, reply to me, or reply to a photo with /similar.\n\n"
    "/help shows this message again."
)
SEND_A_PHOTO = "I can only search with pictures 🙂 Please send a photo of a garment, shoe or accessory."
TEXT_REPLY = "Send me a photo of a piece of clothing, shoes or an accessory and I'll find similar products. /help explains more."
FAILED = "Sorry, something went wrong on my side while handling that. Please try again in a moment."
EXPIRED = "That search has expired. Please send the photo again."
PRIVATE = "Sorry, this is a private bot."
PRIVATE_BUTTON = "This is a private bot."
TOO_FAST_PHOTOS = "You're sending photos faster than I can look 🙂 I'll skip these; please try again in {seconds} s."
TOO_MANY_WAITING = (
    "You're sending photos faster than I can look 🙂 I'm still on your earlier ones and will skip "
    "the rest; send them again once I've answered."
)
TOO_FAST_MESSAGES = "You're sending messages faster than I can answer 🙂 I'll stay quiet for {seconds} s."
BUSY = "Telegram is slow to hand me your photo right now. Please try again in a minute."
SEARCH_DOWN = "My catalogue search is not answering right now. Please try again in a minute."
SIMILAR_HOW = "Reply to a photo with /similar, or send a photo with /similar as its caption, and I'll find similar products."
NOTHING_MORE = "That's everything similar I have in the catalogue."
NO_MATCH = "Nothing in the catalogue matches {filter}. Tap below to see all products instead."
NO_PHOTOS = "Sorry, I found similar products but could not load their photos. Please try again later."

Job = Callable[[], Awaitable[None]]


# ---------------------------------------------------------------------------------- replies
def reply_parameters(message: Message, quote: bool | None = None) -> ReplyParameters | None:
    """Quote ``message`` (by default only in groups), and still answer if it has been deleted."""
    if quote is None:
        quote = message.chat.type != ChatType.PRIVATE
    return ReplyParameters(message.message_id, allow_sending_without_reply=True) if quote else None


async def reply(
    bot: Bot, message: Message, text: str, quote: bool | None = None, reply_markup: InlineKeyboardMarkup | None = None
) -> Message:
    return await bot.send_message(message.chat_id, text, reply_parameters=reply_parameters(message, quote), reply_markup=reply_markup)


async def _answer_query(query: CallbackQuery, text: str | None = None) -> None:
    """Stop the button's spinner; a query Telegram considers too old is not worth an error."""
    try:
        await query.answer(text)
    except TelegramError as exc:
        log.debug("Could not answer a button press (%s); going on.", exc)


async def _chat_action(context: BotContext, chat_id: int) -> None:
    try:
        await context.bot.send_chat_action(chat_id, ChatAction.UPLOAD_PHOTO)
    except TelegramError as exc:  # cosmetic: never worth failing the answer for
        log.debug("send_chat_action failed: %s", exc)


@contextlib.asynccontextmanager
async def _busy_status(context: BotContext, chat_id: int) -> AsyncIterator[None]:
    """Show "sending a photo…" in the chat once an answer has taken :data:`CHAT_ACTION_AFTER_S`.

    Most albums arrive sooner, and then the status would be gone before anyone saw it: one of the
    four Bot API calls of a photo's answer saved (getFile, sendMediaGroup and sendMessage remain),
    for Telegram's limits and for the bot's CPU."""

    async def later() -> None:
        await asyncio.sleep(CHAT_ACTION_AFTER_S)
        await _chat_action(context, chat_id)

    status = asyncio.create_task(later())
    try:
        yield
    finally:
        status.cancel()


# ---------------------------------------------------------------------------------- limits
def _user_id(update: Update, message: Message) -> int:
    return update.effective_user.id if update.effective_user else message.chat_id


def _tell_once(context: BotContext, chat_id: int, text: str) -> None:
    """A refusal: the chat's first of this burst is told at once (outside its queue), the rest are dropped."""
    runtime = context.runtime
    if runtime.notices.should_tell(chat_id):
        runtime.queues.spawn(context.bot.send_message(chat_id, text), chat_id)
    else:
        log.debug("Dropped a message from chat %s (burst already told to slow down).", chat_id)


def _queue_answer(update: Update, context: BotContext, message: Message, job: Job, photo: bool = False) -> None:
    if not context.runtime.queues.submit(message.chat_id, job, update):
        if photo:
            context.runtime.metrics.refused("too_many_waiting")
        _tell_once(context, message.chat_id, TOO_MANY_WAITING)


def _within_limit(context: BotContext, limiter: RateLimiter, update: Update, message: Message, too_fast: str) -> bool:
    """Whether the sender may have an answer now; if not, the burst's one notice says when."""
    wait = limiter.retry_in(_user_id(update, message))
    if wait > 0:
        _tell_once(context, message.chat_id, too_fast.format(seconds=int(wait) + 1))
        return False
    return True


def _chatter(update: Update, context: BotContext, text: str) -> None:
    """A cheap text reply, in order with the chat's other answers, within the chatter limit."""
    message = update.effective_message
    if message is None:
        return
    if _within_limit(context, context.runtime.chatter, update, message, TOO_FAST_MESSAGES):

        async def say() -> None:
            await reply(context.bot, message, text)

        _queue_answer(update, context, message, say)


# ---------------------------------------------------------------------------------- handlers
async def gate(update: Update, context: BotContext) -> None:
    """Runs before every handler: a private bot answers only its allowed users."""
    runtime = context.runtime
    runtime.metrics.last_update = time.time()
    allowed = runtime.settings.allowed_user_ids
    user = update.effective_user
    if allowed and (user is None or user.id not in allowed):
        if update.callback_query:
            runtime.queues.spawn(_answer_query(update.callback_query, PRIVATE_BUTTON))
        elif update.effective_message:
            _chatter(update, context, PRIVATE)
        raise ApplicationHandlerStop


async def start(update: Update, context: BotContext) -> None:
    _chatter(update, context, HELP)


async def admin(update: Update, context: BotContext) -> None:
    """``/stats`` and ``/reload`` for ADMIN_USER_IDS; anyone else gets the help, as for any command."""
    message, user, runtime = update.effective_message, update.effective_user, context.runtime
    if message is None or user is None or user.id not in runtime.settings.admin_user_ids:
        _chatter(update, context, HELP)
        return
    command = (message.text or "").split()[0].lstrip("/").split("@")[0].lower()

    async def answer() -> None:
        if command == "reload" and runtime.reloader is not None:
            text = await runtime.reloader.reload(f"/reload by admin {user.id}")
        else:
            text = stats_text(runtime)
        await reply(context.bot, message, text)

    runtime.queues.spawn(answer(), message.chat_id)


def stats_text(runtime: BotRuntime) -> str:
    """The figures /metrics serves, as an admin reads them in a chat."""
    registry = runtime.metrics.registry

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    albums, refused = value("lookalike_photos_total", outcome="album"), value("lookalike_photos_total", outcome="refused")
    reasons = [(reason, value("lookalike_refusals_total", reason=reason)) for reason in REFUSAL_REASONS]
    timed = value("lookalike_photo_to_album_seconds_count")
    passes = value("lookalike_forward_pass_photos_count")
    manifest = runtime.inference.recommender.manifest
    lines = [
        f"Catalogue: {runtime.catalogue_size} products (search {manifest.backend}, index generation {runtime.inference.generation}).",
        f"Photos: {albums:.0f} answered with an album, {refused:.0f} refused.",
        "Refusals: " + (", ".join(f"{reason} {count:.0f}" for reason, count in reasons if count) or "none") + ".",
        f"Photo → album: {1000 * value('lookalike_photo_to_album_seconds_sum') / timed:.0f} ms on average." if timed else "Photo → album: no album yet.",
        f"Forward passes: {passes:.0f}, {value('lookalike_forward_pass_photos_sum') / passes:.1f} photos each." if passes else "Forward passes: none yet.",
        f"Album photos: {runtime.file_ids.hits} sent by cached file_id, {runtime.file_ids.misses} uploaded.",
        f"Filtered searches: {value('lookalike_filtered_searches_total', source='caption'):.0f} by caption words, "
        f"{value('lookalike_filtered_searches_total', source='button'):.0f} by buttons.",
        f"Up {(time.time() - runtime.metrics.started) / 3600:.1f} h, updates by {runtime.settings.bot_mode}.",
    ]
    return "\n".join(lines)


async def on_command(update: Update, context: BotContext) -> None:
    """Any other command gets the help; in a group only one addressed to this bot (``/cmd@thisbot``),
    never another bot's."""
    message = update.effective_message
    if message is not None and _not_for_bot(message, context):
        return
    _chatter(update, context, HELP)


async def on_text(update: Update, context: BotContext) -> None:
    message = update.effective_message
    if message is not None and _not_for_bot(message, context):
        return  # group chatter is not for the bot
    _chatter(update, context, TEXT_REPLY)


async def on_other(update: Update, context: BotContext) -> None:
    """Stickers, voice, video, non-image files...: never silence (within the chatter limit), except in groups."""
    message = update.effective_message
    if message is not None and _not_for_bot(message, context):
        return
    _chatter(update, context, SEND_A_PHOTO)


def _not_for_bot(message: Message, context: BotContext) -> bool:
    """A group message that does not address the bot: it gets no answer at all."""
    return message.chat.type in (ChatType.GROUP, ChatType.SUPERGROUP) and not _addressed(message, context)


def _addressed(message: Message, context: BotContext) -> bool:
    """In a group the bot answers only what is meant for it, so it never floods the chat: a mention of
    it, a reply to one of its messages, or ``/similar`` (a photo's caption, or a reply to a photo)."""
    text = (message.caption or message.text or "").strip()
    username = context.bot.username
    if username and f"@{username.lower()}" in text.lower():
        return True
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == context.bot.id:
        return True
    first = text.split()[0].lower() if text else ""
    return first.split("@")[0] == "/similar"


async def similar(update: Update, context: BotContext) -> None:
    """``/similar`` replying to a photo (or as a photo's caption): that photo's album, in groups and in private."""
    message = update.effective_message
    if message is None:
        return
    target = message.reply_to_message if image_file(message) is None else message
    if target is None or image_file(target) is None:
        _chatter(update, context, SIMILAR_HOW)
        return
    # "/similar women" narrows the answer, whether it is the photo's caption or a reply to the photo.
    await _photo(update, context, target, message.text or message.caption)


async def on_image(update: Update, context: BotContext) -> None:
    """A photo or image file: answer with an album of the most similar products (in a group: when asked)."""
    message = update.effective_message
    if message is None:
        return
    if _not_for_bot(message, context):
        log.debug("A photo in group %s not meant for the bot.", message.chat_id)
        return
    await _photo(update, context, message, message.caption)


async def _photo(update: Update, context: BotContext, message: Message, words: str | None) -> None:
    """Answer ``message``'s photo (the update's own message, or the one a ``/similar`` replies to);
    ``words`` (its caption, or the command's text) may name a filter."""
    found = image_file(message)
    if found is None:
        await on_other(update, context)
        return
    received = time.monotonic()
    if _within_limit(context, context.runtime.rate_limiter, update, message, TOO_FAST_PHOTOS):
        _queue_answer(update, context, message, lambda: _answer_photo(context, message, found, received, words), photo=True)
    else:
        context.runtime.metrics.refused("rate_limited")


async def on_next_page(update: Update, context: BotContext) -> None:
    """A "Next 5" button (its callback data is a :class:`NextPage`): the following page for the same photo."""
    query = update.callback_query
    if query is None or not isinstance(query.data, NextPage):
        return
    runtime = context.runtime
    if not isinstance(query.message, Message):  # a message too old for Telegram to show the bot
        runtime.queues.spawn(_answer_query(query, EXPIRED))
        return
    message, page = query.message, query.data
    wait = runtime.rate_limiter.retry_in(_user_id(update, message))
    if wait > 0:
        runtime.metrics.refused("rate_limited", photo=False)
        text = TOO_FAST_PHOTOS.format(seconds=int(wait) + 1) if runtime.notices.should_tell(message.chat_id) else None
        runtime.queues.spawn(_answer_query(query, text))
        return
    runtime.queues.spawn(_answer_query(query))
    _queue_answer(update, context, message, lambda: _answer_next_page(context, message, page))


async def on_expired_button(update: Update, context: BotContext) -> None:
    """Any other button press: its Next-5 state is gone or never existed. The shopper is told so.

    python-telegram-bot hands such data over as ``InvalidCallbackData``: a button forgotten by the
    bounded cache or by a restart, or one a modified client forged. Every press is answered, so
    the button's spinner always stops.
    """
    query = update.callback_query
    if query is None:
        return
    runtime = context.runtime
    if not isinstance(query.message, Message):  # a message too old for Telegram to show the bot
        runtime.queues.spawn(_answer_query(query, EXPIRED))
        return
    data = query.data.callback_data if isinstance(query.data, InvalidCallbackData) else query.data
    log.info("Expired or forged button %r in chat %s.", data, query.message.chat_id)
    runtime.queues.spawn(_answer_query(query))
    _chatter(update, context, EXPIRED)


async def on_error(update: object, context: BotContext) -> None:
    """Log every unexpected failure with context; tell the user without details."""
    where = ""
    if isinstance(update, Update):
        chat = update.effective_chat
        where = f" (update {update.update_id}, chat {chat.id if chat else '?'})"
    log.error("Unhandled error%s: %s", where, context.error, exc_info=context.error)
    if context.bot_data.runtime is not None:
        context.bot_data.runtime.metrics.refused("failed", photo=False)
    if isinstance(update, Update) and update.effective_message:
        message = update.effective_message
        try:
            await asyncio.wait_for(reply(context.bot, message, FAILED), timeout=30)
        except (TelegramError, TimeoutError):
            log.warning("Could not tell the user about the error%s", where)


# ---------------------------------------------------------------------------------- answers
@dataclass(frozen=True)
class _Refusal:
    """What a shopper is told instead of an album, and why (``lookalike_refusals_total{reason}``)."""

    reason: str
    text: str


def _where(context: BotContext, named: tuple[Named, ...]) -> Where | None:
    """The search filter of a shopper's named values (None: no filter)."""
    return context.runtime.inference.recommender.filter_words.where(named) if named else None


async def _answer_photo(
    context: BotContext, message: Message, found: tuple[str, int | None], received: float, words: str | None
) -> None:
    """The photo's album (``received``: ``time.monotonic()`` when its update reached the bot), or a refusal;
    the caption's ``words`` that name catalogue values ("women", "shoes") narrow it."""
    metrics = context.runtime.metrics
    named = tuple(context.runtime.inference.recommender.filter_words.match(words)) if words else ()
    if named:
        metrics.filtered.labels("caption").inc()
    async with _busy_status(context, message.chat_id):
        answer = await _first_page(context, message, found, _where(context, named))
        if isinstance(answer, _Refusal):
            metrics.refused(answer.reason)
            await reply(context.bot, message, answer.text, quote=True)
            return
        query, matches, generation = answer
        page = NextPage(query.vector, 0, query.pinned, generation, named, exact=query.exact, lifted=query.lifted)
        sent = await _send_page(context, message, page, matches, to_photo=True)
    if sent:
        metrics.answered(time.monotonic() - received)
    else:
        metrics.refused("no_photos" if matches else "no_match")


async def _first_page(context: BotContext, message: Message, found: tuple[str, int | None], where: Where | None) -> _Refusal | Answer:
    """The photo's query and first page of matches, or the polite refusal to send instead."""
    runtime = context.runtime
    chat_id = message.chat_id
    file_id, size = found
    limit = min(runtime.settings.max_image_bytes, TELEGRAM_DOWNLOAD_LIMIT)
    if size is not None and size > limit:
        return _Refusal("too_big", str(ImageTooBig(size, limit)))
    try:
        # The wait for a slot counts too: behind a crowd of slow downloads the shopper hears "busy",
        # not silence.
        async with asyncio.timeout(ANALYSIS_TIMEOUT_S), runtime.analysis:
            data = await download_image(context.bot, file_id, size, limit)
            answer = await runtime.inference.embed_and_page(data, PAGE, where)
            del data
            return answer
    except ImageTooBig as exc:
        return _Refusal("too_big", str(exc))
    except ImageDecodeError as exc:
        return _Refusal("not_an_image", f"I couldn't use that image: {exc} Please send a normal photo (JPEG, PNG or WebP).")
    except BadRequest as exc:  # e.g. Telegram's "file is too big" on getFile
        log.info("getFile refused for chat %s: %s", chat_id, exc)
        return _Refusal("download_failed", "I couldn't download that image; it may be too big. Please send a smaller photo.")
    except TimeoutError:
        log.warning("Analysing a photo of chat %s took over %.0fs; asked to retry.", chat_id, ANALYSIS_TIMEOUT_S)
        return _Refusal("busy", BUSY)
    except SearchUnavailableError:  # logged where it happened
        return _Refusal("search_down", SEARCH_DOWN)
    except NetworkError as exc:  # getFile or the download failed after its retries (not a refusal)
        log.warning("Could not download a photo of chat %s (%s: %s); asked to retry.", chat_id, type(exc).__name__, exc)
        return _Refusal("busy", BUSY)


async def _answer_next_page(context: BotContext, message: Message, page: NextPage) -> None:
    """A "Next 5" or filter button's page. The pressed prompt keeps only its product links: its
    album stays on screen, and its other buttons would answer the same question again."""
    async with _busy_status(context, message.chat_id):
        await _next_page(context, message, page)


async def _next_page(context: BotContext, message: Message, page: NextPage) -> None:
    kept = [row for row in message.reply_markup.inline_keyboard if all(button.url for button in row)] if message.reply_markup else []
    try:
        await message.edit_reply_markup(reply_markup=InlineKeyboardMarkup(kept) if kept else None)
    except TelegramError as exc:
        log.debug("could not remove the old buttons: %s", exc)
    runtime = context.runtime
    if page.offset == 0:  # a filter button
        runtime.metrics.filtered.labels("button").inc()
    async with runtime.analysis:
        try:
            query = Query(page.vector, page.pinned, page.exact, page.lifted)
            matches = await runtime.inference.page(query, page.offset, PAGE, page.generation, _where(context, page.named))
        except (ExpiredSearchError, FilterError):  # the catalogue was reloaded since: its rows are other products
            await reply(context.bot, message, EXPIRED)
            return
        except SearchUnavailableError as exc:
            log.warning("Next page for chat %s: %s", message.chat_id, exc)
            runtime.metrics.refused("search_down", photo=False)
            await reply(context.bot, message, SEARCH_DOWN)
            return
    await _send_page(context, message, page, matches)


async def _send_page(context: BotContext, message: Message, page: NextPage, matches: list[Match], to_photo: bool = False) -> bool:
    """The album of ``matches`` (products from ``page.offset`` on, among those passing ``page.named``), then
    the prompt: "Next 5", the filter buttons and the products' links. ``to_photo``: the album answers the
    shopper's photo (``message``) and replies to it. False when there was no album to send (nothing
    matched, or none of the photos could be sent)."""
    runtime = context.runtime
    chat_id = message.chat_id
    if not matches:
        if page.named and page.offset == 0:  # the filter leaves nothing: say so, offer the whole catalogue
            clear = InlineKeyboardMarkup([[InlineKeyboardButton(CLEAR, callback_data=replace(page, named=()))]])
            await reply(context.bot, message, NO_MATCH.format(filter=describe(page.named)), quote=to_photo, reply_markup=clear)
        else:
            await reply(context.bot, message, NOTHING_MORE, quote=to_photo)
        return False
    # Albums answer the shopper's photo; a deleted photo is fine (the bot's Defaults allow it).
    header = f"🔎 {describe(page.named)}" if page.named else None
    try:
        sent = await send_album(
            context.bot, chat_id, matches, runtime.file_ids, reply_to=message.message_id if to_photo else None,
            photo_dir=runtime.settings.telegram_photo_dir, header=header,
        )  # fmt: skip
    except TelegramError as exc:
        if not telegram_may_have_acted(exc):
            raise
        # Telegram may have delivered the album and answered too late: sending it again could
        # show the shopper the same album twice, and "something went wrong" under it would be false.
        log.warning("Album for chat %s may or may not have arrived (%s: %s); not sending it again.", chat_id, type(exc).__name__, exc)
        sent = None
    if sent is not None and not sent:
        await reply(context.bot, message, NO_PHOTOS, quote=to_photo)
        return False
    await _reply_prompt(context, message, page, matches, to_photo)
    return True


async def _reply_prompt(context: BotContext, message: Message, page: NextPage, matches: list[Match], to_photo: bool) -> None:
    """The message under an album: which products it shows, "Next 5", the filter buttons, the product links."""
    runtime = context.runtime
    recommender = runtime.inference.recommender
    words = recommender.filter_words
    # "Only <kind>" narrows to the first album's top match's article type; later pages keep it.
    kind = page.kind or (matches[0].labels.get(words.kind_column) if page.offset == 0 and words.kind_column else None)
    shown = replace(page, kind=kind)
    try:
        available = recommender.passing(_where(context, page.named))
    except FilterError:  # a reload changed the catalogue's columns; the page's buttons will say "expired"
        available = runtime.catalogue_size
    following = next_page(
        page.vector, page.offset, len(matches), available, page.pinned, page.generation, page.named, kind, page.exact, page.lifted
    )
    # The catalogue's product pages, when it has a link column: button n opens the album's n-th product.
    links = [InlineKeyboardButton(str(page.offset + number), url=match.link) for number, match in enumerate(matches, 1) if match.link]
    rows = [[InlineKeyboardButton(f"Next {PAGE} ▶", callback_data=following)]] if following is not None else []
    rows += filter_rows(shown, words.values.get(GENDER, []), words.kind_column)
    if links:
        rows.append(links)
    if not rows:
        return
    last = page.offset + len(matches)
    shown_range = f"Products {page.offset + 1}-{last}" if len(matches) > 1 else f"Product {last}"
    scope = f" ({describe(page.named)})" if page.named else ""
    text = f"{shown_range} most similar to your photo{scope}."
    if following is not None:
        text += " Want to see more?"
    elif links:
        text += " Tap a number to open that product's page."
    await reply(context.bot, message, text, quote=to_photo, reply_markup=InlineKeyboardMarkup(rows))
