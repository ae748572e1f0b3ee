"""``python -m bot`` starts the bot."""

import sys

from bot.memory import limit_malloc_arenas

limit_malloc_arenas()  # before TensorFlow and the bot start their threads

from bot.app import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
