"""Webhook mode: Telegram POSTs each update to the bot; the same server answers /healthz and /metrics.

python-telegram-bot's own webhook server (``Application.run_webhook``) serves one path and nothing
else, while a bot behind a reverse proxy wants its health and metrics on the address the proxy and
the probes already know. So this follows python-telegram-bot's documented custom-webhook pattern:
an aiohttp server on the bot's own event loop takes each POST, checks its
``X-Telegram-Bot-Api-Secret-Token`` header in constant time (403 when wrong: nothing is read or
answered), reads the update as python-telegram-bot's own webhook handler does (``Update.de_json``,
then ``insert_callback_data`` for the Next-5 and filter buttons) and puts it on the application's
update queue. The POST is answered at once: Telegram waits for nobody's album.

While the bot stops, updates are answered 503: Telegram keeps them and delivers them again to
the next start, so a restart loses none.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from telegram import Update

from recommender.errors import ConfigError

from .config import Settings
from .context import BotApplication
from .metrics import BotMetrics, health_response

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
#: Telegram's updates are a few kilobytes; anything far larger is not one.
MAX_UPDATE_BYTES = 1024 * 1024
HEALTH_PATHS = ("/healthz", "/metrics")


def webhook_path(url: str) -> str:
    """The path the server takes updates on: the public URL's own path ("/" when it has none)."""
    path = urlsplit(url).path or "/"
    if path in HEALTH_PATHS:
        raise ConfigError(f"WEBHOOK_URL's path {path} is where /healthz and /metrics are served; use another, e.g. /telegram.")
    return path


class WebhookServer:
    """The updates' endpoint plus ``/healthz`` and ``/metrics``, on ``settings.webhook_host:webhook_port``."""

    def __init__(self, application: BotApplication, settings: Settings, metrics: BotMetrics, health: Callable[[], dict[str, Any]]) -> None:
        assert settings.webhook_url is not None, "webhook mode needs WEBHOOK_URL (checked by load_settings)"
        self.application = application
        self.url = settings.webhook_url
        self.path = webhook_path(settings.webhook_url)
        self.host, self.port = settings.webhook_host, settings.webhook_port
        #: what Telegram must send back (``main`` makes one up for the run when the operator set none)
        self.secret = settings.webhook_secret or secrets.token_urlsafe(32)
        self.metrics = metrics
        self.health = health
        #: False while stopping: updates are refused with 503, and Telegram delivers them again later
        self.accepting = True
        app = web.Application(client_max_size=MAX_UPDATE_BYTES)
        app.router.add_post(self.path, self._receive)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._scrape)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)

    async def start(self) -> WebhookServer:
        """Listen; a taken port or a wrong address is a :class:`ConfigError` naming WEBHOOK_LISTEN."""
        await self._runner.setup()
        try:
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ConfigError(
                f"Cannot listen for webhook updates on {self.host}:{self.port} ({exc.strerror or exc}): is the port taken? "
                "Set WEBHOOK_LISTEN to a free HOST:PORT."
            ) from exc
        addresses = self._runner.addresses
        if addresses and self.port == 0:  # an ephemeral port (tests): the one the system chose
            self.port = int(addresses[0][1])
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get(SECRET_HEADER, "").encode(), self.secret.encode()):
            self.metrics.webhook_refusals.labels("secret").inc()
            log.warning("Refused a webhook request from %s: wrong or missing secret token.", request.remote)
            return web.Response(status=403, text="forbidden\n")
        if not self.accepting:
            return web.Response(status=503, text="stopping; send it again later\n")
        bot = self.application.bot
        try:
            data = json.loads(await request.read())
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                raise ValueError("no update_id")
            update = Update.de_json(data, bot)
        except Exception as exc:  # whatever the body was, it was not an update: refuse it, keep serving
            self.metrics.webhook_refusals.labels("malformed").inc()
            log.warning("Refused a webhook request that is not a Telegram update (%s: %s).", type(exc).__name__, exc)
            return web.Response(status=400, text="not a Telegram update\n")
        bot.insert_callback_data(update)  # Next-5 and filter buttons carry objects, not strings
        await self.application.update_queue.put(update)
        return web.Response(status=200)

    async def _healthz(self, request: web.Request) -> web.Response:
        status, content_type, body = health_response(self.health())
        return web.Response(status=status, body=body, content_type=content_type)

    async def _scrape(self, request: web.Request) -> web.Response:
        # As a header: CONTENT_TYPE_LATEST carries a charset, which aiohttp's content_type= refuses.
        return web.Response(body=self.metrics.scrape(), headers={"Content-Type": CONTENT_TYPE_LATEST})
