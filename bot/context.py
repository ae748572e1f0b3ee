"""What handlers share, typed: ``context.runtime`` in every handler, ``application.bot_data`` in the hooks.

python-telegram-bot builds a context object for every update. :data:`CONTEXT_TYPES` makes it a
:class:`BotContext` and the application's ``bot_data`` a :class:`BotState`, so handlers and the
start/stop hooks (``bot/app.py``) read typed attributes instead of dictionary keys.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from telegram.ext import Application, CallbackContext, ContextTypes, ExtBot

from recommender.errors import NotLoadedError

from .chat_queue import ChatQueues
from .config import Settings
from .file_id_cache import FileIdCache
from .inference import InferenceService
from .metrics import BotMetrics, MetricsServer
from .rate_limit import BurstNotices, RateLimiter

if TYPE_CHECKING:
    from .reload import IndexReloader


@dataclass
class BotRuntime:
    """Everything handlers share, created once at start-up (``post_init``)."""

    settings: Settings
    inference: InferenceService
    file_ids: FileIdCache
    catalogue_size: int
    #: photo searches and "Next 5" pages per user (RATE_LIMIT_PER_MINUTE)
    rate_limiter: RateLimiter
    #: replies to anything else per user
    chatter: RateLimiter
    queues: ChatQueues
    #: photos being downloaded and analysed at once, over all chats (MAX_CONCURRENT_UPDATES)
    analysis: asyncio.Semaphore
    #: when a refused chat is told to slow down
    notices: BurstNotices = field(default_factory=BurstNotices)
    #: what /metrics reports (counted whether or not METRICS_PORT serves it)
    metrics: BotMetrics = field(default_factory=BotMetrics)
    #: the /metrics and /healthz server, when METRICS_PORT is set
    metrics_server: MetricsServer | None = None
    #: serves a rebuilt index without a restart (bot/reload.py)
    reloader: IndexReloader | None = None


@dataclass
class BotState:
    """The application's ``bot_data``: the runtime once start-up made it, and how far stopping got."""

    runtime: BotRuntime | None = None
    #: ``time.monotonic()`` of the first stop signal
    stopping_since: float | None = None
    #: polling has stopped (``post_stop`` ran): a late signal must not stop the event loop again
    stopped: bool = False


class BotContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], BotState]):
    """The context every handler gets."""

    @property
    def runtime(self) -> BotRuntime:
        runtime = self.bot_data.runtime
        if runtime is None:  # updates are only processed once post_init has run
            raise NotLoadedError("The bot's runtime is not ready: post_init has not run.")
        return runtime


CONTEXT_TYPES = ContextTypes(context=BotContext, bot_data=BotState)

#: The application as ``bot/app.py`` builds it (no job queue).
BotApplication = Application[ExtBot[None], BotContext, dict[Any, Any], dict[Any, Any], BotState, None]
