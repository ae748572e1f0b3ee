"""Telegram bot: a shopper sends a photo, the bot answers with an album of similar catalogue products."""

import os

# Opt in to python-telegram-bot's future behaviour: durations (e.g. RetryAfter.retry_after) are timedeltas.
os.environ.setdefault("PTB_TIMEDELTA", "1")
