"""A stand-in for the Telegram Bot API HTTP server, for tests and benchmarks (no network needed).

python-telegram-bot talks to it through ``base_url``/``base_file_url`` exactly as to Telegram;
the test or benchmark plays the shopper (``user_sends_photo``...) and inspects what the bot sent.
"""

from .server import BOT_USER, DEFAULT_TOKEN, Album, AlbumItem, ApiError, FakeBotApi, RecordedCall, StoredFile

__all__ = ["BOT_USER", "DEFAULT_TOKEN", "Album", "AlbumItem", "ApiError", "FakeBotApi", "RecordedCall", "StoredFile"]
