"""Survive Telegram's flood control and flaky networks: retry what is safe to retry.

``RetryAfter`` (HTTP 429) waits as long as Telegram asks; network failures back off exponentially.
``BadRequest`` and ``Forbidden`` are final: retrying cannot fix them.

Two rules keep retries from doing harm:

* A *send* (``sendMessage``, ``sendPhoto``, ``sendMediaGroup``...) is retried only when Telegram
  certainly did not act on it: flood control, an HTTP error answer (5xx), or a failure before the
  request was sent (connection refused, connect/pool/write timeout). A read timeout or a dropped
  connection after the request went out may mean the message *was* delivered; sending it again
  would give the shopper a duplicate. Use :func:`send_once` (or ``idempotent=False``) for those.
* Waiting is capped per call (:data:`MAX_TOTAL_WAIT_SECONDS`): a 429 asking for minutes is not
  waited out while the caller holds a chat's turn; the error goes to the caller, who reports it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import httpx
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ATTEMPTS = 5
#: Longest single wait for flood control before giving up on the call.
MAX_WAIT_SECONDS = 60.0
#: Longest total time one call spends waiting between attempts; past it the last error is raised.
MAX_TOTAL_WAIT_SECONDS = 15.0

# httpx failures that happen before the request reaches the server: nothing can have been sent.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteTimeout, httpx.WriteError)


def retry_after_seconds(exc: RetryAfter) -> float:
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def telegram_may_have_acted(exc: BaseException) -> bool:
    """Whether a failed call may still have been carried out by Telegram (resending could duplicate it)."""
    if isinstance(exc, RetryAfter) or not isinstance(exc, NetworkError) or isinstance(exc, BadRequest):
        return False  # flood control and refusals: Telegram answered and did nothing
    cause = exc.__cause__
    if isinstance(cause, _NOT_SENT):
        return False
    if isinstance(exc, TimedOut):
        return True  # read timeout (or unknown): the request was sent, the answer never came
    # No transport cause: PTB raised it for an HTTP error answer (5xx), so Telegram answered.
    return cause is not None


def _is_retryable(exc: BaseException, idempotent: bool) -> bool:
    if isinstance(exc, RetryAfter):
        return True
    if not isinstance(exc, NetworkError) or isinstance(exc, BadRequest):
        return False
    return idempotent or not telegram_may_have_acted(exc)


def _delay(exc: BaseException, attempt: int) -> float:
    if isinstance(exc, RetryAfter):
        seconds = retry_after_seconds(exc)
        return seconds if seconds <= MAX_WAIT_SECONDS else float("inf")  # never wait minutes
    return min(0.5 * 2 ** (attempt - 1), 8.0)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    attempts: int = MAX_ATTEMPTS,
    *,
    idempotent: bool = True,
    max_total_wait: float = MAX_TOTAL_WAIT_SECONDS,
) -> T:
    """Await ``call()``, retrying flood-control and network failures.

    ``idempotent=False`` is for calls that must not happen twice (sends): they are retried only
    when Telegram certainly did not act. At most ``max_total_wait`` seconds are spent waiting in
    total; a longer ``RetryAfter`` is raised at once so the caller can give up and say so.
    """
    waited = 0.0
    attempt = 1
    while True:
        try:
            return await call()
        except (NetworkError, RetryAfter) as exc:
            if attempt >= attempts or not _is_retryable(exc, idempotent):
                raise
            delay = _delay(exc, attempt)
            if waited + delay > max_total_wait:
                log.warning(
                    "Telegram call failed (%s: %s); giving up rather than waiting %.1fs more (%.1fs already waited)",
                    type(exc).__name__, exc, delay, waited,
                )
                raise
            log.warning("Telegram call failed (%s: %s); retry %d in %.1fs", type(exc).__name__, exc, attempt, delay)
            await asyncio.sleep(delay)
            waited += delay
            attempt += 1


async def send_once(call: Callable[[], Awaitable[T]], attempts: int = MAX_ATTEMPTS, *, max_total_wait: float = MAX_TOTAL_WAIT_SECONDS) -> T:
    """Await a send that must not be delivered twice: retried only when Telegram did not act on it."""
    return await with_retries(call, attempts, idempotent=False, max_total_wait=max_total_wait)
