#!/usr/bin/env python
"""Bot latency and concurrency, end to end over HTTP against the stand-in Bot API server.

    python benchmarks/bot_latency.py [--index DIR] [--backbone resnet50] [--rounds 3]

Builds (once, cached in --work) an index over ../shared/data/fashion-products-4k (or the demo
catalogue when ../shared is absent), starts the real bot (``python -m bot``) against the stand-in
server, and prints:
  * latency from the update being delivered to the bot (getUpdates answer) until the album arrives
    (p50/p95, one shopper at a time), target p50 < 60 ms with ResNet50 on ONNX Runtime int8 and 44k products
    (a 4k index tiled 11 times is fine: speed does not depend on which products they are);
  * 20 shoppers one after another versus 20 at the same moment (wall time and ratio),
    target >= 2x, with the CPU seconds the bot and this process (the stand-in server) used in each;
  * the bot's resident memory at the end (and its peak).
Query photos are catalogue photos upscaled to 960x1280 and re-encoded, like a phone photo (a
shopper's screenshot of a product photo), or with ``--photos shopper`` shopper-like phone photos of
the catalogue's products (recommender/shopper_photos.py: small, off-centre, on busy backgrounds),
where the exact-item stage works hardest.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from standin_bot_api import FakeBotApi

ROOT = Path(__file__).resolve().parents[1]

SHARED = ROOT.parent / "shared" / "data" / "fashion-products-4k"
P50_TARGET_MS = 60
CONCURRENCY_TARGET = 2.0


def all_answered(api: FakeBotApi, chats: list[int]) -> bool:
    return all(api.albums(c) for c in chats)


def ensure_index(args: argparse.Namespace) -> tuple[Path, Path]:
    """(index_dir, images_dir), building the index once if needed."""
    if args.index:
        from recommender.index_store import load_index

        return args.index, Path(load_index(args.index).manifest.images_root)
    work = Path(args.work)
    if SHARED.is_dir():
        images, styles = SHARED / "images", SHARED / "styles.csv"
    else:
        from recommender.demo import make_demo_catalogue

        print("../shared not found: using the demo catalogue (98 products).")
        images, styles = make_demo_catalogue(work / "demo")
    index = work / f"index-{args.backbone}-{args.weights if args.weights in ('none', 'imagenet') else 'file'}"
    if not (index / "manifest.json").is_file():
        print(f"Building the index once into {index} ...", flush=True)
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "build_index.py"), "--images", str(images), "--styles", str(styles),
             "--out", str(index), "--backbone", args.backbone, "--weights", args.weights, "--head", "none", "--quiet"],
            check=True,
        )
    return index, images


def served_model(index: Path) -> str:
    """"resnet50, 44,000 products, onnx-int8": what the bot serves, read from the index's manifest."""
    from recommender.index_store import load_index

    manifest = load_index(index, mmap=True).manifest
    return f"{manifest.model.backbone}, {manifest.count:,} products, {manifest.model.runtime}"


def shopper_photos(images_dir: Path, count: int) -> list[bytes]:
    """Shopper-like phone photos (960x1280 JPEG) of the first ``count`` catalogue photos, seeded, the catalogue as backdrops."""
    from recommender.evaluation.protocols import shopper_query_photo

    paths = sorted(images_dir.glob("*.jpg"))
    return [shopper_query_photo(path, path.stem, 0, paths) for path in paths[:count]]


def query_photos(images_dir: Path, count: int, offset: int) -> list[bytes]:
    paths = sorted(images_dir.glob("*.jpg"))[offset : offset + count]
    photos = []
    for path in paths:
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").resize((960, 1280), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=87)
        photos.append(buffer.getvalue())
    return photos


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by process ``pid`` (the bot) and by this process (the stand-in server)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ours = os.times()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), ours.user + ours.system


def resident_memory(pid: int) -> str:
    """``VmRSS`` and ``VmHWM`` (peak) of process ``pid``, as /proc reports them."""
    wanted = {line.split(":")[0]: line.split(":")[1].strip() for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(("VmRSS", "VmHWM"))}
    return f"{wanted.get('VmRSS', '?')} (peak {wanted.get('VmHWM', '?')})"


