"""Keep a long-running bot's memory from creeping up through malloc fragmentation.

glibc gives every thread that allocates its own malloc arena (up to 8 per core). The bot decodes
photos on worker threads, and a large photo's buffers are freed into that thread's arena, where
they mostly stay, so resident memory creeps up with the number of arenas, not with the work
(``benchmarks/soak.py`` measures it). The bot caps the arenas before it starts any thread.

glibc also raises its mmap threshold each time a large block is freed (up to 32 MB), so after the
first photos every decoded photo and every forward pass's activations come from the heap, which
keeps them. A fixed threshold of :data:`MMAP_THRESHOLD` keeps such blocks mapped on their own and
given back when freed: the 44k ResNet50 bot ended a benchmark at 683 MB instead of 739 MB
(``benchmarks/bot_latency.py``, same latency). Elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

#: ``M_ARENA_MAX`` and ``M_MMAP_THRESHOLD`` from glibc's <malloc.h>.
_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
#: Blocks from this size on are mapped on their own, and unmapped when freed (a 960x1280 photo is 3.7 MB).
MMAP_THRESHOLD = 1024 * 1024


def limit_malloc_arenas(arenas: int = 2, mmap_threshold: int = MMAP_THRESHOLD) -> bool:
    """Cap glibc's malloc arenas and fix its mmap threshold (call before threads start); True when it took effect."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_ARENA_MAX, arenas)) and bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return False
