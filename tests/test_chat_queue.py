"""Per-chat work queues (``bot/chat_queue.py``): order within a chat, no chat waits on another, bounded
backlogs, errors reported, flood-controlled chats muted, and a quick close."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from telegram.error import Forbidden, RetryAfter

from bot.chat_queue import ChatQueues


async def test_chat_queue_keeps_order_per_chat_and_bounds_the_backlog() -> None:
    done: list[tuple[int, int]] = []
    release = asyncio.Event()

    def job(chat: int, n: int):
        async def run() -> None:
            if chat == 1:
                await release.wait()  # chat 1 is stuck (e.g. waiting out a 429)
            done.append((chat, n))
        return run

    queues = ChatQueues(backlog=3)
    accepted = [queues.submit(1, job(1, n)) for n in range(6)]
    assert accepted == [True, True, True, False, False, False]  # 3 waiting at most
    for n in range(3):
        assert queues.submit(2, job(2, n))
    await asyncio.wait_for(_until(lambda: len(done) == 3), 5)
    assert done == [(2, 0), (2, 1), (2, 2)]  # chat 2 never waited for stuck chat 1
    release.set()
    await asyncio.wait_for(_until(lambda: len(done) == 6), 5)
    assert done[3:] == [(1, 0), (1, 1), (1, 2)]  # in arrival order
    assert queues.chats == 0 and len(queues) == 0  # idle chats leave nothing behind


async def test_chat_queue_close_cancels_stuck_work_by_the_deadline() -> None:
    started = asyncio.Event()

    async def stuck() -> None:
        started.set()
        await asyncio.sleep(3600)

    queues = ChatQueues(backlog=5)
    for _ in range(4):
        queues.submit(1, stuck)

    async def notice() -> None:
        await asyncio.sleep(3600)

    queues.spawn(notice())
    await started.wait()
    began = time.monotonic()
    await queues.close(deadline=time.monotonic() + 0.3)
    assert 0.25 <= time.monotonic() - began < 2.0
    assert queues.chats == 0 and len(queues) == 0
    assert not queues.submit(1, stuck)  # closed: nothing new is taken


async def test_chat_queue_reports_unexpected_errors_and_goes_on() -> None:
    errors: list[tuple[object, BaseException]] = []
    done: list[int] = []

    async def on_error(update: object, error: BaseException) -> None:
        errors.append((update, error))

    async def broken() -> None:
        raise ValueError("bug")

    async def flood_controlled() -> None:
        raise Forbidden("Forbidden: bot was blocked by the user")  # logged, nobody to tell

    async def fine() -> None:
        done.append(1)

    queues = ChatQueues(on_error=on_error)
    queues.submit(1, broken, update="update-1")
    queues.submit(1, flood_controlled, update="update-2")
    queues.submit(1, fine)
    await asyncio.wait_for(_until(lambda: done), 5)
    assert [(u, type(e)) for u, e in errors] == [("update-1", ValueError)]


async def test_chat_queue_mutes_a_chat_under_flood_control_and_spares_the_others() -> None:
    """A 429 that outlasted the retries: that chat's waiting answers are dropped and nothing is
    sent to it until Telegram's retry_after has passed; other chats go on."""
    done: list[tuple[int, int]] = []

    def job(chat: int, n: int):
        async def run() -> None:
            done.append((chat, n))
        return run

    async def refused() -> None:
        raise RetryAfter(timedelta(seconds=0.4))

    queues = ChatQueues(backlog=5)
    queues.submit(1, refused)
    queues.submit(1, job(1, 0))  # waiting behind the refused send: dropped with it
    queues.submit(2, job(2, 0))
    await asyncio.wait_for(_until(lambda: queues.chats == 0), 5)
    assert done == [(2, 0)]
    assert queues.muted(1) and not queues.muted(2)
    assert queues.submit(1, job(1, 1))  # accepted but not run: the chat is muted
    notice_sent: list[int] = []

    async def notice() -> None:
        notice_sent.append(1)

    queues.spawn(notice(), chat_id=1)
    await asyncio.sleep(0.05)
    assert done == [(2, 0)] and not notice_sent and queues.chats == 0
    await asyncio.sleep(0.4)  # flood control is over
    assert not queues.muted(1)
    assert queues.submit(1, job(1, 2))
    await asyncio.wait_for(_until(lambda: (1, 2) in done), 5)
    assert done == [(2, 0), (1, 2)]


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.01)
