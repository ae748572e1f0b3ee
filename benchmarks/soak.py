#!/usr/bin/env python
"""Soak test: the real bot under a mixed, hostile load, end to end over HTTP.

    python benchmarks/soak.py [--chats 50] [--duration 120] [--index DIR] [--backbone mobilenet_v2]

Starts the real bot (``python -m bot``) against the stand-in Bot API server and drives it for
``--duration`` seconds from ~50 chats at once:

* shoppers (60% of the chats) behave: a phone-sized photo, wait for the album, sometimes "Next 5",
  a text, a photo deleted right after sending it, a forged or stale button; think a few seconds;
* flooders (15%) send bursts of 80-150 photos, texts and stickers as fast as a client can;
* hostile chats (15%) send the hostile image corpus (standin_bot_api/hostile_photos.py) as files;
* late pressers (10%) press "Next 5" long after the album, and forged buttons;
* meanwhile the server injects 429s (flood control), 5xx answers, slow answers and an album
  answered only after the bot's read timeout (Telegram acted, the bot never heard).

It prints: updates answered / expected for the well-behaved chats, albums duplicated (must be 0),
generic "something went wrong" answers, the well-behaved chats' photo → album p50/p95, the bot's
peak and end RSS, tracebacks in its log (must be 0), and how long SIGTERM took. Bounded in time:
nothing is sent after ``--duration``, and every wait has a timeout.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from standin_bot_api import FakeBotApi
from standin_bot_api import hostile_photos as hostile_corpus

ROOT = Path(__file__).resolve().parents[1]

SHARED = ROOT.parent / "shared"
FASHION = SHARED / "data" / "fashion-products-4k"
MOBILENET_WEIGHTS = SHARED / "models" / "mobilenet_v2_imagenet_notop.weights.h5"
ANSWER_TIMEOUT = 75.0  # above the bot's 60 s album read timeout (the late album holds its chat that long)
GENERIC_ERROR = "something went wrong"
#: hostile corpus cases small enough to send quickly (the big ones are the decode benchmark's job)
HOSTILE_MAX_BYTES = 3 * 1024 * 1024


@dataclass
class Stats:
    """What every chat thread saw, merged at the end (each thread appends under one lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    expected: Counter = field(default_factory=Counter)
    answered: Counter = field(default_factory=Counter)
    sent: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def record(self, kind: str, ok: bool, latency: float | None = None, what: str = "") -> None:
        with self.lock:
            self.expected[kind] += 1
            if ok:
                self.answered[kind] += 1
                if latency is not None:
                    self.latencies.append(latency)
            else:
                self.missing.append(f"{kind}: {what}")


def ensure_index(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """(index_dir, images_dir): the given index, or one built once into ``work``."""
    if args.index:
        from recommender.index_store import load_index

        return args.index, Path(load_index(args.index).manifest.images_root)
    if FASHION.is_dir():
        images, styles = FASHION / "images", FASHION / "styles.csv"
    else:
        from recommender.demo import make_demo_catalogue

        print("../shared not found: soaking on the demo catalogue.")
        images, styles = make_demo_catalogue(work / "demo")
    weights = args.weights or (str(MOBILENET_WEIGHTS) if args.backbone == "mobilenet_v2" and MOBILENET_WEIGHTS.is_file() else "none")
    index = work / f"index-{args.backbone}-{'file' if os.sep in weights else weights}"
    if not (index / "manifest.json").is_file():
        print(f"Building the index once into {index} ...", flush=True)
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "build_index.py"), "--images", str(images), "--styles", str(styles),
             "--out", str(index), "--backbone", args.backbone, "--weights", weights, "--quiet"],
            check=True,
        )
    return index, images


def phone_photos(images_dir: Path, count: int, rng: random.Random) -> list[bytes]:
    """Catalogue photos upscaled to 960x1280 and re-encoded, like a shopper's phone photo."""
    paths = sorted(images_dir.glob("*.jpg"))
    photos = []
    for path in rng.sample(paths, min(count, len(paths))):
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").resize((960, 1280), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=85)
        photos.append(buffer.getvalue())
    return photos


