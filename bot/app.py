"""Assemble the python-telegram-bot Application and run it."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from telegram import Update
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    Defaults,
    MessageHandler,
    TypeHandler,
    filters,
)

from recommender import LookalikeError, Recommender
from recommender.errors import ConfigError

from . import handlers
from .chat_queue import ChatQueues
from .config import WEBHOOK, Settings, load_settings
from .context import CONTEXT_TYPES, BotApplication, BotRuntime
from .file_id_cache import FileIdCache
from .inference import InferenceService
from .logging_setup import setup_logging
from .metrics import MetricsServer
from .pages import MAX_BUTTONS, NextPage
from .rate_limit import RateLimiter
from .reload import IndexReloader
from .retry import RetryingRequest
from .startup import ensure_index
from .webhook import WebhookServer

log = logging.getLogger("bot")

#: After SIGTERM/SIGINT, answers in progress get this long to go out before they are cancelled;
#: the whole stop (saving the file_id cache included) stays well under 10 s.
SHUTDOWN_GRACE_S = 3.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Updates Telegram may post at once (its maximum; each is only queued, so the server keeps up).
MAX_WEBHOOK_CONNECTIONS = 40
COMMANDS = [("start", "What this bot does"), ("help", "How to use it"), ("similar", "Similar products for the photo you reply to")]


async def start_runtime(application: BotApplication, settings: Settings, recommender: Recommender) -> BotRuntime:
    """Create what handlers share around a loaded recommender, and announce the bot's commands."""
    inference = InferenceService(recommender, max_batch=settings.max_batch)
    inference.start()
    file_ids = FileIdCache(settings.file_id_cache, application.bot.id)
    await file_ids.load()
    runtime = application.bot_data.runtime = BotRuntime(
        settings=settings,
        inference=inference,
        file_ids=file_ids,
        catalogue_size=len(recommender),
        rate_limiter=RateLimiter(settings.rate_limit_per_minute),
        chatter=RateLimiter(handlers.CHATTER_PER_MINUTE),
        queues=ChatQueues(
            backlog=handlers.CHAT_BACKLOG,
            on_error=lambda update, error: application.process_error(update=update, error=error),
        ),
        analysis=asyncio.Semaphore(settings.max_concurrent_updates),
    )
    runtime.metrics.index_products.set(len(recommender))
    runtime.metrics.watch_file_ids(lambda: (file_ids.hits, file_ids.misses))
    inference.on_batch = runtime.metrics.batch_photos.observe
    await application.bot.set_my_commands(COMMANDS)
    return runtime


def health(runtime: BotRuntime) -> dict[str, Any]:
    """What /healthz says: ok when the model and index are loaded and the inference thread runs."""
    recommender = runtime.inference.recommender  # the index served now, after any reload
    loaded = recommender.extractor is not None and recommender.index is not None
    last = runtime.metrics.last_update
    return {
        "ok": loaded and runtime.inference.running,
        "mode": runtime.settings.bot_mode,
        "model_loaded": recommender.extractor is not None,
        "index_loaded": recommender.index is not None,
        "inference_running": runtime.inference.running,
        "products": len(recommender) if loaded else 0,
        "search_backend": recommender.manifest.backend if loaded else None,
        "last_update_at": last or None,
        "seconds_since_last_update": round(time.time() - last, 1) if last else None,
        "uptime_seconds": round(time.time() - runtime.metrics.started, 1),
    }


def load_recommender(settings: Settings) -> Recommender:
    """The index as the bot serves it, at start-up and on every reload alike."""
    return Recommender(
        settings.index_dir, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels, serving=True,
        exact_crops=settings.exact_crops,
    ).load()  # fmt: skip


