"""Token redaction (``bot/logging_setup.py``): the bot token never reaches a log line or traceback."""

from __future__ import annotations

import logging

import pytest

from bot.logging_setup import REDACTED, RedactTokenFilter

TOKEN = "4242:FAKE-test-token-secret_part"


def test_token_is_redacted_from_messages_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.redaction")
    logger.addFilter(RedactTokenFilter(TOKEN))
    with caplog.at_level(logging.INFO, logger="test.redaction"):
        logger.info("POST https://api.telegram.org/bot%s/sendMessage", TOKEN)
        try:
            raise RuntimeError(f"failed for {TOKEN.split(':')[1]}")
        except RuntimeError:
            logger.exception("boom")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert REDACTED in text
    assert TOKEN not in text and TOKEN.split(":")[1] not in text