def hostile_files(work: Path) -> list[tuple[str, bytes]]:
    directory = work / "hostile"
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for _case, path in hostile_corpus.write_corpus(directory):
        if path.stat().st_size <= HOSTILE_MAX_BYTES:
            files.append((path.name, path.read_bytes()))
    return files


class Soak:
    def __init__(self, api: FakeBotApi, args: argparse.Namespace, photos: list[bytes], hostile: list[tuple[str, bytes]]) -> None:
        self.api = api
        self.args = args
        self.photos = photos
        self.hostile = hostile
        self.stats = Stats()
        self.deadline = time.monotonic() + args.duration
        self.flood_sent: Counter[int] = Counter()

    # ---------------------------------------------------------------- helpers
    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def _wait(self, predicate: Callable[[], Any], timeout: float = ANSWER_TIMEOUT) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = predicate()
            if value:
                return value
            time.sleep(0.005)
        return None

    def _texts(self, chat: int) -> list[dict]:
        return [m for m in self.api.sent_messages(chat) if "text" in m]

    def _prompts(self, chat: int) -> list[dict]:
        return [m for m in self.api.sent_messages(chat) if (m.get("reply_markup") or {}).get("inline_keyboard")]

    def _replies_to(self, chat: int, message_id: int) -> list[dict]:
        return [m for m in self.api.sent_messages(chat) if (m.get("reply_to_message") or {}).get("message_id") == message_id]

    def _photo(self, chat: int, rng: random.Random, delete: bool = False) -> None:
        """A photo; its answer is recognised by replying to it (or, once deleted, as the next album)."""
        before = len(self.api.albums(chat))
        update = self.api.user_sends_photo(rng.choice(self.photos), chat_id=chat)
        message_id = update["message"]["message_id"]
        if delete:
            self.api.user_deletes(update)
            album = bool(self._wait(lambda: len(self.api.albums(chat)) > before))
        else:
            replies = self._wait(lambda: self._replies_to(chat, message_id)) or []
            album = any("photo" in m for m in replies)
        latency = None
        if album and not delete and update["update_id"] in self.api.delivered_at:
            latency = time.perf_counter() - self.api.delivered_at[update["update_id"]]
        kind = "photo (deleted at once)" if delete else "photo"
        what = f"chat {chat} update {update['update_id']}"
        if not album:
            what += self._diagnose(chat, update)
        self.stats.record(kind, album, latency, what)
        if album:  # the "Next 5" prompt follows the album: wait for it so the next step sees it
            self._wait(lambda: self._replies_to(chat, message_id) and any("reply_markup" in m for m in self.api.sent_messages(chat)[-2:]), timeout=10)

    def _diagnose(self, chat: int, update: dict) -> str:
        """What the server saw for an unanswered update: was it delivered, what did the bot send?"""
        delivered = update["update_id"] in self.api.delivered_at
        calls = [f"{c.method}->{c.status}{' ' + c.description if c.description else ''}"
                 for c in self.api.calls if c.params.get("chat_id") == chat and c.time >= update["message"]["date"] - 1]
        pending = self.api.pending_updates()
        polls = [c for c in self.api.calls_to("getUpdates") if c.time >= update["message"]["date"] - 1]
        return (f" (delivered: {delivered}; pending: {len(pending)}, this one pending: "
                f"{any(u['update_id'] == update['update_id'] for u in pending)}; polls since: {len(polls)} "
                f"offsets {[c.params.get('offset') for c in polls[-3:]]}; bot calls since: {calls[-6:]})")

    def _next_page(self, chat: int, late: bool = False) -> None:
        prompts = self._prompts(chat)
        if not prompts:
            return
        prompt = prompts[-1]
        data = prompt["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
        before = len(self.api.albums(chat))
        texts_before = len(self._texts(chat))
        try:
            self.api.user_presses_button(prompt, data)
        except ValueError:
            return  # the button went away meanwhile
        prompts_before = len(self._prompts(chat))
        got = self._wait(lambda: len(self.api.albums(chat)) > before or len(self._texts(chat)) > texts_before)
        self.stats.record("late Next 5" if late else "Next 5", bool(got), what=f"chat {chat}")
        # the page's own prompt (or "that's everything") follows its album: let it arrive first
        self._wait(lambda: len(self._prompts(chat)) > prompts_before or len(self._texts(chat)) > texts_before, timeout=10)

    def _forged_button(self, chat: int, rng: random.Random) -> None:
        messages = self.api.sent_messages(chat)
        if not messages:
            return
        data = rng.choice(["more:", "more:x:٣", f"more:{rng.getrandbits(40):x}:5", "more:abc:999999", "☃" * 20])
        query = self.api.user_presses_button(messages[-1], data, forged=True)
        query_id = query["callback_query"]["id"]

        def answered() -> bool:
            return any(c.params.get("callback_query_id") == query_id for c in self.api.calls_to("answerCallbackQuery"))

        texts_before = len(self._texts(chat))
        self.stats.record("forged button", bool(self._wait(answered)), what=f"chat {chat} {data!r}")
        self._wait(lambda: len(self._texts(chat)) > texts_before, timeout=5)  # the "expired" note, if any

    def _text(self, chat: int, rng: random.Random) -> None:
        before = len(self._texts(chat))
        self.api.user_sends_text(rng.choice(["hi", "do you have this in red?", "/help", "/start", "price?"]), chat_id=chat)
        self.stats.record("text", bool(self._wait(lambda: len(self._texts(chat)) > before)), what=f"chat {chat}")

    # ---------------------------------------------------------------- roles
    def shopper(self, chat: int, seed: int) -> None:
        rng = random.Random(seed)
        time.sleep(rng.uniform(0, 3))
        while self.running():
            roll = rng.random()
            if roll < 0.55:
                self._photo(chat, rng)
            elif roll < 0.65:
                self._photo(chat, rng, delete=True)
            elif roll < 0.8:
                self._next_page(chat)
            elif roll < 0.9:
                self._text(chat, rng)
            else:
                self._forged_button(chat, rng)
            time.sleep(rng.uniform(2.5, 5.0))  # a person looks at the answer (and stays under the rate limit)

    def late_presser(self, chat: int, seed: int) -> None:
        rng = random.Random(seed)
        self._photo(chat, rng)
        while self.running():
            time.sleep(rng.uniform(8, 15))  # long after the album: the callback query itself is fresh, the search old
            if not self.running():
                break
            if rng.random() < 0.6:
                self._next_page(chat, late=True)
            else:
                self._forged_button(chat, rng)
            if rng.random() < 0.3:
                self._photo(chat, rng)

    def flooder(self, chat: int, seed: int) -> None:
        rng = random.Random(seed)
        while self.running():
            for _ in range(rng.randint(80, 150)):
                if not self.running():
                    break
                roll = rng.random()
                if roll < 0.7:
                    self.api.user_sends_photo(rng.choice(self.photos), chat_id=chat)
                elif roll < 0.9:
                    self.api.user_sends_text("spam " * rng.randint(1, 50), chat_id=chat)
                else:
                    self.api.user_sends_sticker(chat_id=chat)
                self.flood_sent[chat] += 1
                time.sleep(rng.uniform(0.01, 0.05))
            time.sleep(rng.uniform(3, 8))

    def _answered_since(self, chat: int, seen: tuple[int, int]) -> bool:
        """Whether ``chat`` got a text or an album more than ``seen`` (texts, albums) counted."""
        return len(self._texts(chat)) > seen[0] or len(self.api.albums(chat)) > seen[1]

    def hostile_chat(self, chat: int, seed: int) -> None:
        rng = random.Random(seed)
        while self.running():
            name, data = rng.choice(self.hostile)
            seen = (len(self._texts(chat)), len(self.api.albums(chat)))
            self.api.user_sends_document(data, file_name=name, mime_type="image/" + name.rsplit(".", 1)[-1], chat_id=chat)
            got = self._wait(functools.partial(self._answered_since, chat, seen))
            self.stats.record("hostile file", bool(got), what=f"chat {chat} {name}")
            time.sleep(rng.uniform(2.5, 5.0))

    def faults(self, seed: int) -> None:
        """Telegram misbehaving: flood control, 5xx, slow answers, one album answered too late."""
        rng = random.Random(seed)
        late_done = False
        while self.running():
            time.sleep(rng.uniform(1.0, 3.0))
            roll = rng.random()
            if not late_done and self.args.duration >= 90 and time.monotonic() > self.deadline - self.args.duration + 10:
                self.api.fail_next("sendMediaGroup", late=self.args.late_seconds)
                late_done = True
            elif roll < 0.3:
                self.api.fail_next(rng.choice(["sendMediaGroup", "sendMessage"]), retry_after=rng.randint(1, 3))
            elif roll < 0.55:
                self.api.fail_next(rng.choice(["sendMediaGroup", "sendMessage", "getFile", "sendChatAction"]),
                                   status=rng.choice([500, 502, 503]))
            elif roll < 0.75:
                self.api.fail_next(rng.choice(["sendMediaGroup", "getFile"]), delay=rng.uniform(0.5, 2.0))
            elif roll < 0.85:
                self.api.fail_next("answerCallbackQuery", status=400, description="Bad Request: query is too old and response timeout expired or query ID is invalid")


def rss_sampler(pid: int, stop: threading.Event, samples: list[float]) -> None:
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    samples.append(int(line.split()[1]) / 1024)
        except OSError:
            return
        stop.wait(0.5)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def duplicated_albums(api: FakeBotApi) -> int:
    """Albums answering the same shopper message more than once (first pages reply to the photo)."""
    seen: Counter = Counter()
    for album in api.albums():
        reply = (album.messages[0].get("reply_to_message") or {}).get("message_id") if album.messages else None
        if reply is not None:
            seen[(album.chat_id, reply)] += 1
    return sum(count - 1 for count in seen.values() if count > 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, help="use this index instead of building one")
    parser.add_argument("--backbone", default="mobilenet_v2", help="model of the index built once (default mobilenet_v2)")
    parser.add_argument("--weights", help="weights for that build (default: the shared MobileNetV2 file, else none)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bot-soak")
    parser.add_argument("--chats", type=int, default=50)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load (default 120)")
    parser.add_argument("--late-seconds", type=float, default=65.0, help="how late the one late album is answered")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    index, images = ensure_index(args, args.work)
    photos = phone_photos(images, 60, rng)
    hostile = hostile_files(args.work)
    data_dir = Path(tempfile.mkdtemp(prefix="bot-soak-data-"))
    log_path = data_dir / "bot.log"
    with FakeBotApi() as api, open(log_path, "w", encoding="utf-8") as log:
        env = {**os.environ, "TELEGRAM_BOT_TOKEN": api.token, "TELEGRAM_API_BASE_URL": api.base_url,
               "TELEGRAM_API_FILE_URL": api.base_file_url, "INDEX_DIR": str(index), "DATA_DIR": str(data_dir),
               "LOG_LEVEL": "INFO"}
        bot = subprocess.Popen([sys.executable, "-m", "bot"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        stop_sampling = threading.Event()
        rss: list[float] = []
        try:
            api.wait_for(lambda s: s.calls_to("getUpdates") or bot.poll() is not None, timeout=300)
            if bot.poll() is not None:
                print(log_path.read_text()[-3000:])
                return 1
            start_rss = peak_rss_mb(bot.pid)
            threading.Thread(target=rss_sampler, args=(bot.pid, stop_sampling, rss), daemon=True).start()
            soak = Soak(api, args, photos, hostile)
            roles: list[tuple[str, Callable[[int, int], None]]] = []
            for number in range(args.chats):
                share = number / args.chats
                assigned = ("shopper", soak.shopper) if share < 0.6 else ("flooder", soak.flooder) if share < 0.75 else (
                    ("hostile", soak.hostile_chat) if share < 0.9 else ("late presser", soak.late_presser))
                roles.append(assigned)
            chats = {50_000 + number: role for number, role in enumerate(roles)}
            for chat, (role, _) in chats.items():
                if role == "flooder":
                    api.flood_control(chat, messages=20, seconds=60)  # Telegram: about 20 messages a minute per chat
            print(f"Soaking {args.chats} chats for {args.duration:.0f} s "
                  f"({Counter(r for r, _ in roles)}; start RSS {start_rss:.0f} MB) ...", flush=True)
            threads = [threading.Thread(target=soak.faults, args=(args.seed,), daemon=True)]
            threads += [threading.Thread(target=run, args=(chat, args.seed + chat), daemon=True) for chat, (_, run) in chats.items()]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=args.duration + 2 * ANSWER_TIMEOUT + 30)
            elapsed = time.monotonic() - started
            time.sleep(5)  # let queued work settle before the end RSS
            end_rss = rss[-1] if rss else float("nan")
            peak = peak_rss_mb(bot.pid)
        finally:
            stop_sampling.set()
            stop_started = time.monotonic()
            bot.send_signal(signal.SIGTERM)
            try:
                code = bot.wait(timeout=60)
            except subprocess.TimeoutExpired:
                bot.kill()
                code = bot.wait()
            stop_seconds = time.monotonic() - stop_started
        output = log_path.read_text(encoding="utf-8", errors="replace")

    stats = soak.stats
    updates = len(api.updates)
    expected, answered = sum(stats.expected.values()), sum(stats.answered.values())
    generic = sum(1 for m in api.sent_messages() if GENERIC_ERROR in m.get("text", "").lower())
    flood_chats = [c for c, (role, _) in chats.items() if role == "flooder"]
    flood_replies = sum(len(api.sent_messages(c)) for c in flood_chats)
    latencies = sorted(1000 * s for s in stats.latencies)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p95 = latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))] if latencies else float("nan")
    tracebacks = output.count("Traceback")
    warnings_never_awaited = output.count("was never awaited")

    print(f"\nSoak: {args.chats} chats, {elapsed:.0f} s, {updates} updates in total "
          f"({sum(soak.flood_sent.values())} from {len(flood_chats)} flooding chats), "
          f"{api.injected_count()} injected faults")
    print(f"  well-behaved updates answered / expected: {answered} / {expected}")
    for kind in sorted(stats.expected):
        print(f"    {kind:<24} {stats.answered[kind]:>5} / {stats.expected[kind]}")
    for line in stats.missing[:10]:
        print(f"    unanswered: {line}")
    print(f"  albums duplicated: {duplicated_albums(api)}   (must be 0)")
    print(f"  generic 'something went wrong' answers: {generic}")
    print(f"  flooding chats: {sum(soak.flood_sent.values())} updates sent, {flood_replies} messages back")
    print(f"  well-behaved photo → album: p50 {p50:.0f} ms, p95 {p95:.0f} ms ({len(latencies)} photos)")
    print(f"  bot RSS: start {start_rss:.0f} MB, peak {peak:.0f} MB, end {end_rss:.0f} MB")
    if rss:
        quarters = [rss[min(len(rss) - 1, len(rss) * q // 4)] for q in range(1, 5)]
        print("    RSS over the run (each quarter's end): " + ", ".join(f"{mb:.0f}" for mb in quarters) + " MB")
    print(f"  tracebacks in the log: {tracebacks}   (must be 0); 'never awaited' warnings: {warnings_never_awaited}")
    print(f"  SIGTERM → exit {code} in {stop_seconds:.1f} s")
    print(f"  bot log: {log_path}")
    if tracebacks:
        first = output.index("Traceback")
        print("\nFirst traceback:\n" + output[max(0, first - 300) : first + 2500])
    ok = answered == expected and duplicated_albums(api) == 0 and tracebacks == 0 and code == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
