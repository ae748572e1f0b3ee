"""Survive Telegram's flood control and flaky networks: retry what is safe to retry.

``RetryAfter`` (HTTP 429) waits exactly as long as Telegram asks; timeouts and network errors
back off exponentially. ``BadRequest`` and ``Forbidden`` are final: retrying cannot fix them.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Awaitable, Callable, TypeVar

from telegram.error import BadRequest, NetworkError, RetryAfter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ATTEMPTS = 5
MAX_WAIT_SECONDS = 60.0


def retry_after_seconds(exc: RetryAfter) -> float:
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RetryAfter) or (isinstance(exc, NetworkError) and not isinstance(exc, BadRequest))


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RetryAfter):
        return min(retry_after_seconds(exc), MAX_WAIT_SECONDS)
    return min(0.5 * 2 ** (state.attempt_number - 1), 8.0)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("Telegram call failed (%s: %s); retry %d in %.1fs", type(exc).__name__, exc, state.attempt_number, state.upcoming_sleep)


async def with_retries(call: Callable[[], Awaitable[T]], attempts: int = MAX_ATTEMPTS) -> T:
    """Await ``call()``, retrying flood-control and network failures."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_is_retryable),
        stop=stop_after_attempt(attempts),
        wait=_wait,
        before_sleep=_log_retry,
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover
