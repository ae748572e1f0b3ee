"""Bot settings (``bot/config.py``): every variable read, one clear message per bad value, ``.env`` read
but the environment wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from standin_bot_api import DEFAULT_TOKEN

TOKEN = "4242:FAKE-test-token-secret_part"


def test_settings_read_every_variable() -> None:
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "INDEX_DIR": "/srv/index",
            "ALLOWED_USER_IDS": "1, 2;3",
            "RATE_LIMIT_PER_MINUTE": "5",
            "TELEGRAM_API_BASE_URL": "http://localhost:8081/bot",
            "LOG_LEVEL": "debug",
            "INDEX_BACKEND": " Milvus ",
            "METRICS_PORT": "9100",
            "EXACT_CROPS": " On ",
        }
    )
    assert settings.exact_crops and not load_settings({"TELEGRAM_BOT_TOKEN": TOKEN}).exact_crops  # off unless asked
    assert not load_settings({"TELEGRAM_BOT_TOKEN": TOKEN, "EXACT_CROPS": "off"}).exact_crops
    assert (settings.metrics_port, settings.metrics_host) == (9100, "127.0.0.1")
    assert settings.index_backend == "milvus"
    assert load_settings({"TELEGRAM_BOT_TOKEN": TOKEN}).index_backend is None  # the build's own default
    assert settings.index_dir == Path("/srv/index")
    assert settings.allowed_user_ids == frozenset({1, 2, 3})
    assert settings.rate_limit_per_minute == 5
    assert settings.api_base_url == "http://localhost:8081/bot"
    assert settings.log_level == "DEBUG"


def test_webhook_settings_and_their_defaults() -> None:
    polling = load_settings({"TELEGRAM_BOT_TOKEN": TOKEN})
    assert (polling.bot_mode, polling.webhook_url, polling.webhook_secret) == ("polling", None, None)
    assert (polling.webhook_host, polling.webhook_port) == ("127.0.0.1", 8080)  # behind a reverse proxy on this host
    settings = load_settings({
        "TELEGRAM_BOT_TOKEN": TOKEN, "BOT_MODE": " Webhook ", "WEBHOOK_URL": "https://bot.example.com/telegram",
        "WEBHOOK_LISTEN": "0.0.0.0:8443", "WEBHOOK_SECRET": "s3cret_-token",
    })  # fmt: skip
    assert settings.bot_mode == "webhook" and settings.webhook_url == "https://bot.example.com/telegram"
    assert (settings.webhook_host, settings.webhook_port) == ("0.0.0.0", 8443)
    assert settings.webhook_secret == "s3cret_-token" and "s3cret" not in repr(settings)
    assert load_settings({"TELEGRAM_BOT_TOKEN": TOKEN, "WEBHOOK_LISTEN": "[::1]:9000"}).webhook_host == "::1"


def test_a_webhook_path_where_health_is_served_is_refused() -> None:
    from bot.webhook import webhook_path

    assert webhook_path("https://bot.example.com") == "/" and webhook_path("https://b.example/hook/x?y=1") == "/hook/x"
    with pytest.raises(ConfigError, match="use another"):
        webhook_path("https://bot.example.com/metrics")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "TELEGRAM_BOT_TOKEN is not set"),
        ({"TELEGRAM_BOT_TOKEN": "no-colon"}, "does not look like a bot token"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "ALLOWED_USER_IDS": "alice"}, "ALLOWED_USER_IDS"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "RATE_LIMIT_PER_MINUTE": "many"}, "RATE_LIMIT_PER_MINUTE must be a whole number"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "EXACT_CROPS": "sometimes"}, "EXACT_CROPS must be on or off"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "INDEX_BACKEND": "faiss"}, "INDEX_BACKEND must be exact, ann or milvus"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "METRICS_PORT": "70000"}, "METRICS_PORT must be a TCP port"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "BOT_MODE": "push"}, "BOT_MODE must be polling or webhook"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "BOT_MODE": "webhook"}, "BOT_MODE=webhook needs WEBHOOK_URL"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "BOT_MODE": "webhook", "WEBHOOK_URL": "bot.example.com/t"}, "WEBHOOK_URL must be an https://"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "WEBHOOK_URL": "https://b.example/t", "WEBHOOK_LISTEN": "8080"}, "WEBHOOK_LISTEN must be HOST:PORT"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "WEBHOOK_URL": "https://b.example/t", "WEBHOOK_LISTEN": ":99999"}, "WEBHOOK_LISTEN must be HOST:PORT"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "WEBHOOK_SECRET": "has spaces in it"}, "WEBHOOK_SECRET must be 1-256 characters"),
        ({"TELEGRAM_BOT_TOKEN": TOKEN, "WEBHOOK_SECRET": "x" * 257}, "WEBHOOK_SECRET must be 1-256 characters"),
    ],
)
def test_bad_settings_give_one_clear_message(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_dotenv_file_is_read_but_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"TELEGRAM_BOT_TOKEN={TOKEN}\nINDEX_DIR=/from/dotenv\nLOG_LEVEL=WARNING\n", encoding="utf-8")
    for name in ("TELEGRAM_BOT_TOKEN", "INDEX_DIR"):
        # set, then delete: monkeypatch then restores the variable's original state, also when
        # load_dotenv wrote it (a leaked INDEX_DIR would point later bots at a missing index)
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("LOG_LEVEL", "ERROR")
    settings = load_settings(dotenv_path=dotenv)
    assert settings.token == TOKEN and settings.index_dir == Path("/from/dotenv") and settings.log_level == "ERROR"


def test_settings_never_show_the_token_and_know_what_was_configured(tmp_path):
    settings = load_settings({"TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN, "INDEX_DIR": str(tmp_path / "index")})
    secret = DEFAULT_TOKEN.split(":")[1]
    assert secret not in repr(settings) and secret not in str(settings) and secret not in f"{settings!r}"
    assert settings.token == DEFAULT_TOKEN
    assert (settings.index_dir_configured, settings.catalogue_dir_configured) == (True, False)
    data_only = load_settings({"TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN, "DATA_DIR": str(tmp_path)})
    assert (data_only.index_dir_configured, data_only.catalogue_dir_configured) == (False, False)
    assert data_only.index_dir == tmp_path / "index"


def test_the_bot_serves_its_index_with_the_crops_its_settings_ask_for(demo_index) -> None:
    """post_init and every reload load the index through ``load_recommender``: EXACT_CROPS reaches the recommender."""
    from bot.app import load_recommender

    for value, crops in (("off", 0), ("on", 2)):
        settings = load_settings({"TELEGRAM_BOT_TOKEN": TOKEN, "INDEX_DIR": str(demo_index.path), "EXACT_CROPS": value})
        recommender = load_recommender(settings)
        assert recommender.finds_exact_items and recommender.exact_crops == (value == "on") and recommender.crops_per_photo == crops
        photo = recommender.prepare(demo_index.catalogue.images_dir / demo_index.catalogue.items[0].image)
        assert photo.crops is not None and len(photo.crops) == crops
