"""bot/webhook.py in-process: what the webhook server does with each request, on a real socket.

The whole bot in webhook mode, with the stand-in Bot API posting updates, is ``test_bot_webhook.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from telegram import Update

from bot.app import build_application
from bot.config import Settings
from bot.context import BotApplication
from bot.metrics import BotMetrics
from bot.webhook import SECRET_HEADER, WebhookServer
from standin_bot_api import DEFAULT_TOKEN

SECRET = "s3cret-token_for-tests"
UPDATE = {
    "update_id": 7001,
    "message": {
        "message_id": 3, "date": 1_700_000_000, "chat": {"id": 42, "type": "private"},
        "from": {"id": 42, "is_bot": False, "first_name": "Ada"}, "text": "hello",
    },
}  # fmt: skip


class Served:
    def __init__(self, server: WebhookServer, application: BotApplication, metrics: BotMetrics, session: aiohttp.ClientSession) -> None:
        self.server, self.application, self.metrics, self.session = server, application, metrics, session

    async def post(self, body: Any, secret: str | None = SECRET) -> int:
        headers = {SECRET_HEADER: secret} if secret is not None else {}
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(f"http://127.0.0.1:{self.server.port}/hook", data=data, headers=headers) as response:
            return response.status

    async def get(self, path: str) -> tuple[int, str]:
        async with self.session.get(f"http://127.0.0.1:{self.server.port}{path}") as response:
            return response.status, await response.text()


@pytest_asyncio.fixture
async def served() -> AsyncIterator[Served]:
    settings = Settings(
        token=DEFAULT_TOKEN, bot_mode="webhook", webhook_url="https://bot.example.com/hook", webhook_port=0, webhook_secret=SECRET,
    )  # fmt: skip
    application = build_application(settings)
    metrics = BotMetrics()
    server = await WebhookServer(application, settings, metrics, lambda: {"ok": True, "products": 3}).start()
    try:
        async with aiohttp.ClientSession() as session:
            yield Served(server, application, metrics, session)
    finally:
        await server.stop()


async def test_an_update_with_the_secret_is_queued_for_the_application(served: Served) -> None:
    assert served.server.port > 0 and served.server.path == "/hook"
    assert await served.post(UPDATE) == 200
    update = await asyncio.wait_for(served.application.update_queue.get(), timeout=5)
    assert isinstance(update, Update)
    assert update.update_id == 7001 and update.effective_message is not None and update.effective_message.text == "hello"


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET.upper(), SECRET + "-"], ids=["none", "empty", "wrong", "case", "longer"])
async def test_a_wrong_secret_is_refused_and_nothing_is_queued(served: Served, secret: str | None) -> None:
    assert await served.post(UPDATE, secret) == 403
    assert served.application.update_queue.empty()
    assert served.metrics.registry.get_sample_value("lookalike_webhook_refusals_total", {"reason": "secret"}) == 1


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b"null", b'{"update_id": "7"}', b'{"message": {}}'], ids=repr)
async def test_a_body_that_is_no_update_is_refused_with_400(served: Served, body: bytes) -> None:
    assert await served.post(body) == 400
    assert served.application.update_queue.empty()
    assert served.metrics.registry.get_sample_value("lookalike_webhook_refusals_total", {"reason": "malformed"}) == 1


async def test_while_stopping_updates_get_503_so_telegram_sends_them_again(served: Served) -> None:
    served.server.accepting = False
    assert await served.post(UPDATE) == 503
    assert served.application.update_queue.empty()
    assert await served.post(UPDATE, "wrong") == 403  # the secret is still checked first


async def test_health_and_metrics_share_the_port_and_other_paths_are_not_found(served: Served) -> None:
    status, body = await served.get("/healthz")
    assert status == 200 and json.loads(body) == {"ok": True, "products": 3}
    status, body = await served.get("/metrics")
    assert status == 200 and "lookalike_webhook_refusals_total" in body
    assert (await served.get("/hook"))[0] == 405
    assert (await served.get("/anything"))[0] == 404
