"""Per-user rate limits and "slow down" notices (``bot/rate_limit.py``), with tables that stay small."""

from __future__ import annotations

import pytest

from bot.rate_limit import BurstNotices, RateLimiter


def test_rate_limiter_window() -> None:
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    assert limiter.retry_in(7) == 0 and limiter.retry_in(7) == 0
    assert limiter.retry_in(7) == pytest.approx(60.0)
    assert limiter.retry_in(8) == 0  # other users are not affected
    now[0] = 60.0
    assert limiter.retry_in(7) == 0
    assert RateLimiter(0).retry_in(7) == 0  # 0 = unlimited


def test_rate_limiter_forgets_idle_users() -> None:
    """A bot that runs for months meets millions of users: the table holds only recent ones."""
    now = [0.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    for user in range(100_000):  # 100 new users a second for 1000 s
        now[0] = user / 100
        assert limiter.retry_in(user) == 0
    assert len(limiter) <= 2 * 60 * 100  # at most two windows' worth
    assert limiter.retry_in(99_999) == 0 and limiter.retry_in(99_999) == 0
    assert limiter.retry_in(99_999) > 0  # pruning never forgets a user still in their window


def test_burst_notices_tell_once_per_burst_and_forget() -> None:
    now = [0.0]
    notices = BurstNotices(gap=10.0, clock=lambda: now[0])
    told = []
    for step in range(100):  # a flood: one refused message every 0.2 s
        now[0] = step * 0.2
        told.append(notices.should_tell(1))
    assert told == [True] + [False] * 99
    assert notices.should_tell(2)  # other chats have their own bursts
    now[0] += 10.0  # quiet for the gap: a new burst is told again
    assert notices.should_tell(1)
    for chat in range(1000):
        now[0] += 1.0
        notices.should_tell(chat + 10)
    assert len(notices) <= 21  # two gaps' worth of chats at one a second
