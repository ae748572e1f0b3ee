"""The bot's start-up: never deletes what is not an index, waits for a running build, and stops clearly when
what the operator configured is missing (in-process and ``python -m bot``)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.startup import ensure_index
from recommender import BuildError, CatalogueError, IndexNotFoundError, ModelLoadError, load_index
from standin_bot_api import DEFAULT_TOKEN
from tests.build_helpers import bot_settings, make_shop, snapshot
from tests.recommender_helpers import REPO


def test_first_start_never_deletes_an_index_dir_that_is_not_an_index(tmp_path):
    """DATA_DIR's index/ holds someone's files but no manifest: the bot stops instead of deleting them."""
    data = tmp_path / "data"
    make_shop(data / "catalogue")
    (data / "index").mkdir()
    (data / "index" / "notes.txt").write_text("keep me")
    before = snapshot(data)

    with pytest.raises(BuildError, match="holds no index"):
        ensure_index(bot_settings(DATA_DIR=str(data)))

    assert snapshot(data) == before


def test_first_start_with_index_dir_pointing_at_the_data_folder_keeps_the_catalogue(tmp_path):
    """INDEX_DIR=data (catalogue and file-id cache inside) must not be swapped away."""
    data = tmp_path / "data"
    images, _ = make_shop(data / "catalogue")
    (data / "telegram-file-ids.json").write_text("{}")
    before = snapshot(data)

    with pytest.raises(BuildError, match="would be deleted"):
        ensure_index(bot_settings(INDEX_DIR=str(data), CATALOGUE_DIR=str(data / "catalogue")))

    assert snapshot(data) == before


HOLD_LOCK_AND_INSTALL = """
import os, shutil, sys
from recommender.locking import build_lock
source, out = sys.argv[1], sys.argv[2]
with build_lock(out):
    print("locked", flush=True)
    sys.stdin.readline()
    staging = out + ".staging"
    shutil.copytree(source, staging)
    os.rename(staging, out)
