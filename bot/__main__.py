"""``python -m bot`` and the ``lookalike-bot`` command start the bot."""

from __future__ import annotations

import sys

from bot.memory import limit_malloc_arenas


def run() -> int:
    """Tune malloc (arenas capped, mmap threshold fixed: bot/memory.py) before the bot starts its threads, then run the bot."""
    limit_malloc_arenas()
    from bot.app import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