async def post_init(application: BotApplication, settings: Settings) -> None:
    """Heavy start-up work, once: load the index and model, warm up, restore the file_id cache."""
    started = time.perf_counter()
    recommender = load_recommender(settings)
    runtime = await start_runtime(application, settings, recommender)
    manifest = recommender.manifest
    if settings.metrics_port:
        try:
            runtime.metrics_server = MetricsServer(runtime.metrics, lambda: health(runtime), settings.metrics_host, settings.metrics_port).start()
        except OSError as exc:
            raise ConfigError(f"Cannot serve /metrics on {settings.metrics_host}:{settings.metrics_port} ({exc.strerror or exc}): "
                              "is the port taken? Set METRICS_PORT to a free port, or unset it.") from exc  # fmt: skip
        log.info("Serving /metrics and /healthz on http://%s:%d.", settings.metrics_host, runtime.metrics_server.port)
    reloader = runtime.reloader = IndexReloader(settings.index_dir, runtime, lambda: load_recommender(settings))
    if settings.index_check_seconds:
        reloader.watch(settings.index_check_seconds)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, lambda: runtime.queues.spawn(reloader.reload("SIGHUP")))
    log.info(
        "Ready: @%s serving %d products (%s, %s weights, %d-d, runtime %s, TensorFlow %s, search %s), %d cached photo "
        "file_ids; start-up took %.1fs.",
        application.bot.username, len(recommender), manifest.model.backbone, manifest.weights, manifest.model.feature_dim,
        manifest.model.runtime, "loaded" if "tensorflow" in sys.modules else "not loaded", manifest.backend,
        len(runtime.file_ids), time.perf_counter() - started,
    )


def handle_stop_signals(application: BotApplication, loop: asyncio.AbstractEventLoop, stop: Callable[[], None] | None = None) -> None:
    """SIGTERM/SIGINT stop the bot once, gracefully and within seconds; repeats are only logged.
    ``stop`` ends webhook mode (:func:`serve_webhook`); without it, ``run_polling`` is stopped.

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
        if application.bot_data.stopped:
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
        state = application.bot_data
        if state.stopping_since is not None:
            log.info("%s received: already stopping.", name)
            return
        state.stopping_since = time.monotonic()
        log.info("%s received: stopping; answers in progress get %.0f s.", name, SHUTDOWN_GRACE_S)
        if state.runtime is not None:
            state.runtime.queues.stop_accepting()
        (stop or stop_when_running)()

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)


async def serve_webhook(application: BotApplication, settings: Settings, stop: asyncio.Event) -> None:
    """Webhook mode from start to stop, in ``run_polling``'s order: initialise, ``post_init``, listen,
    ``setWebhook`` with the secret, serve until ``stop``; then refuse new updates (Telegram keeps them),
    ``post_stop`` (answers in progress finish), shut down, ``post_shutdown``."""
    await application.initialize()
    server: WebhookServer | None = None
    try:
        await post_init(application, settings)
        runtime = application.bot_data.runtime
        assert runtime is not None
        server = await WebhookServer(application, settings, runtime.metrics, lambda: health(runtime)).start()
        await application.bot.set_webhook(
            server.url, secret_token=server.secret, allowed_updates=Update.ALL_TYPES, max_connections=MAX_WEBHOOK_CONNECTIONS
        )
        await application.start()
        log.info(
            "Webhook mode: Telegram posts updates to %s; listening on %s:%d (path %s, also /healthz and /metrics).",
            server.url, server.host, server.port, server.path,
        )  # fmt: skip
        await stop.wait()
        server.accepting = False
        await application.stop()
        await post_stop(application)
    finally:
        if server is not None:
            await server.stop()
        if application.running:
            await application.stop()
        await application.shutdown()
        await post_shutdown(application)


async def post_stop(application: BotApplication) -> None:
    """Polling has stopped: let answers in progress finish within the grace period, cancel the rest.

    Runs before python-telegram-bot closes its HTTP connections, so those answers can still go out.
    """
    state = application.bot_data
    state.stopped = True
    if state.runtime is not None and state.runtime.reloader is not None:
        state.runtime.reloader.stop()
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
    if state.runtime is not None:
        since = state.stopping_since if state.stopping_since is not None else time.monotonic()
        await state.runtime.queues.close(deadline=since + SHUTDOWN_GRACE_S)


async def post_shutdown(application: BotApplication) -> None:
    """The application has shut down: save the file_id cache and stop the model's threads."""
    application.bot_data.stopped = True
    runtime = application.bot_data.runtime
    if runtime is not None:
        await runtime.queues.close()  # normally done in post_stop already
        await runtime.file_ids.save()
        runtime.inference.stop()
        if runtime.metrics_server is not None:
            runtime.metrics_server.stop()
        log.info("Embedded %d photos in %d forward passes.", runtime.inference.images, runtime.inference.batches)
    log.info("Stopped cleanly.")


