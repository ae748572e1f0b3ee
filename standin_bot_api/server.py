"""A local fake of the Telegram Bot API HTTP server for end-to-end tests.

The server runs aiohttp on 127.0.0.1 (random port) in its own thread and event loop, so the
real python-telegram-bot ``Application`` can talk to it over HTTP no matter which loop the test
uses::

    with FakeBotApi() as server:
        app = (Application.builder().token(server.token).base_url(server.base_url)
               .base_file_url(server.base_file_url).build())
        server.user_sends_photo(jpeg_bytes, chat_id=1001)
        server.wait_for(lambda s: len(s.albums(1001)) >= 1, timeout=30)

Requests are accepted the way Telegram accepts them: query strings, url-encoded forms (non-string
values JSON encoded, as PTB sends them), JSON bodies and multipart uploads with ``attach://``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import io
import itertools
import json
import re
import secrets
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from PIL import Image

T = TypeVar("T")
JSON = dict[str, Any]

DEFAULT_TOKEN = "4242:TEST-fake-token_ABCdef0123456789"
DEFAULT_CHAT = 1001
MB = 1024 * 1024
MAX_PHOTO_BYTES = 10 * MB
MAX_DOWNLOAD_BYTES = 20 * MB
MAX_CAPTION = 1024
MAX_TEXT = 4096
BOT_USER: JSON = {
    "id": 4242, "is_bot": True, "first_name": "Test Bot", "username": "test_fashion_bot",
    "can_join_groups": True, "can_read_all_group_messages": False,
    "supports_inline_queries": False, "can_connect_to_business": False,
    "has_main_web_app": False,
}
_BOT_SENDER: JSON = {k: BOT_USER[k] for k in ("id", "is_bot", "first_name", "username")}
# Parameters Telegram treats as plain strings: never JSON-decode them.
_STRING_PARAMS = frozenset({
    "text", "caption", "parse_mode", "file_id", "callback_query_id", "inline_message_id", "url",
    "photo", "document", "video", "voice", "audio", "sticker", "animation", "action",
    "business_connection_id", "message_effect_id", "secret_token", "language_code", "query",
    "emoji", "title", "description", "name", "ip_address",
})
_CHAT_ACTIONS = frozenset({
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note",
    "upload_video_note",
})
_HTML_TAGS = frozenset({
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "span",
    "tg-spoiler", "tg-emoji", "blockquote", "tg-time",
})
_GROUP_TYPES = ("photo", "document", "video")
_FILE_PREFIX = {"photo": "AgACAgIAAxk", "document": "BQACAgIAAxk", "video": "BAACAgIAAxk",
                "voice": "AwACAgIAAxk", "sticker": "CAACAgIAAxk"}


class ApiError(Exception):
    """An error answered to the client as ``{"ok": false, ...}``."""

    def __init__(self, status: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.parameters = status, description, parameters


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


class _PhotoRefused(ApiError):
    """Telegram's servers could not process an uploaded photo (reported per item in albums)."""

    def __init__(self, reason: str) -> None:
        super().__init__(400, f"Bad Request: {reason}")
        self.reason = reason


@dataclass
class RecordedCall:
    """One bot→server API call, as received."""

    method: str                 # canonical name, e.g. "sendMediaGroup"
    params: JSON                # JSON-decoded parameters
    files: list[str]            # names of multipart file parts
    time: float
    status: int = 200
    result: Any = None
    description: str | None = None
    injected: bool = False      # answered by fail_next()

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class StoredFile:
    """A file known to the fake server (uploaded by the bot or sent by a shopper)."""

    file_id: str
    file_unique_id: str
    data: bytes
    file_size: int
    file_path: str
    kind: str
    width: int | None = None
    height: int | None = None


@dataclass
class AlbumItem:
    """One element of a sendMediaGroup call."""

    type: str
    source: str                 # "upload" or "file_id"
    caption: str | None
    file_id: str                # file_id of the largest size stored/reused
    media: str                  # the raw ``media`` value sent by the bot


@dataclass
class Album:
    """A successful sendMediaGroup call."""

    chat_id: int
    media_group_id: str
    items: list[AlbumItem]
    messages: list[JSON]


@dataclass
class _Fault:
    status: int | None
    retry_after: int | None
    delay: float | None
    description: str | None
    late: float | None = None


