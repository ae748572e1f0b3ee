"""One retry policy for every HTTP call the bot makes to Telegram.

The policy lives in the bot's request object (python-telegram-bot's request layer, handed to
``ApplicationBuilder().request``), so Bot API methods, button answers and file downloads all get it
and no call site wraps its own calls. ``getUpdates`` travels on a request object of its own and is
retried by the Updater.

* Flood control (an answer carrying ``retry_after``) is waited out as long as Telegram asks, unless
  that would take the call past :data:`MAX_TOTAL_WAIT_SECONDS` of waiting.
* Other error answers (5xx...) and network failures back off exponentially. Refusals (400
  ``BadRequest``, 401/404 ``InvalidToken``, 403 ``Forbidden``, 409 ``Conflict``) are final:
  retrying cannot fix them.

Two rules keep retries from doing harm (:func:`rule_for` says which applies to an endpoint):

* A *send* (``sendMessage``, ``sendPhoto``, ``sendMediaGroup``... every endpoint not listed in
  :data:`RULES`) is retried only when Telegram certainly did not act on it: flood control, an error
  answer, or a failure before the request was sent (connection refused, connect/pool/write
  timeout). A read timeout or a dropped connection after the request went out may mean the message
  *was* delivered; sending it again would give the shopper a duplicate.
* Waiting is capped per call (:data:`MAX_TOTAL_WAIT_SECONDS`): a 429 asking for minutes is not
  waited out while the caller holds a chat's turn; the error goes to the caller, who reports it.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from datetime import timedelta
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httpx
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut
from telegram.request import BaseRequest, HTTPXRequest, RequestData

if TYPE_CHECKING:
    # python-telegram-bot's annotation of per-call timeouts: seconds, None, or "the request's default".
    from telegram._utils.types import ODVInput

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
#: Longest total time one call spends waiting between attempts; past it the last error is raised.
MAX_TOTAL_WAIT_SECONDS = 15.0

# httpx failures that happen before the request reaches the server: nothing can have been sent.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteTimeout, httpx.WriteError)
# Error answers python-telegram-bot raises as refusals (BadRequest, InvalidToken, Forbidden, Conflict).
_REFUSALS = frozenset({HTTPStatus.BAD_REQUEST, HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN, HTTPStatus.NOT_FOUND, HTTPStatus.CONFLICT})


class Rule(enum.Enum):
    """How a call may be repeated."""

    IDEMPOTENT = "repeating it changes nothing: retried after any failure"
    SEND = "must not happen twice: retried only when Telegram certainly did not act"
    COSMETIC = "not worth waiting for: never retried"


#: Endpoints that are not sends; every other endpoint is treated as a send (the safe default).
RULES: dict[str, Rule] = {
    "getMe": Rule.IDEMPOTENT,
    "getFile": Rule.IDEMPOTENT,
    "deleteWebhook": Rule.IDEMPOTENT,
    "getWebhookInfo": Rule.IDEMPOTENT,
    "setMyCommands": Rule.IDEMPOTENT,
    "getMyCommands": Rule.IDEMPOTENT,
    "deleteMyCommands": Rule.IDEMPOTENT,
    "answerCallbackQuery": Rule.IDEMPOTENT,  # a repeat is refused as "query is too old": harmless
    "editMessageReplyMarkup": Rule.IDEMPOTENT,
    "sendChatAction": Rule.COSMETIC,  # retrying would only delay the answer it announces
}


def rule_for(url: str, method: str) -> Rule:
    """The rule for one request: file downloads (GET) are idempotent, Bot API methods go by name."""
    if method != "POST":
        return Rule.IDEMPOTENT
    return RULES.get(_endpoint(url), Rule.SEND)


def retry_after_seconds(exc: RetryAfter) -> float:
    """Telegram's wait in seconds (``retry_after`` is an int, or a timedelta with ``PTB_TIMEDELTA``)."""
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


class RetryingRequest(HTTPXRequest):
    """python-telegram-bot's HTTPX request with the bot's retry policy around every call.

    Takes :class:`~telegram.request.HTTPXRequest`'s options (pool size, timeouts) as keywords.
    """

    __slots__ = ("attempts", "max_total_wait")

    def __init__(self, *, attempts: int = MAX_ATTEMPTS, max_total_wait: float = MAX_TOTAL_WAIT_SECONDS, **httpx_options: Any) -> None:
        super().__init__(**httpx_options)
        self.attempts = attempts
        self.max_total_wait = max_total_wait

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """One call, repeated as its :class:`Rule` allows; the last answer or failure goes to python-telegram-bot."""
        rule = rule_for(url, method)
        name = _call_name(url, method)
        waited = 0.0
        attempt = 1
        while True:
            outcome: tuple[int, bytes] | NetworkError
            try:
                outcome = await super().do_request(url, method, request_data, read_timeout, write_timeout, connect_timeout, pool_timeout)
            except NetworkError as exc:  # a transport failure (TimedOut included)
                outcome, reason = exc, f"{type(exc).__name__}: {exc}"
                delay = _delay_after_failure(rule, exc, attempt)
            else:
                code, payload = outcome
                if HTTPStatus.OK <= code < HTTPStatus.MULTIPLE_CHOICES:
                    return outcome
                answer = _error_answer(payload)
                reason = f"HTTP {code}: {answer.get('description', 'no description')}"
                delay = _delay_after_answer(rule, code, answer, attempt)
            if delay is None or attempt >= self.attempts or waited + delay > self.max_total_wait:
                if delay is not None and attempt < self.attempts:
                    log.warning(
                        "Telegram call %s failed (%s); giving up rather than waiting %.1fs more (%.1fs already waited)",
                        name, reason, delay, waited,
                    )
                if isinstance(outcome, NetworkError):
                    raise outcome
                return outcome  # python-telegram-bot turns the error answer into RetryAfter, NetworkError...
            log.warning("Telegram call %s failed (%s); retry %d in %.1fs", name, reason, attempt, delay)
            await asyncio.sleep(delay)
            waited += delay
            attempt += 1


def _delay_after_failure(rule: Rule, exc: NetworkError, attempt: int) -> float | None:
    """Seconds before repeating a call that failed in transit; None when it must not be repeated."""
    if rule is Rule.IDEMPOTENT or (rule is Rule.SEND and not telegram_may_have_acted(exc)):
        return _backoff(attempt)
    return None


def _delay_after_answer(rule: Rule, code: int, answer: dict[str, Any], attempt: int) -> float | None:
    """Seconds before repeating a call Telegram answered with an error; None when it must not be repeated.

    An error answer means Telegram did not act, so sends are repeated too.
    """
    if rule is Rule.COSMETIC:
        return None
    parameters = answer.get("parameters")
    retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
    if isinstance(retry_after, int | float) and retry_after > 0:  # flood control
        return float(retry_after)  # a wait past MAX_TOTAL_WAIT_SECONDS gives up in do_request
    if code in _REFUSALS:
        return None
    return _backoff(attempt)


def _backoff(attempt: int) -> float:
    return min(0.5 * 2 ** (attempt - 1), 8.0)


def _error_answer(payload: bytes) -> dict[str, Any]:
    """Telegram's error answer (``description``, ``parameters``), or {} when it is not JSON."""
    try:
        answer = json.loads(payload.decode("utf-8", "replace"))
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _endpoint(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def _call_name(url: str, method: str) -> str:
    """The endpoint's name for the log: never the URL, which holds the bot token."""
    return _endpoint(url) if method == "POST" else "file download"
