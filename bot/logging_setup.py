"""Logging that never leaks the bot token (or the webhook's secret token).

httpx logs every request URL at INFO, and Bot API URLs contain the token
(``/bot<token>/sendMessage``), so httpx is held at WARNING and every record passing the root
handlers is redacted as a second line of defence. python-telegram-bot logs each call's parameters
at DEBUG, ``setWebhook``'s secret token among them: it is redacted the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

REDACTED = "<TOKEN>"


class RedactTokenFilter(logging.Filter):
    """Replace the token (and its secret part alone) in formatted messages and arguments."""

    def __init__(self, token: str, others: Iterable[str] = ()) -> None:
        super().__init__()
        secret = token.split(":", 1)[-1]
        self._secrets = [s for s in (token, secret, *others) if len(s) >= 8]

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._clean(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


def setup_logging(level: str, token: str, others: Iterable[str] = ()) -> None:
    """Log at ``level``, with ``token`` and the ``others`` secrets redacted from every record."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level, force=True)
    redactor = RedactTokenFilter(token, others)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    for noisy in ("tensorflow", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pymilvus logs a full traceback per failed call (about 80 lines while a Milvus server is away);
    # the search backend logs one line per failure itself (bot/inference.py)
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
