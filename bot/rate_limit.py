"""Per-user rate limit: a sliding one-minute window, so one shopper cannot starve the others."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import Callable


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] | None = None) -> None:
        self.per_minute = per_minute
        self._clock = clock or time.monotonic
        self._hits: dict[int, deque[float]] = defaultdict(deque)

    def retry_in(self, user_id: int) -> float:
        """0 if the user may go ahead now (and records the hit), else seconds until they may."""
        if self.per_minute <= 0:
            return 0.0
        now = self._clock()
        hits = self._hits[user_id]
        while hits and now - hits[0] >= 60.0:
            hits.popleft()
        if len(hits) >= self.per_minute:
            return 60.0 - (now - hits[0])
        hits.append(now)
        return 0.0
