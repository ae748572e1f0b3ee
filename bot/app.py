"""Assemble the python-telegram-bot Application and run it."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time

from telegram import Update
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    Defaults,
    MessageHandler,
    TypeHandler,
    filters,
)

from recommender import LookalikeError, Recommender

from . import handlers
from .chat_queue import ChatQueues
from .config import Settings, load_settings
from .file_id_cache import FileIdCache
from .inference import InferenceService
from .logging_setup import setup_logging
from .rate_limit import RateLimiter
from .startup import ensure_index

log = logging.getLogger("bot")

#: After SIGTERM/SIGINT, answers in progress get this long to go out before they are cancelled;
#: the whole stop (saving the file_id cache included) stays well under 10 s.
SHUTDOWN_GRACE_S = 3.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def post_init(application: Application) -> None:
    """Heavy start-up work, once: load the index and model, warm up, restore the file_id cache."""
    started = time.perf_counter()
    settings: Settings = application.bot_data["settings"]
    recommender = Recommender(
        settings.index_dir, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
    ).load()
    inference = InferenceService(recommender, max_batch=settings.max_batch)
    inference.start()
    file_ids = FileIdCache(settings.file_id_cache, application.bot.id)
    await file_ids.load()
    application.bot_data["runtime"] = handlers.BotRuntime(
        settings=settings,
        inference=inference,
        file_ids=file_ids,
        catalogue_size=len(recommender),
        rate_limiter=RateLimiter(settings.rate_limit_per_minute),
        queues=ChatQueues(
            backlog=handlers.CHAT_BACKLOG,
            on_error=lambda update, error: application.process_error(update=update, error=error),
        ),
        analysis=asyncio.Semaphore(settings.max_concurrent_updates),
    )
    await application.bot.set_my_commands([("start", "What this bot does"), ("help", "How to use it")])
    manifest = recommender.manifest
    log.info(
        "Ready: @%s serving %d products (%s, %s weights, %d-d), %d cached photo file_ids; start-up took %.1fs.",
        application.bot.username, len(recommender), manifest.model.backbone, manifest.weights, manifest.model.feature_dim,
        len(file_ids), time.perf_counter() - started,
    )


def handle_stop_signals(application: Application, loop: asyncio.AbstractEventLoop) -> None:
    """SIGTERM/SIGINT stop the bot once, gracefully and within seconds; repeats are only logged.

    python-telegram-bot's own handler raises ``SystemExit`` from inside the event loop for every
    signal: a second SIGTERM (or Ctrl-C pressed twice) aborts the shutdown half-way, leaves
    coroutines such as ``Updater.stop`` never awaited and skips saving the file_id cache.
    Installed on the loop ``run_polling`` will use, before it starts, so a signal during start-up
    (loading the model) is handled the same way.
    """

    stop_sent = False  # loop.stop() issued: from then on run_polling's own shutdown is under way

    def stop_when_running() -> None:
        """Stop ``run_polling`` at the one point where ``loop.stop()`` is safe: inside ``run_forever()``.

        ``run_polling`` runs start-up and shutdown steps with ``loop.run_until_complete()``; a
        ``loop.stop()`` during one of them (say ``Updater.stop()`` waiting on a slow last
        ``getUpdates``) raises ``RuntimeError: Event loop stopped before Future completed`` and
        skips post_stop and post_shutdown. ``Application.running`` and ``Updater.running`` both
        hold only while serving; ``Updater.stop()`` clears its flag first thing.
        """
        nonlocal stop_sent
        if application.bot_data.get("stopped"):
            return
        polling = application.updater is not None and application.updater.running
        if application.running and polling:
            application.stop_running()  # ends run_polling's loop.run_forever()
            stop_sent = True
            # A stop in the very loop step where Application.start() returned is swallowed by
            # run_until_complete(); still serving a second later means that happened: stop again.
            loop.call_later(1.0, stop_when_running)
        elif application.running or stop_sent:
            return  # run_polling is already shutting down: leave its run_until_complete() alone
        else:
            application.stop_running()  # start-up (post_init): polling never starts
            loop.call_later(0.05, stop_when_running)  # past post_init already? stop once serving

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if "stopping_since" in application.bot_data:
            log.info("%s received: already stopping.", name)
            return
        application.bot_data["stopping_since"] = time.monotonic()
        log.info("%s received: stopping; answers in progress get %.0f s.", name, SHUTDOWN_GRACE_S)
        runtime: handlers.BotRuntime | None = application.bot_data.get("runtime")
        if runtime is not None:
            runtime.queues.stop_accepting()
        stop_when_running()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)


async def post_stop(application: Application) -> None:
    """Polling has stopped: let answers in progress finish within the grace period, cancel the rest.

    Runs before python-telegram-bot closes its HTTP connections, so those answers can still go out.
    """
    application.bot_data["stopped"] = True
    runtime: handlers.BotRuntime | None = application.bot_data.get("runtime")
    if runtime is not None:
        since = application.bot_data.get("stopping_since", time.monotonic())
        await runtime.queues.close(deadline=since + SHUTDOWN_GRACE_S)


async def post_shutdown(application: Application) -> None:
    application.bot_data["stopped"] = True
    runtime: handlers.BotRuntime | None = application.bot_data.get("runtime")
    if runtime is not None:
        await runtime.queues.close()  # normally done in post_stop already
        await runtime.file_ids.save()
        runtime.inference.stop()
        log.info("Embedded %d photos in %d forward passes.", runtime.inference.images, runtime.inference.batches)
    log.info("Stopped cleanly.")


def build_application(settings: Settings) -> Application:
    """The Application with every handler registered (not started)."""
    builder = (
        ApplicationBuilder()
        .token(settings.token)
        .concurrent_updates(settings.max_concurrent_updates)
        .connection_pool_size(max(32, settings.max_concurrent_updates))
        .read_timeout(30)
        .write_timeout(30)
        .media_write_timeout(60)
        # Answers quote the shopper's message; a message deleted meanwhile must not fail them.
        .defaults(Defaults(allow_sending_without_reply=True))
        .post_init(post_init)
        .post_stop(post_stop)
        .post_shutdown(post_shutdown)
    )
    if settings.api_base_url:
        builder = builder.base_url(settings.api_base_url)
    if settings.api_file_url:
        builder = builder.base_file_url(settings.api_file_url)
    application = builder.build()
    application.bot_data["settings"] = settings
    application.add_handler(TypeHandler(Update, handlers.gate), group=-1)
    # Only new messages are requests: editing an earlier photo's caption must not answer it again.
    new = filters.UpdateType.MESSAGE
    application.add_handler(CommandHandler(["start", "help"], handlers.start, filters=new))
    application.add_handler(MessageHandler(new & (filters.PHOTO | filters.Document.ALL), handlers.on_image))
    # Every button press, not only well-formed ones: forged or old data must still stop the spinner.
    application.add_handler(CallbackQueryHandler(handlers.on_more))
    application.add_handler(MessageHandler(new & filters.TEXT & ~filters.COMMAND, handlers.on_text))
    application.add_handler(MessageHandler(new & filters.COMMAND, handlers.start))
    application.add_handler(MessageHandler(new, handlers.on_other))
    application.add_error_handler(handlers.on_error)
    return application


def main() -> int:
    """Entry point of ``python -m bot``: exit status 0 on a clean stop, 2 on operator errors."""
    try:
        settings = load_settings()
    except LookalikeError as exc:  # a missing or invalid setting
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.token)
    try:
        serving = ensure_index(settings)
        log.info("Serving the %s.", serving)
        application = build_application(settings)
        loop = asyncio.new_event_loop()  # run_polling runs on the current loop: this one
        asyncio.set_event_loop(loop)
        handle_stop_signals(application, loop)
        application.run_polling(allowed_updates=Update.ALL_TYPES, drop_pending_updates=False, stop_signals=None)
        # Closing the loop restored the default handlers: a late repeat must not kill a clean exit.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
    except LookalikeError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:  # a folder that cannot be read or written, a full disk...: one line, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        log.error(
            "%s%s. Check INDEX_DIR, CATALOGUE_DIR and DATA_DIR: they must be readable, writable and have free space.",
            exc.strerror or exc, where,
        )
        return 2
    except InvalidToken:
        log.error("Telegram rejected TELEGRAM_BOT_TOKEN. Check the token from @BotFather.")
        return 2
    except NetworkError as exc:
        log.error("Cannot reach the Telegram Bot API (%s). Check the network or TELEGRAM_API_BASE_URL.", exc)
        return 1
    except TelegramError as exc:
        log.error("Telegram error at start-up: %s", exc)
        return 1
    return 0