def album_latency(api: FakeBotApi, chat: int, photo: bytes) -> float:
    """Seconds from the update reaching the bot (getUpdates answer) to its album arriving."""
    update = api.user_sends_photo(photo, chat_id=chat)
    api.wait_for(lambda s: s.albums(chat), timeout=120, interval=0.05)
    return time.perf_counter() - api.delivered_at[update["update_id"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, help="use this index instead of building one")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--weights", default="none", help="none (default: speed does not depend on weights), imagenet or a file")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "bot-latency-bench"))
    parser.add_argument("--single", type=int, default=30, help="photos for the one-shopper latency figure")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="sequential/concurrent rounds (alternated)")
    parser.add_argument("--photos", choices=("catalogue", "shopper"), default="catalogue", help="upscaled catalogue photos, or shopper-like phone photos")
    args = parser.parse_args()

    index, images = ensure_index(args)
    needed = 3 + args.single + 2 * args.rounds * args.users
    photos = query_photos(images, needed, 0) if args.photos == "catalogue" else shopper_photos(images, needed)
    if len(photos) < needed:  # small catalogue: reuse photos
        photos = (photos * (needed // max(1, len(photos)) + 1))[:needed]
    data_dir = Path(tempfile.mkdtemp(prefix="bot-bench-"))
    with FakeBotApi() as api:
        env = {**os.environ, "TELEGRAM_BOT_TOKEN": api.token, "TELEGRAM_API_BASE_URL": api.base_url,
               "TELEGRAM_API_FILE_URL": api.base_file_url, "INDEX_DIR": str(index), "DATA_DIR": str(data_dir),
               "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "WARNING"}
        bot = subprocess.Popen([sys.executable, "-m", "bot"], cwd=ROOT, env=env)
        try:
            api.wait_for(lambda s: s.calls_to("getUpdates"), timeout=300)
            chat = 10_000
            for photo in photos[:3]:  # warm-up
                chat += 1
                album_latency(api, chat, photo)
            used = 3
            single = []
            for photo in photos[used : used + args.single]:
                chat += 1
                single.append(album_latency(api, chat, photo))
            used += args.single
            single_ms = sorted(1000 * s for s in single)
            p50 = statistics.median(single_ms)
            p95 = single_ms[min(len(single_ms) - 1, int(round(0.95 * (len(single_ms) - 1))))]
            print(f"\nOne shopper at a time ({len(single)} {args.photos} photos, 960x1280 JPEG, {served_model(index)}):")
            print(f"  latency update → album: p50 {p50:.0f} ms, p95 {p95:.0f} ms, min {single_ms[0]:.0f} ms   (target p50 < {P50_TARGET_MS} ms)")

            ratios = []
            for round_number in range(args.rounds):
                batch = photos[used : used + args.users]
                used += args.users
                sequential = 0.0  # the bot's time only: the stand-in server's own work between photos excluded
                before = cpu_seconds(bot.pid)
                for photo in batch:
                    chat += 1
                    sequential += album_latency(api, chat, photo)
                between = cpu_seconds(bot.pid)
                batch = photos[used : used + args.users]
                used += args.users
                chats = list(range(chat + 1, chat + 1 + len(batch)))
                chat += len(batch)
                with api.simultaneously():  # all 20 updates reach the bot in one getUpdates answer
                    updates = [api.user_sends_photo(photo, chat_id=c) for c, photo in zip(chats, batch)]
                api.wait_for(functools.partial(all_answered, chats=chats), timeout=300, interval=0.05)
                concurrent = time.perf_counter() - min(api.delivered_at[u["update_id"]] for u in updates)
                ratios.append(sequential / concurrent)
                after = cpu_seconds(bot.pid)
                print(
                    f"  round {round_number + 1}: {args.users} shoppers one after another {sequential:.2f} s "
                    f"({args.users / sequential:.1f} photos/s), all at once {concurrent:.2f} s "
                    f"({args.users / concurrent:.1f} photos/s): {sequential / concurrent:.2f}x"
                )
                print(
                    f"    CPU seconds, bot / stand-in server: one after another {between[0] - before[0]:.2f} / {between[1] - before[1]:.2f}, "
                    f"all at once {after[0] - between[0]:.2f} / {after[1] - between[1]:.2f} ({os.cpu_count()} cores)"
                )
            ratio = statistics.median(ratios)
            print(f"\nBot resident memory: {resident_memory(bot.pid)}")
            print(f"\n{args.users} concurrent shoppers vs one at a time: median {ratio:.2f}x faster   (target >= {CONCURRENCY_TARGET}x)")
            print(
                f"Targets: p50 < {P50_TARGET_MS} ms {'MET' if p50 < P50_TARGET_MS else 'MISSED'}; "
                f"concurrency >= {CONCURRENCY_TARGET}x {'MET' if ratio >= CONCURRENCY_TARGET else 'MISSED'}"
            )
        finally:
            bot.send_signal(signal.SIGTERM)
            bot.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
