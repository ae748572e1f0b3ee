"""Bot settings from environment variables (and a ``.env`` file), validated once at start-up."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import load_dotenv

from recommender.errors import ConfigError

#: Telegram lets bots download files up to 20 MB.
TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024
POLLING, WEBHOOK = "polling", "webhook"
#: Telegram's rule for a webhook's secret token: 1-256 of these characters.
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


@dataclass(frozen=True)
class Settings:
    """Everything the bot reads from its environment. See ``.env.example``."""

    token: str = field(repr=False)  # a repr of the settings (logged, printed) never shows it
    index_dir: Path = Path("data/index")
    catalogue_dir: Path = Path("data/catalogue")
    demo_dir: Path = Path("data/demo-catalogue")
    file_id_cache: Path = Path("data/telegram-file-ids.json")
    telegram_photo_dir: Path = Path("data/telegram-photos")  # Telegram-ready copies of catalogue photos
    api_base_url: str | None = None
    api_file_url: str | None = None
    allowed_user_ids: frozenset[int] = field(default_factory=frozenset)
    rate_limit_per_minute: int = 20
    max_image_bytes: int = TELEGRAM_DOWNLOAD_LIMIT
    max_image_pixels: int = 40_000_000
    max_concurrent_updates: int = 64
    max_batch: int = 16
    #: the exact-item shortlist also searches two crops of each photo (EXACT_CROPS): more products found,
    #: for two more images per forward pass (recommender.Recommender.exact_crops)
    exact_crops: bool = False
    index_backbone: str = "resnet50"
    index_weights: str = "imagenet"
    #: the search backend of an index the bot builds at its first start (None: the build's default, exact)
    index_backend: str | None = None
    log_level: str = "INFO"
    #: where /metrics and /healthz are served (METRICS_PORT; 0: not served) and on which address
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    #: users who may /reload the index and read /stats
    admin_user_ids: frozenset[int] = field(default_factory=frozenset)
    #: seconds between looks at the index folder for a rebuilt index (0: only on SIGHUP or /reload)
    index_check_seconds: int = 30
    #: INDEX_DIR / CATALOGUE_DIR were set by the operator (not derived from DATA_DIR or defaults):
    #: then they must exist, and the bot never falls back to the demo catalogue.
    index_dir_configured: bool = False
    catalogue_dir_configured: bool = False
    #: how updates arrive: "polling" (getUpdates) or "webhook" (Telegram POSTs them, bot/webhook.py)
    bot_mode: str = POLLING
    #: the public HTTPS address Telegram posts updates to; its path is the path the bot serves them on
    webhook_url: str | None = None
    #: the address the webhook server listens on (a reverse proxy in front terminates TLS)
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8080
    #: Telegram sends it with every update; a request without it is refused (None: made up at each start)
    webhook_secret: str | None = field(default=None, repr=False)


def _webhook(env: dict[str, str]) -> tuple[str, str | None, str, int, str | None]:
    """BOT_MODE and the WEBHOOK_* settings, checked together: webhook mode needs its URL."""
    mode = env.get("BOT_MODE", "").strip().lower() or POLLING
    if mode not in (POLLING, WEBHOOK):
        raise ConfigError(f"BOT_MODE must be polling or webhook, got {mode!r}.")
    url = env.get("WEBHOOK_URL", "").strip() or None
    if mode == WEBHOOK and url is None:
        raise ConfigError("BOT_MODE=webhook needs WEBHOOK_URL: the public https:// address Telegram posts updates to.")
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(f"WEBHOOK_URL must be an https:// address such as https://bot.example.com/telegram, got {url!r}.")
    listen = env.get("WEBHOOK_LISTEN", "").strip() or "127.0.0.1:8080"
    host, separator, port = listen.rpartition(":")
    if not separator or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"WEBHOOK_LISTEN must be HOST:PORT (e.g. 127.0.0.1:8080 or 0.0.0.0:8443), got {listen!r}.")
    secret = env.get("WEBHOOK_SECRET", "").strip() or None
    if secret is not None and not _SECRET.fullmatch(secret):
        raise ConfigError("WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's rule).")
    return mode, url, host.strip("[]") or "0.0.0.0", int(port), secret


def _on_off(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("on", "true", "yes", "1"):
        return True
    if raw in ("off", "false", "no", "0"):
        return False
    raise ConfigError(f"{name} must be on or off, got {raw!r}.")


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}.") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}.")
    return value


def _port(env: dict[str, str], name: str) -> int:
    port = _int(env, name, 0)
    if port > 65535:
        raise ConfigError(f"{name} must be a TCP port (1-65535), or 0 or unset for none; got {port}.")
    return port


def _user_ids(raw: str, name: str = "ALLOWED_USER_IDS") -> frozenset[int]:
    ids = set()
    for part in raw.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.lstrip("-").isdigit():
            raise ConfigError(f"{name} must be comma-separated numeric Telegram user ids; {part!r} is not one.")
        ids.add(int(part))
    return frozenset(ids)


def load_settings(env: dict[str, str] | None = None, dotenv_path: str | os.PathLike[str] | None = ".env") -> Settings:
    """Read settings; values already in the environment win over the ``.env`` file."""
    if env is None:
        if dotenv_path and Path(dotenv_path).is_file():
            load_dotenv(dotenv_path, override=False)
        env = dict(os.environ)
    token = env.get("TELEGRAM_BOT_TOKEN", "").strip()
    if not token:
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN is not set. Create a bot with @BotFather, then put "
            "TELEGRAM_BOT_TOKEN=<token> in the environment or in a .env file (see .env.example)."
        )
    if ":" not in token or any(ch.isspace() for ch in token):
        raise ConfigError("TELEGRAM_BOT_TOKEN does not look like a bot token (expected '<digits>:<secret>' from @BotFather).")
    log_level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}.")
    data = Path(env.get("DATA_DIR", "data"))
    bot_mode, webhook_url, webhook_host, webhook_port, webhook_secret = _webhook(env)
    index_backend = env.get("INDEX_BACKEND", "").strip().lower() or None
    if index_backend not in (None, "exact", "ann", "milvus"):
        raise ConfigError(f"INDEX_BACKEND must be exact, ann or milvus, got {index_backend!r}.")
    return Settings(
        token=token,
        index_dir=Path(env.get("INDEX_DIR") or data / "index"),
        catalogue_dir=Path(env.get("CATALOGUE_DIR") or data / "catalogue"),
        demo_dir=Path(env.get("DEMO_CATALOGUE_DIR") or data / "demo-catalogue"),
        file_id_cache=Path(env.get("FILE_ID_CACHE") or data / "telegram-file-ids.json"),
        telegram_photo_dir=Path(env.get("TELEGRAM_PHOTO_DIR") or data / "telegram-photos"),
        api_base_url=env.get("TELEGRAM_API_BASE_URL") or None,
        api_file_url=env.get("TELEGRAM_API_FILE_URL") or None,
        allowed_user_ids=_user_ids(env.get("ALLOWED_USER_IDS", "")),
        rate_limit_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", 20),
        max_image_bytes=_int(env, "MAX_IMAGE_MB", 20, minimum=1) * 1024 * 1024,
        max_image_pixels=_int(env, "MAX_IMAGE_MEGAPIXELS", 40, minimum=1) * 1_000_000,
        max_concurrent_updates=_int(env, "MAX_CONCURRENT_UPDATES", 64, minimum=1),
        max_batch=_int(env, "MAX_BATCH", 16, minimum=1),
        exact_crops=_on_off(env, "EXACT_CROPS", False),
        index_backbone=env.get("INDEX_BACKBONE", "resnet50").strip() or "resnet50",
        index_weights=env.get("INDEX_WEIGHTS", "imagenet").strip() or "imagenet",
        index_backend=index_backend,
        log_level=log_level,
        metrics_port=_port(env, "METRICS_PORT"),
        admin_user_ids=_user_ids(env.get("ADMIN_USER_IDS", ""), "ADMIN_USER_IDS"),
        index_check_seconds=_int(env, "INDEX_CHECK_SECONDS", 30),
        metrics_host=env.get("METRICS_HOST", "").strip() or "127.0.0.1",
        index_dir_configured=bool(env.get("INDEX_DIR")),
        catalogue_dir_configured=bool(env.get("CATALOGUE_DIR")),
        bot_mode=bot_mode,
        webhook_url=webhook_url,
        webhook_host=webhook_host,
        webhook_port=webhook_port,
        webhook_secret=webhook_secret,
    )