"""


def test_bot_waits_for_a_running_build_then_serves_its_index(tmp_path, demo_index, caplog):
    """Two replicas on a fresh volume: the second waits for the first build and does not build again."""
    data = tmp_path / "data"
    data.mkdir()
    out = data / "index"
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK_AND_INSTALL, str(demo_index.path), str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert other.stdin is not None and other.stdout is not None
    try:
        assert other.stdout.readline().strip() == "locked"
        served: list[str] = []
        errors: list[BaseException] = []

        def start_bot() -> None:
            try:
                served.append(ensure_index(bot_settings(DATA_DIR=str(data))))
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        with caplog.at_level(logging.INFO, logger="bot.startup"):
            starting = threading.Thread(target=start_bot)
            starting.start()
            deadline = time.monotonic() + 60
            while not any("waiting for it to finish" in r.getMessage() for r in caplog.records):
                assert starting.is_alive(), errors or served
                assert time.monotonic() < deadline, "the bot did not wait for the running build"
                time.sleep(0.02)
            other.stdin.write("go\n")
            other.stdin.flush()
            starting.join(timeout=60)
        assert not errors, errors
        assert served == [f"catalogue index at {out} ({len(demo_index.catalogue)} products)"]
    finally:
        try:
            other.wait(timeout=30)
        except subprocess.TimeoutExpired:
            other.kill()
            other.wait()
    assert other.returncode == 0
    assert load_index(out).manifest == demo_index.load().manifest  # the other process's index, not a rebuild
    assert sorted(p.name for p in data.iterdir()) == ["index"]  # no demo catalogue drawn, no lock left


# --- what the operator configured must be there ------------------------------------------


@pytest.mark.parametrize("setup", ["index-dir-missing", "index-dir-empty", "catalogue-dir-missing", "catalogue-dir-empty"])
def test_configured_but_missing_index_or_catalogue_stops_instead_of_serving_the_demo(tmp_path, setup):
    data = tmp_path / "data"
    env = {"DATA_DIR": str(data)}
    error: type[Exception]
    if setup.startswith("index-dir"):
        env["INDEX_DIR"] = str(tmp_path / "volume" / "index")
        if setup == "index-dir-empty":
            (tmp_path / "volume" / "index").mkdir(parents=True)
        error, words = IndexNotFoundError, f"INDEX_DIR is set to {tmp_path / 'volume' / 'index'}, but there is no index there"
    else:
        env["CATALOGUE_DIR"] = str(tmp_path / "catalogue")
        if setup == "catalogue-dir-empty":
            (tmp_path / "catalogue").mkdir()
        error, words = CatalogueError, f"CATALOGUE_DIR is set to {tmp_path / 'catalogue'}, but there is no catalogue there"
    before = sorted(str(p) for p in tmp_path.rglob("*"))

    with pytest.raises(error) as exc_info:
        ensure_index(bot_settings(**env))

    assert words in str(exc_info.value)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # no demo drawn, no index, no lock left


def _run_bot_offline(tmp_path: Path, index_dir: Path) -> tuple[int, str]:
    """Run ``python -m bot`` with ``INDEX_DIR=index_dir`` and ``DATA_DIR=tmp_path/data`` (and no other
    bot settings from this environment) against a Telegram URL that goes nowhere: (exit status, output)."""
    environment = {
        key: value for key, value in os.environ.items()
        if not key.startswith("TELEGRAM_") and key not in ("INDEX_DIR", "CATALOGUE_DIR", "DATA_DIR")
    }  # fmt: skip
    environment.update(
        TELEGRAM_BOT_TOKEN=DEFAULT_TOKEN, TELEGRAM_API_BASE_URL="http://127.0.0.1:9/bot", INDEX_DIR=str(index_dir),
        DATA_DIR=str(tmp_path / "data"), INDEX_WEIGHTS="none", PYTHONPATH=str(REPO),
    )  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "bot"], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


def test_bot_with_a_missing_index_dir_exits_with_one_clear_message(tmp_path):
    """``python -m bot`` stops before connecting to Telegram (the API URL goes nowhere)."""
    missing = tmp_path / "volume" / "index"
    returncode, output = _run_bot_offline(tmp_path, missing)
    assert returncode == 2, output
    assert f"INDEX_DIR is set to {missing}, but there is no index there" in output
    assert "Traceback" not in output and DEFAULT_TOKEN.split(":")[1] not in output
    assert not (tmp_path / "data").exists()  # no demo catalogue drawn


def test_bot_stops_with_one_clear_line_on_a_file_system_error_at_start_up(tmp_path):
    """An OSError while preparing the index (here a path the kernel refuses: a name over 255
    bytes) ends ``python -m bot`` with one ``ERROR`` line and status 2, not a traceback."""
    index_dir = tmp_path / ("x" * 300) / "index"
    returncode, output = _run_bot_offline(tmp_path, index_dir)
    assert returncode == 2, output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"File name too long ({index_dir / 'manifest.json'})" in errors[0], output
    assert "Check INDEX_DIR, CATALOGUE_DIR and DATA_DIR" in errors[0]
    assert "Traceback" not in output and DEFAULT_TOKEN.split(":")[1] not in output


# --- building the first index --------------------------------------------------------------


def test_first_start_builds_from_the_operator_catalogue(tmp_path, caplog):
    images, _ = make_shop(tmp_path / "shop")
    settings = bot_settings(CATALOGUE_DIR=str(tmp_path / "shop"), INDEX_DIR=str(tmp_path / "index"))

    with caplog.at_level(logging.INFO, logger="bot.startup"):
        served = ensure_index(settings)

    assert served == f"operator catalogue {tmp_path / 'shop'} (index {tmp_path / 'index'})"
    index = load_index(tmp_path / "index")
    assert index.ids() == ["1", "2", "3"] and index.head is not None  # a labelled catalogue: the build script's default head
    messages = [record.getMessage() for record in caplog.records]
    assert "Indexing 3 catalogue photos with mobilenet_v2 (this happens once)..." in messages
    assert any(message.startswith("Index ready: 3 products in ") for message in messages)
    assert not any(record.levelno >= logging.WARNING for record in caplog.records if record.name == "bot.startup")
    assert ensure_index(settings) == f"catalogue index at {tmp_path / 'index'} (3 products)"  # the next start serves it


def test_weights_that_fail_to_load_fail_an_operator_catalogue_but_not_the_demo(tmp_path, caplog):
    """Only the demo falls back to random weights: an operator's catalogue indexed with them would be useless."""
    make_shop(tmp_path / "shop")
    missing = str(tmp_path / "missing.h5")
    with pytest.raises(ModelLoadError, match="Weights file not found"):
        ensure_index(bot_settings(CATALOGUE_DIR=str(tmp_path / "shop"), INDEX_DIR=str(tmp_path / "index"), INDEX_WEIGHTS=missing))
    assert not (tmp_path / "index").exists()

    data = tmp_path / "data"
    with caplog.at_level(logging.INFO, logger="bot.startup"):
        served = ensure_index(bot_settings(DATA_DIR=str(data), INDEX_WEIGHTS=missing))

    assert served.startswith("DEMO catalogue ")
    warnings = [record.getMessage() for record in caplog.records if record.name == "bot.startup" and record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Building the DEMO index with random weights instead" in warnings[0]
    demo = load_index(data / "index")
    assert demo.manifest.weights == "none" and demo.head is None  # the demo needs no head and starts faster without
