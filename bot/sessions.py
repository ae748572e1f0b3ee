"""Query vectors of recent photos, so "Next 5" needs no second download and embedding.

Each entry is a private copy of one vector: a row of the inference batch it came from would keep
that whole batch alive (16 x 2048 floats per entry; up to ~0.76 GB over 5,000 sessions). The
oldest entries go first once ``max_sessions`` is reached.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict

import numpy as np

MAX_SESSIONS = 5000


class Sessions:
    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self.max_sessions = max_sessions
        self._vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._vectors)

    def remember(self, vector: np.ndarray) -> str:
        """Store a copy of ``vector``; returns the token for the button's callback data."""
        token = secrets.token_urlsafe(9)
        self._vectors[token] = np.array(vector, dtype=np.float32, copy=True)
        while len(self._vectors) > self.max_sessions:
            self._vectors.popitem(last=False)
        return token

    def get(self, token: str) -> np.ndarray | None:
        return self._vectors.get(token)