def build_application(settings: Settings, *, max_buttons: int = MAX_BUTTONS) -> BotApplication:
    """The Application with every handler registered (not started); ``max_buttons`` bounds the Next-5 cache."""
    builder = (
        ApplicationBuilder()
        .token(settings.token)
        .context_types(CONTEXT_TYPES)
        .job_queue(None)
        .concurrent_updates(settings.max_concurrent_updates)
        # Every call but getUpdates goes through this request object and its retry policy.
        .request(
            RetryingRequest(
                connection_pool_size=max(32, settings.max_concurrent_updates),
                read_timeout=30,
                write_timeout=30,
                media_write_timeout=60,
            )
        )
        # "Next 5" buttons carry NextPage objects; Telegram only sees a key into this bounded cache.
        .arbitrary_callback_data(max_buttons)
        # Answers quote the shopper's message; a message deleted meanwhile must not fail them.
        .defaults(Defaults(allow_sending_without_reply=True))
        .post_init(functools.partial(post_init, settings=settings))
        .post_stop(post_stop)
        .post_shutdown(post_shutdown)
    )
    if settings.api_base_url:
        builder = builder.base_url(settings.api_base_url)
    if settings.api_file_url:
        builder = builder.base_file_url(settings.api_file_url)
    application = builder.build()
    application.add_handler(TypeHandler(Update, handlers.gate), group=-1)
    # Only new messages are requests: editing an earlier photo's caption must not answer it again.
    new = filters.UpdateType.MESSAGE
    application.add_handler(CommandHandler(["start", "help"], handlers.start, filters=new))
    application.add_handler(CommandHandler(["stats", "reload"], handlers.admin, filters=new))
    application.add_handler(CommandHandler("similar", handlers.similar, filters=new))
    application.add_handler(MessageHandler(new & (filters.PHOTO | filters.Document.ALL), handlers.on_image))
    application.add_handler(CallbackQueryHandler(handlers.on_next_page, pattern=NextPage))
    # Every other press (InvalidCallbackData: forgotten or forged) is answered too, so its spinner stops.
    application.add_handler(CallbackQueryHandler(handlers.on_expired_button))
    application.add_handler(MessageHandler(new & filters.TEXT & ~filters.COMMAND, handlers.on_text))
    application.add_handler(MessageHandler(new & filters.COMMAND, handlers.on_command))
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
    made_up = settings.bot_mode == WEBHOOK and settings.webhook_secret is None
    if made_up:  # Telegram must prove every update is its own
        settings = dataclasses.replace(settings, webhook_secret=secrets.token_urlsafe(32))
    setup_logging(settings.log_level, settings.token, [settings.webhook_secret] if settings.webhook_secret else [])
    if made_up:
        log.info("WEBHOOK_SECRET is not set: Telegram gets a secret token made up for this run.")
    # Opt in to python-telegram-bot's coming durations (RetryAfter.retry_after as a timedelta) rather
    # than a deprecation warning on every flood-control answer; bot.retry reads both forms.
    os.environ.setdefault("PTB_TIMEDELTA", "1")
    try:
        serving = ensure_index(settings)
        log.info("Serving the %s.", serving)
        application = build_application(settings)
        loop = asyncio.new_event_loop()  # run_polling runs on the current loop: this one
        asyncio.set_event_loop(loop)
        if settings.bot_mode == WEBHOOK:
            stop = asyncio.Event()
            handle_stop_signals(application, loop, stop.set)
            try:
                loop.run_until_complete(serve_webhook(application, settings, stop))
            finally:
                loop.close()
        else:
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