class FakeBotApi:
    """Fake Telegram Bot API server; see module docstring."""

    _METHODS = (
        "getMe", "getUpdates", "deleteWebhook", "setWebhook", "getWebhookInfo", "setMyCommands",
        "getMyCommands", "close", "logOut", "getFile", "sendMessage",
        "sendChatAction", "sendPhoto", "sendMediaGroup", "answerCallbackQuery",
        "editMessageText", "editMessageReplyMarkup", "deleteMessage",
    )

    def __init__(self, token: str = DEFAULT_TOKEN, *, strict_parse_mode: bool = True) -> None:
        self.token = token
        self.strict_parse_mode = strict_parse_mode
        self.port = 0
        self.calls: list[RecordedCall] = []
        self.updates: list[JSON] = []        # every update ever produced
        self.downloads: list[str] = []       # file_ids downloaded through the file route
        self.delivered_at: dict[int, float] = {}  # update_id -> time.perf_counter() of first delivery
        self._holding = 0
        self.commands: dict[str, list[JSON]] = {}
        self.webhook_url = ""
        self.webhook_secret: str | None = None
        #: (update_id, HTTP status or 0 for no answer) of every webhook delivery attempt, in order
        self.webhook_deliveries: list[tuple[int, int]] = []
        self._webhook_allowed: list[str] | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._lock = threading.RLock()
        #: notified after every request the bot makes (``wait_for`` re-checks its condition then)
        self._answered = threading.Condition(threading.Lock())
        self._requests_answered = 0
        self._pending: list[JSON] = []
        self._files: dict[str, StoredFile] = {}
        self._paths: dict[str, StoredFile] = {}
        self._photo_groups: dict[str, list[JSON]] = {}
        self._messages: dict[tuple[int, int], JSON] = {}
        self._bot_messages: list[tuple[int, int]] = []
        self._albums: list[Album] = []
        self._users: dict[int, JSON] = {}
        self._next_msg: dict[int, int] = {}
        self._open_queries: set[str] = set()
        self._faults: dict[str, list[_Fault]] = {}
        self._injected: dict[str, int] = {}
        self._flood: dict[int, tuple[int, float, int | None, list[float]]] = {}  # flood_control()
        self.flood_refusals: dict[int, int] = {}  # chat_id -> 429s answered by flood_control()
        self._ids = itertools.count(1)
        self._update_ids = itertools.count(100_000)
        self._routes = {m.lower(): m for m in self._METHODS}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._wakeup: asyncio.Event | None = None
        self._closed = False

    # ----------------------------------------------------------------- lifecycle
    @property
    def base_url(self) -> str:
        """URL prefix for PTB's ``base_url`` (PTB appends the token)."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        """URL prefix for PTB's ``base_file_url``."""
        return f"http://127.0.0.1:{self.port}/file/bot"

    def start(self) -> FakeBotApi:
        """Start the server thread; returns once the port is listening."""
        self._closed = False
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="FakeBotApi", daemon=True)
        self._thread.start()
        if not ready.wait(10) or errors:
            raise errors[0] if errors else RuntimeError("FakeBotApi did not start within 10 s")
        return self

    async def _serve(self) -> None:
        self._wakeup = asyncio.Event()
        app = web.Application(client_max_size=100 * MB, middlewares=[self._announce_requests])
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        """Stop the server, waking any pending long poll."""
        if self._loop is None or self._thread is None:
            return
        self._closed = True
        self._notify()
        if self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(10)
        # Handlers still holding a late answer (fail_next(late=...)) end here, not as "Task was destroyed".
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> FakeBotApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _notify(self) -> None:
        if self._loop is not None and self._wakeup is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def _request_done(self) -> None:
        """Wake ``wait_for``: a request changed (or may have changed) what the bot has done."""
        with self._answered:
            self._requests_answered += 1
            self._answered.notify_all()

    # ----------------------------------------------------------------- HTTP layer
    @web.middleware
    async def _announce_requests(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Every request, answered or refused, wakes ``wait_for``."""
        try:
            return await handler(request)
        finally:
            self._request_done()

    async def _handle_unknown(self, request: web.Request) -> web.Response:
        return _error_response(ApiError(404, "Not Found"))

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error_response(ApiError(401, "Unauthorized"))
        with self._lock:
            stored = self._paths.get(request.match_info["path"])
            if stored is not None:
                self.downloads.append(stored.file_id)
        if stored is None:
            return _error_response(ApiError(404, "Not Found"))
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def _handle_api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error_response(ApiError(401, "Unauthorized"))
        method = self._routes.get(request.match_info["method"].lower())
        try:
            params, files = await _read_params(request)
        except Exception as exc:
            return _error_response(_bad(f"can't parse request: {exc!r}"))
        call = RecordedCall(method or request.match_info["method"], params,
                            sorted(files), time.time())
        with self._lock:
            self.calls.append(call)
            fault = self._take_fault(method) if method else None
        try:
            if method is None:
                raise ApiError(404, "Not Found")
            if fault is not None:
                call.injected = fault.status is not None or fault.retry_after is not None
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.retry_after is not None:
                    raise ApiError(429, f"Too Many Requests: retry after {fault.retry_after}",
                                   {"retry_after": fault.retry_after})
                if fault.status is not None:
                    raise ApiError(fault.status, fault.description or _phrase(fault.status))
            self._check_flood(method, params)
            handler: Callable[[JSON, dict[str, _Part]], Any] = getattr(self, "_api_" + method)
            result = handler(params, files)
            if asyncio.iscoroutine(result):
                result = await result
        except ApiError as err:
            call.status, call.description = err.status, err.description
            return _error_response(err)
        except Exception as exc:
            call.status, call.description = 500, f"Internal Server Error: fake bug {exc!r}"
            return _error_response(ApiError(500, call.description))
        call.result = result
        if fault is not None and fault.late:
            await asyncio.sleep(fault.late)  # done, but the client may have stopped waiting
        return web.json_response({"ok": True, "result": result})

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method.lower())
        if not queue:
            return None
        self._injected[method] = self._injected.get(method, 0) + 1
        return queue.pop(0)

    # ----------------------------------------------------------------- fault injection
    def fail_next(self, method: str, times: int = 1, *, retry_after: int | None = None,
                  status: int | None = None, delay: float | None = None,
                  description: str | None = None, late: float | None = None) -> None:
        """Make the next ``times`` calls of ``method`` fail (429/``status``) and/or be slow.

        With neither ``retry_after``, ``status``, ``delay`` nor ``late`` the call fails with
        HTTP 500. A ``delay`` alone only slows the call down; it is then answered normally.
        ``late`` performs the call (the album is sent, the message stored) and then holds the
        answer that many seconds: past a client's read timeout, the client never learns that
        its call succeeded, as when Telegram answers after the read timeout.
        """
        if retry_after is None and status is None and delay is None and late is None:
            status = 500
        fault = _Fault(status, retry_after, delay, description, late)
        with self._lock:
            self._faults.setdefault(method.lower(), []).extend([fault] * times)

    def flood_control(self, chat_id: int, messages: int, seconds: float, retry_after: int | None = None) -> None:
        """Telegram's per-chat flood control: once the bot sent ``messages`` messages to ``chat_id``
        within ``seconds``, further sends to it get 429 until the window slides (refused attempts
        do not count). The 429 asks to retry after ``retry_after`` seconds, by default as long as
        it takes the oldest send to leave the window (rounded up), as Telegram does."""
        with self._lock:
            self._flood[chat_id] = (messages, seconds, retry_after, [])

    def _check_flood(self, method: str, p: JSON) -> None:
        if not method.startswith("send") or method == "sendChatAction":
            return
        try:
            chat_id = int(p.get("chat_id"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return
        with self._lock:
            rule = self._flood.get(chat_id)
            if rule is None:
                return
            limit, window, retry_after, sent = rule
            now = time.monotonic()
            sent[:] = [t for t in sent if now - t < window]
            if len(sent) >= limit:
                self.flood_refusals[chat_id] = self.flood_refusals.get(chat_id, 0) + 1
                wait = retry_after if retry_after is not None else max(1, -int(-(window - (now - sent[0])) // 1))
                raise ApiError(429, f"Too Many Requests: retry after {wait}", {"retry_after": wait})
            sent.append(now)

    def injected_count(self, method: str | None = None) -> int:
        """How many calls (of ``method``, or in total) were answered by ``fail_next``."""
        with self._lock:
            if method is None:
                return sum(self._injected.values())
            canonical = self._routes.get(method.lower(), method)
            return self._injected.get(canonical, 0)

    # ----------------------------------------------------------------- files & ids
    def _new_id(self, kind: str) -> tuple[str, str]:
        n = next(self._ids)
        prefix = _FILE_PREFIX.get(kind, "BQACAgIAAxk")
        return f"{prefix}{n:06d}{secrets.token_hex(8)}", f"AQAD{n:06d}{secrets.token_hex(4)}"

    def _store(self, data: bytes, kind: str, ext: str, *, declared_size: int | None = None,
               width: int | None = None, height: int | None = None) -> StoredFile:
        with self._lock:
            file_id, unique = self._new_id(kind)
            stored = StoredFile(file_id, unique, data, declared_size or len(data),
                                f"{kind}s/file_{len(self._files)}.{ext}", kind, width, height)
            self._files[file_id] = stored
            self._paths[stored.file_path] = stored
            return stored

    def _photo_sizes(self, data: bytes) -> list[JSON]:
        """Store an image and its 90/320 thumbnails; PhotoSize list sorted small→large."""
        image = _open_image(data)
        width, height = image.size
        sizes: list[JSON] = []
        for side in (90, 320):
            if max(width, height) > side:
                thumb = image.convert("RGB")
                thumb.thumbnail((side, side))
                buf = io.BytesIO()
                thumb.save(buf, "JPEG", quality=80)
                sizes.append(_photo_size(self._store(buf.getvalue(), "photo", "jpg",
                                                     width=thumb.width, height=thumb.height)))
        sizes.append(_photo_size(self._store(data, "photo", "jpg", width=width, height=height)))
        with self._lock:
            self._photo_groups.update((size["file_id"], sizes) for size in sizes)
        return sizes

    def file(self, file_id: str) -> StoredFile:
        """The stored file behind ``file_id`` (KeyError if unknown)."""
        with self._lock:
            return self._files[file_id]

    # ----------------------------------------------------------------- shopper simulation
    def _user(self, user_id: int, first_name: str = "Shopper") -> JSON:
        with self._lock:
            return self._users.setdefault(user_id, {
                "id": user_id, "is_bot": False, "first_name": first_name,
                "username": f"shopper{user_id}", "language_code": "en"})

    def _chat(self, chat_id: int) -> JSON:
        if chat_id < 0:  # a group chat (Telegram's group ids are negative); members write as themselves
            return {"id": chat_id, "type": "supergroup", "title": f"Group {-chat_id}"}
        with self._lock:
            user = self._users.get(chat_id)
        if user is None:
            raise _bad("chat not found")
        return {"id": chat_id, "type": "private", "first_name": user["first_name"],
                "username": user["username"]}

    def _message(self, chat_id: int, sender: JSON, **content: Any) -> JSON:
        with self._lock:
            message_id = self._next_msg.get(chat_id, 1)
            self._next_msg[chat_id] = message_id + 1
            msg = {"message_id": message_id, "from": sender, "chat": self._chat(chat_id),
                   "date": int(time.time()),
                   **{k: v for k, v in content.items() if v is not None}}
            self._messages[(chat_id, message_id)] = msg
            if sender["id"] == BOT_USER["id"]:
                self._bot_messages.append((chat_id, message_id))
            return msg

    def _push(self, kind: str, payload: JSON) -> JSON:
        with self._lock:
            update = {"update_id": next(self._update_ids), kind: payload}
            self.updates.append(update)
            self._pending.append(update)
        self._notify()
        return update

    def _user_message(self, chat_id: int, user_id: int | None, reply_to: JSON | None = None, **content: Any) -> JSON:
        """A user's message; in a group (negative ``chat_id``) from ``user_id``; ``reply_to``: the message
        (an update or a message dict, the bot's own included) it replies to."""
        if chat_id < 0 and user_id is None:
            raise ValueError("a group message needs the user_id of its sender")
        user = self._user(chat_id if user_id is None else user_id)
        if chat_id > 0:
            self._user(chat_id)
        if reply_to is not None:
            replied = reply_to.get("message", reply_to)
            content["reply_to_message"] = {k: v for k, v in replied.items() if k != "reply_to_message"}
        return self._push("message", self._message(chat_id, user, **content))

    def user_deletes(self, message: Any) -> None:
        """The shopper deletes one of their messages (an update, a message dict or a PTB ``Message``).

        Telegram sends bots no update for that; replies to it then fail with "message to be
        replied not found" unless they allow sending without the reply.
        """
        if isinstance(message, dict):
            message = message.get("message", message)
            key = (message["chat"]["id"], message["message_id"])
        else:
            key = (message.chat_id, message.message_id)
        with self._lock:
            if self._messages.pop(key, None) is None:
                raise ValueError(f"message {key[1]} in chat {key[0]} does not exist")

    def user_edits(self, update: JSON, **changes: Any) -> JSON:
        """The shopper edits an earlier message (e.g. its caption): an ``edited_message`` update."""
        edited = {**update["message"], **changes, "edit_date": int(time.time())}
        return self._push("edited_message", edited)

    def user_sends_text(self, text: str, chat_id: int = DEFAULT_CHAT,
                        user_id: int | None = None, reply_to: JSON | None = None) -> JSON:
        """A text message; "/cmd ..." gets a ``bot_command`` entity; ``reply_to`` a message it answers."""
        entities = None
        if text.startswith("/"):
            entities = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return self._user_message(chat_id, user_id, reply_to, text=text, entities=entities)

    def user_sends_photo(self, image_bytes: bytes, chat_id: int = DEFAULT_CHAT,
                         user_id: int | None = None, caption: str | None = None,
                         media_group_id: str | None = None, reply_to: JSON | None = None) -> JSON:
        """A compressed photo; ``photo`` holds 90px/320px thumbnails and the original."""
        try:
            sizes = self._photo_sizes(image_bytes)
        except ApiError as err:
            raise ValueError(f"not an image: {err.description}") from None
        entities = None
        if caption and caption.startswith("/"):
            entities = [{"type": "bot_command", "offset": 0, "length": len(caption.split()[0])}]
        return self._user_message(chat_id, user_id, reply_to, photo=sizes, caption=caption,
                                  caption_entities=entities, media_group_id=media_group_id)

    def user_sends_album(self, images: list[bytes], chat_id: int = DEFAULT_CHAT,
                         user_id: int | None = None, caption: str | None = None) -> list[JSON]:
        """Several photo messages sharing one ``media_group_id`` (caption on the first)."""
        group = str(10**17 + next(self._ids))
        return [self.user_sends_photo(img, chat_id, user_id, caption if i == 0 else None, group)
                for i, img in enumerate(images)]

    def user_sends_document(self, data: bytes, file_name: str = "file.bin",
                            mime_type: str = "application/octet-stream",
                            chat_id: int = DEFAULT_CHAT, user_id: int | None = None,
                            caption: str | None = None,
                            declared_size: int | None = None) -> JSON:
        """A document; ``declared_size`` fakes a large ``file_size`` (e.g. > 20 MB)."""
        ext = file_name.rsplit(".", 1)[-1] if "." in file_name else "bin"
        stored = self._store(data, "document", ext, declared_size=declared_size)
        doc = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
               "file_name": file_name, "mime_type": mime_type, "file_size": stored.file_size}
        return self._user_message(chat_id, user_id, document=doc, caption=caption)

    def user_sends_sticker(self, chat_id: int = DEFAULT_CHAT, user_id: int | None = None,
                           emoji: str = "😀") -> JSON:
        """A static sticker message."""
        stored = self._store(b"RIFF\x00\x00\x00\x00WEBP", "sticker", "webp")
        sticker = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                   "type": "regular", "width": 512, "height": 512, "is_animated": False,
                   "is_video": False, "emoji": emoji, "file_size": stored.file_size}
        return self._user_message(chat_id, user_id, sticker=sticker)

    def user_sends_voice(self, chat_id: int = DEFAULT_CHAT, user_id: int | None = None,
                         duration: int = 3) -> JSON:
        """A voice note message."""
        stored = self._store(b"OggS\x00fake-voice", "voice", "oga")
        voice = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                 "duration": duration, "mime_type": "audio/ogg", "file_size": stored.file_size}
        return self._user_message(chat_id, user_id, voice=voice)

    def user_sends_video(self, chat_id: int = DEFAULT_CHAT, user_id: int | None = None,
                         duration: int = 5, caption: str | None = None) -> JSON:
        """A video message."""
        stored = self._store(b"\x00\x00\x00\x18ftypmp42fake", "video", "mp4")
        video = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                 "width": 640, "height": 360, "duration": duration, "mime_type": "video/mp4",
                 "file_size": stored.file_size}
        return self._user_message(chat_id, user_id, video=video, caption=caption)

    def user_presses_button(self, message: Any, callback_data: str,
                            user_id: int | None = None, *, forged: bool = False) -> JSON:
        """Press the inline button carrying ``callback_data`` under a bot message.

        ``message`` is a message dict (e.g. from ``sent_messages``) or a PTB ``Message``.
        ``forged=True`` sends ``callback_data`` even if no button carries it (a modified client,
        or a button of an older bot version).
        """
        if isinstance(message, dict):
            chat_id, message_id = message["chat"]["id"], message["message_id"]
        else:
            chat_id, message_id = message.chat_id, message.message_id
        with self._lock:
            current = self._messages.get((chat_id, message_id))
            if current is None:
                raise ValueError(f"message {message_id} in chat {chat_id} does not exist")
            rows = (current.get("reply_markup") or {}).get("inline_keyboard", [])
            if not forged and callback_data not in [b.get("callback_data") for row in rows for b in row]:
                raise ValueError(f"message {message_id} has no button with {callback_data!r}")
            query_id = str(next(self._ids) * 7919)
            self._open_queries.add(query_id)
            query = {"id": query_id, "from": self._user(chat_id if user_id is None else user_id),
                     "message": json.loads(json.dumps(current)),
                     "chat_instance": str(chat_id * 31), "data": callback_data}
        return self._push("callback_query", query)

    # ----------------------------------------------------------------- recorded state
    def calls_to(self, method: str) -> list[RecordedCall]:
        """Recorded calls of one method (name case-insensitive)."""
        canonical = self._routes.get(method.lower(), method)
        with self._lock:
            return [c for c in self.calls if c.method == canonical]

    def sent_messages(self, chat_id: int | None = None) -> list[JSON]:
        """Messages the bot sent (current state: edits applied, deleted ones dropped)."""
        with self._lock:
            keys = [k for k in self._bot_messages if chat_id is None or k[0] == chat_id]
            return [self._messages[k] for k in keys if k in self._messages]

    def albums(self, chat_id: int | None = None) -> list[Album]:
        """Successful sendMediaGroup calls, oldest first."""
        with self._lock:
            return [a for a in self._albums if chat_id is None or a.chat_id == chat_id]

    def chat_actions(self, chat_id: int | None = None) -> list[str]:
        """Actions of successful sendChatAction calls."""
        return [c.params.get("action", "") for c in self.calls_to("sendChatAction")
                if c.ok and (chat_id is None or c.params.get("chat_id") == chat_id)]

    @contextlib.contextmanager
    def simultaneously(self) -> Iterator[None]:
        """Updates created inside the block reach the bot together, in one getUpdates answer."""
        with self._lock:
            self._holding += 1
        try:
            yield
        finally:
            with self._lock:
                self._holding -= 1
            self._notify()

    def pending_updates(self) -> list[JSON]:
        """Updates not yet confirmed through getUpdates' offset."""
        with self._lock:
            return list(self._pending)

    def summary(self, last: int = 15) -> str:
        """Human-readable digest of what the server received (for failure messages)."""
        with self._lock:
            counts: dict[str, int] = {}
            for c in self.calls:
                counts[c.method] = counts.get(c.method, 0) + 1
            lines = [f"calls per method: {counts}", f"pending updates: {len(self._pending)}",
                     f"albums: {len(self._albums)}", f"last {last} calls:"]
            for c in self.calls[-last:]:
                params = {k: (v if len(repr(v)) < 80 else repr(v)[:77] + "...")
                          for k, v in c.params.items()}
                lines.append(f"  {c.method} -> {c.status} {c.description or ''} "
                             f"params={params} files={c.files}")
        return "\n".join(lines)

    def _satisfied(self, predicate: Callable[[FakeBotApi], T], deadline: float, timeout: float) -> T | None:
        """The predicate's truthy value, None to keep waiting, TimeoutError past the deadline."""
        value = predicate(self)
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout}s\n{self.summary()}")
        return None

    def wait_for(self, predicate: Callable[[FakeBotApi], T], timeout: float = 10.0,
                 interval: float = 0.02) -> T:
        """Block until ``predicate(self)`` is truthy; TimeoutError with a summary otherwise.

        Checked again as soon as the bot's next request is answered, and at least every
        ``interval`` seconds (for conditions that change otherwise): no busy polling, which took
        the benchmarks' cores and this process's GIL from the server thread."""
        deadline = time.monotonic() + timeout
        while True:
            with self._answered:
                seen = self._requests_answered
            if (value := self._satisfied(predicate, deadline, timeout)) is not None:
                return value
            with self._answered:
                if self._requests_answered == seen:
                    self._answered.wait(timeout=min(interval, max(0.0, deadline - time.monotonic())))

    async def await_for(self, predicate: Callable[[FakeBotApi], T], timeout: float = 10.0,
                        interval: float = 0.02) -> T:
        """Async ``wait_for`` that does not block the caller's event loop."""
        deadline = time.monotonic() + timeout
        while (value := self._satisfied(predicate, deadline, timeout)) is None:
            await asyncio.sleep(interval)
        return value

    # ----------------------------------------------------------------- API methods
    def _api_getMe(self, p: JSON, f: dict[str, _Part]) -> JSON:
        return BOT_USER

    async def _api_getUpdates(self, p: JSON, f: dict[str, _Part]) -> list[JSON]:
        if self.webhook_url:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is "
                                "active; use deleteWebhook to delete the webhook first")
        offset, limit = int(p.get("offset") or 0), min(max(int(p.get("limit") or 100), 1), 100)
        allowed = p.get("allowed_updates") or None  # like Telegram: other kinds are dropped
        deadline = time.monotonic() + float(p.get("timeout") or 0)
        assert self._wakeup is not None
        while True:
            self._wakeup.clear()
            with self._lock:
                if offset > 0:
                    self._pending = [u for u in self._pending if u["update_id"] >= offset]
                elif offset < 0:
                    self._pending = self._pending[offset:]
                if allowed:
                    self._pending = [u for u in self._pending if set(u) & set(allowed)]
                if self._pending and not self._holding:
                    batch = self._pending[:limit]
                    now = time.perf_counter()
                    for update in batch:
                        self.delivered_at.setdefault(update["update_id"], now)
                    return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                return []
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _drop_if_asked(self, p: JSON) -> None:
        if p.get("drop_pending_updates") is True:
            with self._lock:
                self._pending.clear()

    def _api_deleteWebhook(self, p: JSON, f: dict[str, _Part]) -> bool:
        self._drop_if_asked(p)
        self.webhook_url = ""
        self.webhook_secret = None
        self._notify()
        return True

    def _api_setWebhook(self, p: JSON, f: dict[str, _Part]) -> bool:
        """Like Telegram: from now on pending and new updates are POSTed to the URL (with the secret
        token in ``X-Telegram-Bot-Api-Secret-Token``), in order, each until it is answered 2xx."""
        self._drop_if_asked(p)
        url = str(p.get("url") or "")
        if url and urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise _bad("Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443")
        secret = p.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _bad("Bad Request: secret token contains unallowed characters")
        self.webhook_url, self.webhook_secret = url, (str(secret) if secret is not None else None)
        allowed = p.get("allowed_updates")
        self._webhook_allowed = list(allowed) if allowed else None
        if url and (self._webhook_task is None or self._webhook_task.done()):
            self._webhook_task = asyncio.get_running_loop().create_task(self._deliver_webhooks())
        self._notify()
        return True

    async def _deliver_webhooks(self) -> None:
        """POST pending updates to the webhook, oldest first; a refused or failed one is retried (as
        Telegram does, sooner), so updates are never lost or reordered."""
        assert self._wakeup is not None
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while self.webhook_url and not self._closed:
                self._wakeup.clear()
                with self._lock:
                    if self._webhook_allowed:
                        self._pending = [u for u in self._pending if set(u) & set(self._webhook_allowed)]
                    update = self._pending[0] if self._pending and not self._holding else None
                    url, secret = self.webhook_url, self.webhook_secret
                if update is None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), 0.5)
                    continue
                headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
                try:
                    async with session.post(url, json=update, headers=headers) as response:
                        status = response.status
                except (TimeoutError, aiohttp.ClientError):
                    status = 0
                self.webhook_deliveries.append((update["update_id"], status))
                if 200 <= status < 300:
                    with self._lock:
                        self._pending = [u for u in self._pending if u is not update]
                        self.delivered_at.setdefault(update["update_id"], time.perf_counter())
                else:
                    await asyncio.sleep(0.2)

    def _api_getWebhookInfo(self, p: JSON, f: dict[str, _Part]) -> JSON:
        return {"url": self.webhook_url, "has_custom_certificate": False,
                "pending_update_count": len(self.pending_updates())}

    @staticmethod
    def _commands_key(p: JSON) -> str:
        return json.dumps([p.get("scope") or {"type": "default"}, p.get("language_code", "")])

    def _api_setMyCommands(self, p: JSON, f: dict[str, _Part]) -> bool:
        commands = p.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            raise _bad("commands must be an array of at most 100 BotCommand")
        for cmd in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(cmd.get("command", ""))):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(str(cmd.get("description", ""))) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
        self.commands[self._commands_key(p)] = commands
        return True

    def _api_getMyCommands(self, p: JSON, f: dict[str, _Part]) -> list[JSON]:
        return self.commands.get(self._commands_key(p), [])

    def _api_close(self, p: JSON, f: dict[str, _Part]) -> bool:
        return True

    def _api_logOut(self, p: JSON, f: dict[str, _Part]) -> bool:
        return True

    def _api_getFile(self, p: JSON, f: dict[str, _Part]) -> JSON:
        stored = self._files.get(str(p.get("file_id", "")))
        if stored is None:
            raise _bad("invalid file_id")
        if stored.file_size > MAX_DOWNLOAD_BYTES:
            raise _bad("file is too big")
        return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                "file_size": stored.file_size, "file_path": stored.file_path}

    def _check_text(self, text: Any, parse_mode: Any, limit: int, what: str) -> None:
        if len(str(text)) > limit:
            raise _bad(f"{what} is too long")
        if self.strict_parse_mode and parse_mode:
            error = _parse_mode_error(str(text), str(parse_mode))
            if error:
                raise _bad(f"can't parse entities: {error}")

    def _reply_markup(self, p: JSON) -> JSON | None:
        markup = p.get("reply_markup")
        if markup is None:
            return None
        rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
        if rows is None:
            return markup if isinstance(markup, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise _bad("field \"inline_keyboard\" of the InlineKeyboardMarkup must be an Array")
        for button in (b for row in rows for b in row):
            if not button.get("text"):
                raise _bad("BUTTON_TEXT_INVALID")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                raise _bad("BUTTON_DATA_INVALID")
        return markup

    def _reply_to(self, chat_id: int, p: JSON) -> JSON | None:
        """The message replied to; a missing one fails unless sending without it is allowed."""
        ref = p.get("reply_parameters") or {}
        if not isinstance(ref, dict):
            raise _bad("can't parse reply parameters JSON object")
        target = ref.get("message_id") or p.get("reply_to_message_id")
        if not target:
            return None
        with self._lock:
            replied = self._messages.get((chat_id, _int({"message_id": target}, "message_id")))
        allowed = ref.get("allow_sending_without_reply", p.get("allow_sending_without_reply"))
        if replied is None and allowed is not True:
            raise _bad("message to be replied not found")
        if replied is None:
            return None
        return {k: v for k, v in replied.items() if k != "reply_to_message"}

    def _api_sendMessage(self, p: JSON, f: dict[str, _Part]) -> JSON:
        chat, text = self._chat(_int(p, "chat_id")), p.get("text")
        if not text or not str(text).strip():
            raise _bad("message text is empty")
        self._check_text(text, p.get("parse_mode"), MAX_TEXT, "message")
        return self._message(chat["id"], _BOT_SENDER, text=str(text),
                             reply_markup=self._reply_markup(p),
                             reply_to_message=self._reply_to(chat["id"], p))

    def _api_sendChatAction(self, p: JSON, f: dict[str, _Part]) -> bool:
        self._chat(_int(p, "chat_id"))
        if p.get("action") not in _CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        return True

    def _resolve_media(self, kind: str, media: Any, files: dict[str, _Part],
                       field_name: str) -> tuple[str, list[JSON] | JSON]:
        """Validate one media reference; returns (source, photo sizes or file object)."""
        part: _Part | None = None
        if isinstance(media, _Part):
            part = media
        elif isinstance(media, str) and media.startswith("attach://"):
            part = files.get(media[len("attach://"):])
            if part is None:
                raise _bad(f"can't find attached file \"{media}\" for {field_name}")
        elif isinstance(media, str) and media.startswith(("http://", "https://")):
            raise _bad("failed to get HTTP URL content")
        elif isinstance(media, str) and media in self._files:
            stored = self._files[media]
            if kind == "photo":
                if stored.kind != "photo":
                    raise _bad(f"can't use file of type {stored.kind.title()} as Photo")
                return "file_id", self._photo_groups.get(media, [_photo_size(stored)])
            return "file_id", _file_obj(stored, kind)
        if part is None:
            raise _bad("wrong file identifier/HTTP URL specified")
        if kind == "photo":
            if len(part.data) > MAX_PHOTO_BYTES:
                raise _bad(f"PHOTO_INVALID_DIMENSIONS (photo is too big: {len(part.data)} "
                           "bytes > 10 MB)")
            try:
                width, height = _open_image(part.data).size
            except ApiError:
                raise _PhotoRefused("IMAGE_PROCESS_FAILED") from None
            if width + height > 10000 or max(width, height) > 20 * min(width, height):
                raise _PhotoRefused("PHOTO_INVALID_DIMENSIONS")
            return "upload", self._photo_sizes(part.data)
        if len(part.data) > 50 * MB:
            raise ApiError(413, "Request Entity Too Large")
        filename = part.filename or "file"
        ext = filename.rsplit(".", 1)[-1] if "." in filename else "bin"
        stored = self._store(part.data, kind, ext)
        return "upload", _file_obj(stored, kind, filename, part.content_type)

    def _api_sendPhoto(self, p: JSON, f: dict[str, _Part]) -> JSON:
        chat = self._chat(_int(p, "chat_id"))
        media = f.get("photo") or p.get("photo")
        if not media:
            raise _bad("there is no photo in the request")
        if p.get("caption"):
            self._check_text(p["caption"], p.get("parse_mode"), MAX_CAPTION, "message caption")
        _, sizes = self._resolve_media("photo", media, f, "photo")
        return self._message(chat["id"], _BOT_SENDER, photo=sizes, caption=p.get("caption"),
                             reply_markup=self._reply_markup(p),
                             reply_to_message=self._reply_to(chat["id"], p))

    def _api_sendMediaGroup(self, p: JSON, f: dict[str, _Part]) -> list[JSON]:
        chat = self._chat(_int(p, "chat_id"))
        media = p.get("media")
        if not isinstance(media, list):
            raise _bad("can't parse media JSON object")
        if len(media) < 2:
            raise _bad("there must be at least 2 media in the media group")
        if len(media) > 10:
            raise _bad("too much messages to send as an album")
        for i, item in enumerate(media, 1):
            if not isinstance(item, dict) or item.get("type") not in _GROUP_TYPES:
                raise _bad(f"can't parse InputMedia #{i}: unsupported media type")
            if item.get("caption"):
                self._check_text(item["caption"], item.get("parse_mode"), MAX_CAPTION,
                                 "message caption")
            ref = item.get("media")
            if isinstance(ref, str) and ref.startswith("attach://") \
                    and ref[len("attach://"):] not in f:
                raise _bad(f"can't find attached file \"{ref}\" for media #{i}")
        # Like Telegram: file errors (unknown file_id, a photo over 10 MB) fail the request as a
        # whole; a photo Telegram's servers cannot process fails it naming the first such item.
        resolved: list[tuple[str, list[JSON] | JSON]] = []
        refused: tuple[int, str] | None = None
        for i, item in enumerate(media, 1):
            try:
                resolved.append(self._resolve_media(item["type"], item.get("media"), f,
                                                    f"media #{i}"))
            except _PhotoRefused as err:
                refused = refused or (i, err.reason)
        if refused is not None:
            raise _bad(f"failed to send message #{refused[0]} with the error message "
                       f"\"{refused[1]}\"")
        reply_to = self._reply_to(chat["id"], p)
        group_id = str(10**17 + next(self._ids))
        messages, items = [], []
        for item, (source, obj) in zip(media, resolved, strict=True):
            kind = item["type"]
            messages.append(self._message(chat["id"], _BOT_SENDER, media_group_id=group_id,
                                          caption=item.get("caption"),
                                          reply_to_message=reply_to, **{kind: obj}))
            largest = obj[-1]["file_id"] if isinstance(obj, list) else obj["file_id"]
            items.append(AlbumItem(kind, source, item.get("caption"), largest, str(item["media"])))
        with self._lock:
            self._albums.append(Album(chat["id"], group_id, items, messages))
        return messages

    def _api_answerCallbackQuery(self, p: JSON, f: dict[str, _Part]) -> bool:
        with self._lock:
            query_id = str(p.get("callback_query_id", ""))
            if query_id not in self._open_queries:
                raise _bad("query is too old and response timeout expired or query ID is invalid")
            self._open_queries.discard(query_id)
        if len(str(p.get("text") or "")) > 200:
            raise _bad("MESSAGE_TOO_LONG")
        return True

    def _editable(self, p: JSON) -> JSON:
        if p.get("inline_message_id"):
            raise _bad("inline messages are not supported by the fake server")
        with self._lock:
            msg = self._messages.get((_int(p, "chat_id"), _int(p, "message_id")))
        if msg is None:
            raise _bad("message to edit not found")
        if msg["from"]["id"] != BOT_USER["id"]:
            raise _bad("message can't be edited")
        return msg

    def _api_editMessageText(self, p: JSON, f: dict[str, _Part]) -> JSON:
        msg, text = self._editable(p), str(p.get("text") or "")
        if "text" not in msg:
            raise _bad("there is no text in the message to edit")
        if not text.strip():
            raise _bad("message text is empty")
        self._check_text(text, p.get("parse_mode"), MAX_TEXT, "message")
        return self._edit(msg, text=text, reply_markup=self._reply_markup(p))

    def _api_editMessageReplyMarkup(self, p: JSON, f: dict[str, _Part]) -> JSON:
        return self._edit(self._editable(p), reply_markup=self._reply_markup(p))

    def _edit(self, msg: JSON, **changes: Any) -> JSON:
        with self._lock:
            if all(msg.get(k) == v for k, v in changes.items()):
                raise _bad("message is not modified: specified new message content and reply "
                           "markup are exactly the same as a current content and reply markup "
                           "of the message")
            for key, value in changes.items():
                if value is None:
                    msg.pop(key, None)
                else:
                    msg[key] = value
            msg["edit_date"] = int(time.time())
            return msg

    def _api_deleteMessage(self, p: JSON, f: dict[str, _Part]) -> bool:
        with self._lock:
            if self._messages.pop((_int(p, "chat_id"), _int(p, "message_id")), None) is None:
                raise _bad("message to delete not found")
        return True


# --------------------------------------------------------------------- helpers
@dataclass
class _Part:
    """A multipart part (a file part when ``filename`` is set)."""

    name: str
    filename: str | None
    content_type: str
    data: bytes = field(repr=False)


async def _cancel_other_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _error_response(err: ApiError) -> web.Response:
    body: JSON = {"ok": False, "error_code": err.status, "description": err.description}
    if err.parameters:
        body["parameters"] = err.parameters
    return web.json_response(body, status=err.status)


def _decode(key: str, value: Any) -> Any:
    """JSON-decode a string parameter unless Telegram treats it as a plain string."""
    if not isinstance(value, str) or key in _STRING_PARAMS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


async def _read_params(request: web.Request) -> tuple[JSON, dict[str, _Part]]:
    """Merge query string and body (form, JSON or multipart) into decoded params + files."""
    raw: JSON = dict(request.query)
    files: dict[str, _Part] = {}
    if request.content_type == "multipart/form-data":
        for name, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                with value.file:  # aiohttp spools uploads to temporary files: close them
                    files[name] = _Part(name, value.filename, value.content_type, value.file.read())
            else:
                raw[name] = value
    elif request.can_read_body and (body := await request.read()):
        if request.content_type == "application/json":
            decoded = json.loads(body)
            if not isinstance(decoded, dict):
                raise ValueError("JSON body must be an object")
            raw.update(decoded)
        else:
            raw.update(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    return {k: _decode(k, v) for k, v in raw.items()}, files


def _int(p: JSON, key: str) -> int:
    try:
        return int(p[key])
    except (KeyError, TypeError, ValueError):
        raise _bad(f"{key} is empty" if key not in p else f"invalid {key} specified") from None


def _open_image(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception:
        raise _bad("IMAGE_PROCESS_FAILED") from None
    return image


def _photo_size(stored: StoredFile) -> JSON:
    return {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size, "width": stored.width or 0,
            "height": stored.height or 0}


def _file_obj(stored: StoredFile, kind: str, filename: str | None = None,
              mime: str | None = None) -> JSON:
    obj: JSON = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id,
                 "file_size": stored.file_size}
    if kind == "document":
        obj.update(file_name=filename or stored.file_path.rsplit("/", 1)[-1],
                   mime_type=mime or "application/octet-stream")
    elif kind == "video":
        obj.update(width=640, height=360, duration=5, mime_type=mime or "video/mp4")
    return obj


def _parse_mode_error(text: str, parse_mode: str) -> str | None:
    """Conservative subset of Telegram's entity parser; returns an error text or None."""
    mode = parse_mode.lower()
    if mode == "html":
        stack: list[str] = []
        for m in re.finditer(r"<(/?)([^\s<>/]*)[^<>]*(>?)", text):
            closing, name, end = m.group(1), m.group(2).lower(), m.group(3)
            offset = len(text[: m.start()].encode())
            if not end or name not in _HTML_TAGS:
                return f'Unsupported start tag "{name}" at byte offset {offset}'
            if m.group(0).endswith("/>"):
                continue
            if not closing:
                stack.append(name)
            elif not stack or stack.pop() != name:
                return f'Unmatched end tag at byte offset {offset}, expected "</{name}>"'
        return f'Can\'t find end tag corresponding to start tag "{stack[-1]}"' if stack else None
    if mode == "markdownv2":
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if c == "\\":
                i += 2
                continue
            if c == "`":
                fence = "```" if text.startswith("```", i) else "`"
                end = text.find(fence, i + len(fence))
                if end < 0:
                    return f"Can't find end of Pre entity at byte offset {i}"
                i = end + len(fence)
                continue
            if text.startswith("](", i):
                end = text.find(")", i + 2)
                i = (end + 1) if end >= 0 else n
                continue
            if c == "|" and text.startswith("||", i):
                i += 2
                continue
            if c == ">" and (i == 0 or text[i - 1] == "\n"):
                i += 1
                continue
            if c in ".!#+-={}()|>":
                return f"Character '{c}' is reserved and must be escaped with the preceding '\\'"
            i += 1
    return None
