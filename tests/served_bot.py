"""A bot running in the test's event loop: the real Application (``bot.app.build_application``) polls
the stand-in Bot API over real HTTP, with the session's demo index and recommender.

``serve`` (a fixture, registered by conftest.py) starts one: ``async with serve(**settings) as served``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from telegram import Update

from bot.app import build_application, post_shutdown, post_stop, start_runtime
from bot.config import Settings
from bot.context import BotApplication, BotRuntime
from bot.pages import MAX_BUTTONS
from recommender.recommender import EXACT_MATCH_LINE
from standin_bot_api import Album, AlbumItem, FakeBotApi

ANSWER_TIMEOUT = 60.0
RATE_LIMIT = 30


@dataclass
class Served:
    """A running bot and the stand-in Bot API it talks to."""

    api: FakeBotApi
    application: BotApplication
    demo_index: Any

    @property
    def runtime(self) -> BotRuntime:
        runtime = self.application.bot_data.runtime
        assert runtime is not None
        return runtime

    def photo(self, n: int) -> bytes:
        catalogue = self.demo_index.catalogue
        return (catalogue.images_dir / catalogue.items[n].image).read_bytes()

    def name(self, n: int) -> str:
        return self.demo_index.catalogue.items[n].labels["productDisplayName"]

    def texts(self, chat: int) -> list[str]:
        return [m["text"] for m in self.api.sent_messages(chat) if "text" in m]

    def prompts(self, chat: int) -> list[dict]:
        """The bot's messages that carry a "Next 5" button (their current state)."""
        return [m for m in self.api.sent_messages(chat) if any(button["text"].startswith("Next") for button in first_row(m))]

    async def until(self, condition: Callable[[], object]) -> None:
        await self.api.await_for(lambda _: bool(condition()), timeout=ANSWER_TIMEOUT)

    async def albums(self, chat: int, count: int = 1) -> list[Album]:
        await self.until(lambda: len(self.api.albums(chat)) >= count)
        return self.api.albums(chat)

    async def answers(self, chat: int, count: int = 1) -> list[str]:
        await self.until(lambda: len(self.texts(chat)) >= count)
        return self.texts(chat)

    async def prompt(self, chat: int, count: int = 1) -> dict:
        await self.until(lambda: len(self.prompts(chat)) >= count)
        return self.prompts(chat)[-1]

    async def prompt_saying(self, chat: int, text: str) -> dict:
        await self.until(lambda: any(m["text"] == text for m in self.prompts(chat)))
        return next(m for m in self.prompts(chat) if m["text"] == text)

    async def press_next(self, prompt: dict, **press: Any) -> dict:
        return self.api.user_presses_button(prompt, prompt["reply_markup"]["inline_keyboard"][0][0]["callback_data"], **press)

    async def answered(self, query_ids: set[str]) -> None:
        """Wait until Telegram got a successful answer to each of these button presses (spinners stopped)."""
        await self.until(lambda: query_ids <= {c.params.get("callback_query_id") for c in self.api.calls_to("answerCallbackQuery") if c.ok})


def first_row(message: dict) -> list[dict]:
    keyboard = (message.get("reply_markup") or {}).get("inline_keyboard") or [[]]
    return list(keyboard[0])


def title(item: AlbumItem) -> str:
    """The product name: the caption's first line after an "Exact match" line, if any."""
    return (item.caption or "").removeprefix(EXACT_MATCH_LINE + "\n").split("\n")[0]


Serve = Callable[..., contextlib.AbstractAsyncContextManager[Served]]


@pytest.fixture
def serve(demo_index, demo_recommender, tmp_path: Path) -> Serve:
    """``async with serve(**settings) as served``: the bot running in this test's event loop."""

    @contextlib.asynccontextmanager
    async def running(*, max_buttons: int = MAX_BUTTONS, **overrides: Any) -> AsyncIterator[Served]:
        with FakeBotApi() as api:
            settings = Settings(
                token=api.token,
                index_dir=demo_index.path,
                file_id_cache=tmp_path / "telegram-file-ids.json",
                telegram_photo_dir=tmp_path / "telegram-photos",
                api_base_url=api.base_url,
                api_file_url=api.base_file_url,
                **{"rate_limit_per_minute": RATE_LIMIT, **overrides},
            )
            application = build_application(settings, max_buttons=max_buttons)
            async with application:  # initialize (getMe) ... shutdown, as run_polling does
                await start_runtime(application, settings, demo_recommender)  # post_init, minus loading the index
                await application.start()
                assert application.updater is not None
                await application.updater.start_polling(poll_interval=0.0, timeout=1, allowed_updates=Update.ALL_TYPES)
                try:
                    yield Served(api, application, demo_index)
                finally:
                    await application.updater.stop()
                    await application.stop()
                    await post_stop(application)
            await post_shutdown(application)

    return running
