"""Telegram bot: a shopper sends a photo, the bot answers with an album of similar catalogue products."""
