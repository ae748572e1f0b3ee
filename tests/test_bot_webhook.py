"""Webhook mode end to end: a real ``python -m bot`` with BOT_MODE=webhook, and the stand-in Bot API
POSTing each update to the bot's webhook with the secret token, as Telegram does (bot/webhook.py).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.webhook import SECRET_HEADER
from recommender.recommender import EXACT_MATCH_LINE
from standin_bot_api import FakeBotApi
from tests.test_bot_e2e import ANSWER_TIMEOUT, START_TIMEOUT, BotProcess, free_port, run_bot_expecting_failure

SECRET = "webhook-secret_0123456789"


class WebhookBot:
    def __init__(self, api: FakeBotApi, process: BotProcess, port: int) -> None:
        self.api, self.process, self.port = api, process, port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/telegram"

    def post(self, body: bytes, secret: str | None) -> int:
        """POST ``body`` to the webhook as anyone could: the HTTP status it gets."""
        request = urllib.request.Request(self.url, data=body, method="POST", headers={"Content-Type": "application/json"})
        if secret is not None:
            request.add_header(SECRET_HEADER, secret)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@pytest.fixture(scope="module")
def webhook_bot(demo_index, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookBot]:
    port = free_port()
    logs = tmp_path_factory.mktemp("webhook")
    with FakeBotApi() as api:
        process = BotProcess(
            api, logs / "data", logs / "bot.log", INDEX_DIR=str(demo_index.path), BOT_MODE="webhook",
            WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram", WEBHOOK_LISTEN=f"127.0.0.1:{port}", WEBHOOK_SECRET=SECRET,
        )  # fmt: skip
        try:
            api.wait_for(lambda s: any(c.ok for c in s.calls_to("setWebhook")), timeout=START_TIMEOUT)
            yield WebhookBot(api, process, port)
        finally:
            code = process.stop()
            output = process.output()
            assert code == 0, f"bot did not stop cleanly (exit {code}):\n{output[-3000:]}"
            assert "Stopped cleanly" in output


def test_set_webhook_names_the_url_and_the_secret_and_the_bot_never_polls(webhook_bot: WebhookBot) -> None:
    (call,) = [c for c in webhook_bot.api.calls_to("setWebhook") if c.ok]
    assert call.params["url"] == webhook_bot.url and call.params["secret_token"] == SECRET
    assert webhook_bot.api.calls_to("getUpdates") == []
    assert SECRET not in webhook_bot.process.output()  # like the token, never logged


def test_photos_and_next_five_arrive_by_webhook_and_are_answered(webhook_bot: WebhookBot, demo_index) -> None:
    api = webhook_bot.api
    item = demo_index.catalogue.items[5]
    api.user_sends_photo((demo_index.catalogue.images_dir / item.image).read_bytes(), chat_id=3001)
    album = api.wait_for(lambda s: s.albums(3001), timeout=ANSWER_TIMEOUT)[0]
    first = (album.items[0].caption or "").removeprefix(f"{EXACT_MATCH_LINE}\n")  # the product's own photo: may be called exact
    assert len(album.items) == 5 and first.startswith(item.labels["productDisplayName"])
    prompt = api.wait_for(lambda s: [m for m in s.sent_messages(3001) if m.get("reply_markup")], timeout=ANSWER_TIMEOUT)[0]
    api.user_presses_button(prompt, prompt["reply_markup"]["inline_keyboard"][0][0]["callback_data"])
    second = api.wait_for(lambda s: s.albums(3001)[1:], timeout=ANSWER_TIMEOUT)[0]
    assert not {i.caption for i in album.items} & {i.caption for i in second.items}
    # Every update went by POST, each accepted the first time.
    assert webhook_bot.api.webhook_deliveries and all(status == 200 for _, status in webhook_bot.api.webhook_deliveries)


@pytest.mark.parametrize("secret", [None, "wrong-secret", SECRET + "x"], ids=["missing", "wrong", "longer"])
def test_a_request_without_the_secret_is_refused_with_403_and_not_answered(webhook_bot: WebhookBot, secret: str | None) -> None:
    api = webhook_bot.api
    forged = {"update_id": 999_001, "message": {
        "message_id": 1, "date": 1_700_000_000, "chat": {"id": 3002, "type": "private"},
        "from": {"id": 3002, "is_bot": False, "first_name": "Mallory"}, "text": "/start",
    }}  # fmt: skip
    assert webhook_bot.post(json.dumps(forged).encode(), secret) == 403
    # The same update with the secret is answered: so an answer to the forged one would have shown by now.
    api.user_sends_text("/help", chat_id=3003)
    api.wait_for(lambda s: s.sent_messages(3003), timeout=ANSWER_TIMEOUT)
    assert api.sent_messages(3002) == []
    assert "wrong or missing secret token" in webhook_bot.process.output()


def test_a_body_that_is_not_an_update_is_refused_with_400_and_the_bot_keeps_serving(webhook_bot: WebhookBot) -> None:
    assert webhook_bot.post(b"{not json", SECRET) == 400
    assert webhook_bot.post(b'{"hello": 1}', SECRET) == 400
    webhook_bot.api.user_sends_text("/start", chat_id=3004)
    assert webhook_bot.api.wait_for(lambda s: s.sent_messages(3004), timeout=ANSWER_TIMEOUT)


def test_health_and_metrics_are_served_on_the_webhook_port(webhook_bot: WebhookBot) -> None:
    status, body = webhook_bot.get("/healthz")
    health = json.loads(body)
    assert status == 200 and health["ok"] and health["products"] > 0 and health["mode"] == "webhook"
    webhook_bot.post(b"{}", "not-it")  # one more refusal, whatever ran before
    status, body = webhook_bot.get("/metrics")
    assert status == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    assert samples[("lookalike_webhook_refusals_total", (("reason", "secret"),))] >= 1
    assert samples[("lookalike_index_products", ())] == health["products"]
    assert webhook_bot.get("/telegram")[0] == 405  # the updates' path takes POSTs only


def test_webhook_mode_without_a_url_is_one_clear_message(tmp_path: Path) -> None:
    result = run_bot_expecting_failure({"BOT_MODE": "webhook", "TELEGRAM_BOT_TOKEN": "123:abc-DEF"}, tmp_path)
    assert result.returncode == 2
    assert "BOT_MODE=webhook needs WEBHOOK_URL" in result.stderr and "Traceback" not in result.stderr


def test_a_taken_webhook_port_is_one_clear_message(webhook_bot: WebhookBot, demo_index, tmp_path: Path) -> None:
    with FakeBotApi() as api:
        process = BotProcess(
            api, tmp_path / "data", tmp_path / "bot.log", INDEX_DIR=str(demo_index.path), BOT_MODE="webhook",
            WEBHOOK_URL=f"http://127.0.0.1:{webhook_bot.port}/telegram", WEBHOOK_LISTEN=f"127.0.0.1:{webhook_bot.port}",
        )  # fmt: skip
        code = process.process.wait(timeout=START_TIMEOUT)
        process.stop()
        output = process.output()
    assert code == 2, output[-3000:]
    assert "Cannot listen for webhook updates" in output and "WEBHOOK_LISTEN" in output and "Traceback" not in output
