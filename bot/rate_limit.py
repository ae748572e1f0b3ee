"""Per-user rate limits and "slow down" notices, with tables that stay small in a bot that runs for months.

``RateLimiter`` is a sliding one-minute window per user, so one shopper cannot starve the others.
``BurstNotices`` decides when a refused chat is told so: once per burst, then silence until the
chat has been quiet for a while, so a flood is answered with one message instead of hundreds.
Both forget idle users, at most once per window (amortised O(1) per call).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 60.0
#: A burst of refused messages ends after this long without one.
BURST_GAP_S = 10.0


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] | None = None) -> None:
        self.per_minute = per_minute
        self._clock = clock or time.monotonic
        self._hits: dict[int, deque[float]] = {}
        self._pruned_at = self._clock()

    def __len__(self) -> int:
        """Users remembered now (idle ones are forgotten within two windows)."""
        return len(self._hits)

    def retry_in(self, user_id: int) -> float:
        """0 if the user may go ahead now (and records the hit), else seconds until they may."""
        if self.per_minute <= 0:
            return 0.0
        now = self._clock()
        self._prune(now)
        hits = self._hits.get(user_id)
        if hits is None:
            hits = self._hits[user_id] = deque()
        while hits and now - hits[0] >= WINDOW_S:
            hits.popleft()
        if len(hits) >= self.per_minute:
            return WINDOW_S - (now - hits[0])
        hits.append(now)
        return 0.0

    def _prune(self, now: float) -> None:
        if now - self._pruned_at < WINDOW_S:
            return
        self._pruned_at = now
        self._hits = {user: hits for user, hits in self._hits.items() if hits and now - hits[-1] < WINDOW_S}


class BurstNotices:
    """``should_tell(chat)`` is True for the first refusal of a burst, False for the rest of it."""

    def __init__(self, gap: float = BURST_GAP_S, clock: Callable[[], float] | None = None) -> None:
        self.gap = gap
        self._clock = clock or time.monotonic
        self._last: dict[int, float] = {}
        self._pruned_at = self._clock()

    def __len__(self) -> int:
        return len(self._last)

    def should_tell(self, chat_id: int) -> bool:
        now = self._clock()
        if now - self._pruned_at >= self.gap:
            self._pruned_at = now
            self._last = {chat: last for chat, last in self._last.items() if now - last < self.gap}
        last = self._last.get(chat_id)
        self._last[chat_id] = now
        return last is None or now - last >= self.gap
