"""Per-chat work queues: a chat's answers go out in order, and a flooding chat only waits on itself.

Handlers do not answer inside python-telegram-bot's update slots any more; they hand each answer
to its chat's queue and return at once. One worker task per chat (only while it has work) runs the
answers one after another, so a chat that sends 200 messages holds one worker, not every slot,
and a 429 back-off or a slow download stalls that chat alone. Each queue is small and bounded:
``submit`` refuses once ``backlog`` answers are already waiting, and the caller tells the chat to
slow down. Short fire-and-forget sends (a "slow down" notice, a button's answer) run as tracked
tasks through ``spawn``. ``close`` stops the lot within a deadline, for a quick shutdown.

When Telegram's flood control refuses a chat for longer than the retries wait (``RetryAfter``), the
chat is *muted* until then: its waiting answers are dropped and new ones are not even tried, since
every call would be refused too (and hammering a 429 only lengthens it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass

from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter

from .retry import retry_after_seconds

log = logging.getLogger(__name__)

#: A job longer than this (e.g. retrying 429s for minutes) is abandoned so its chat can move on.
JOB_TIMEOUT_S = 180.0

ErrorCallback = Callable[[object, Exception], Awaitable[object]]


@dataclass
class _Job:
    run: Callable[[], Awaitable[None]]
    update: object


class ChatQueues:
    """``submit(chat_id, job)`` → runs after the chat's earlier jobs; False when its backlog is full."""

    def __init__(self, backlog: int = 10, on_error: ErrorCallback | None = None, job_timeout: float = JOB_TIMEOUT_S) -> None:
        self.backlog = backlog
        self.job_timeout = job_timeout
        self._on_error = on_error
        self._waiting: dict[int, deque[_Job]] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._spawned: set[asyncio.Task[object]] = set()
        self._muted_until: dict[int, float] = {}
        self._accepting = True

    def __len__(self) -> int:
        """Jobs waiting (not counting the ones running)."""
        return sum(len(queue) for queue in self._waiting.values())

    @property
    def chats(self) -> int:
        """Chats with a job running or waiting."""
        return len(self._workers)

    def muted(self, chat_id: int) -> bool:
        """Whether Telegram's flood control still refuses this chat (then nothing is sent to it)."""
        until = self._muted_until.get(chat_id)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._muted_until[chat_id]
        return False

    def mute(self, chat_id: int, exc: RetryAfter) -> None:
        """Send nothing to ``chat_id`` until Telegram's ``retry_after`` has passed."""
        now = time.monotonic()
        self._muted_until[chat_id] = max(self._muted_until.get(chat_id, 0.0), now + retry_after_seconds(exc))
        if len(self._muted_until) > 1024:  # bounded: forget chats whose flood control is over
            self._muted_until = {chat: until for chat, until in self._muted_until.items() if until > now}
        dropped = len(self._waiting.get(chat_id, ()))
        if dropped:
            self._waiting[chat_id].clear()
        log.warning(
            "Telegram's flood control refuses chat %s for %.0fs; sending it nothing until then (%d waiting answers dropped).",
            chat_id, retry_after_seconds(exc), dropped,
        )

    def submit(self, chat_id: int, job: Callable[[], Awaitable[None]], update: object = None) -> bool:
        """Queue ``job`` for ``chat_id``; False when shutting down or its backlog is full.

        A muted chat's job is dropped at once (True: nothing to tell it, it could not be told).
        """
        if not self._accepting:
            return False
        if self.muted(chat_id):
            log.debug("Dropped an answer to chat %s (flood control).", chat_id)
            return True
        queue = self._waiting.setdefault(chat_id, deque())
        if len(queue) >= self.backlog:
            return False
        queue.append(_Job(job, update))
        if chat_id not in self._workers:
            self._workers[chat_id] = asyncio.create_task(self._work(chat_id, queue), name=f"chat-{chat_id}")
        return True

    def spawn(self, coroutine: Coroutine[object, object, object], chat_id: int | None = None) -> None:
        """Run a short send outside every queue (cancelled at shutdown like the rest).

        With ``chat_id``, nothing is sent to a muted chat, and flood control on it mutes the chat.
        """
        if not self._accepting or (chat_id is not None and self.muted(chat_id)):
            coroutine.close()
            return
        task = asyncio.create_task(coroutine)
        self._spawned.add(task)
        task.add_done_callback(lambda done: self._spawn_done(done, chat_id))

    def _spawn_done(self, task: asyncio.Task[object], chat_id: int | None) -> None:
        self._spawned.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if chat_id is not None and isinstance(exc, RetryAfter):
                self.mute(chat_id, exc)
                return
            log.warning("A notice could not be sent (%s: %s).", type(exc).__name__, exc)

    async def _work(self, chat_id: int, queue: deque[_Job]) -> None:
        try:
            while queue:
                job = queue.popleft()
                await self._run(chat_id, job)
        finally:
            del self._workers[chat_id]
            if not queue or not self._accepting:
                self._waiting.pop(chat_id, None)

    async def _run(self, chat_id: int, job: _Job) -> None:
        try:
            async with asyncio.timeout(self.job_timeout):
                await job.run()
        except TimeoutError:
            log.warning("Gave up on an answer to chat %s after %.0fs.", chat_id, self.job_timeout)
        except Exception as exc:
            if isinstance(exc, RetryAfter):
                self.mute(chat_id, exc)
            elif _unanswerable(exc):
                # Flood control that outlasted the retries, a network outage, a user who blocked
                # the bot: nothing to fix and nobody to tell; the chat's next job goes ahead.
                log.warning("Could not answer chat %s (%s: %s).", chat_id, type(exc).__name__, exc)
            elif self._on_error is None:
                log.exception("Answer to chat %s failed", chat_id)
            else:
                await self._on_error(job.update, exc)

    def stop_accepting(self) -> None:
        """No new jobs from now on (shutdown has begun); jobs already queued still run."""
        self._accepting = False

    async def close(self, deadline: float | None = None) -> None:
        """Let queued work finish until ``deadline`` (``time.monotonic()``), then cancel the rest."""
        self.stop_accepting()
        tasks: list[asyncio.Task] = [*self._workers.values(), *self._spawned]
        if tasks:
            remaining = 0.0 if deadline is None else max(0.0, deadline - time.monotonic())
            _, pending = await asyncio.wait(tasks, timeout=remaining) if remaining > 0 else (set(), set(tasks))
            dropped = len(self)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if pending or dropped:
                log.info("Shutdown: cancelled %d answers in progress, dropped %d waiting.", len(pending), dropped)
        self._waiting.clear()


def _unanswerable(exc: BaseException) -> bool:
    """Telegram will not take an answer now, and telling the shopper would fail the same way."""
    return isinstance(exc, Forbidden) or (isinstance(exc, NetworkError) and not isinstance(exc, BadRequest))
