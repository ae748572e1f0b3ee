"""The typed context (``bot/context.py``): handlers get a BotContext whose runtime is typed, and the
application's bot_data is a BotState, not a dictionary of string keys."""

from __future__ import annotations

import pytest

from bot.app import build_application
from bot.config import Settings
from bot.context import BotContext, BotState
from recommender import NotLoadedError


def test_the_application_uses_the_typed_context_and_state() -> None:
    application = build_application(Settings(token="4242:FAKE-test-token-secret_part"))
    assert application.context_types.context is BotContext
    assert isinstance(application.bot_data, BotState) and application.bot_data.runtime is None
    context = BotContext(application)
    assert context.bot_data is application.bot_data
    with pytest.raises(NotLoadedError, match="post_init"):  # no handler runs before start-up made the runtime
        _ = context.runtime
