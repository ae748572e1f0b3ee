"""Keep a long-running bot's memory from creeping up through malloc fragmentation.

glibc gives every thread that allocates its own malloc arena (up to 8 per core). The bot decodes
photos on worker threads, and a large photo's buffers are freed into that thread's arena, where
they mostly stay, so resident memory creeps up with the number of arenas, not with the work
(``benchmarks/soak.py`` measures it). The bot caps the arenas before it starts any thread.
Elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

#: ``M_ARENA_MAX`` from glibc's <malloc.h>.
_M_ARENA_MAX = -8


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (call before threads start); True when it took effect."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return False
