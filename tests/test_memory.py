"""malloc arenas (``bot/memory.py``): capped on glibc, a harmless no-op elsewhere."""

from __future__ import annotations

import platform
import subprocess
import sys


def test_arenas_are_capped_on_glibc() -> None:
    # In a fresh interpreter: the cap applies to the whole process and is meant for before threads start.
    result = subprocess.run(
        [sys.executable, "-c", "from bot.memory import limit_malloc_arenas; print(limit_malloc_arenas())"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    expected = "True" if platform.libc_ver()[0] == "glibc" else "False"
    assert result.stdout.strip() == expected
