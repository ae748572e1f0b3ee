"""Operator mistakes never lose data: what a build may replace, one builder per folder, confined
product paths, one bad photo never ends a build, and a configured-but-missing index stops the bot.

Real files, real subprocesses (``build_index.py``, ``python -m bot``, a second process holding the
build lock) and real models (``--weights none``) on tiny generated catalogues.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.config import load_settings
from bot.startup import ensure_index
from recommender import (
    BuildError,
    CatalogueError,
    CatalogueIndexError,
    FeatureExtractor,
    IndexCorruptError,
    IndexNotFoundError,
    Recommender,
    build_index,
    load_catalogue,
    load_index,
)
from recommender.output_folder import check_output, output_lock, partial_dir_for
from recommender.images import load_image
from recommender.locking import lock_path_for
from standin_bot_api import DEFAULT_TOKEN
from tests.recommender_helpers import REPO, SCRIPT_ENV, error_line, run_script, script_command

COLOURS = [(200, 30, 40), (30, 70, 190), (30, 140, 60), (235, 200, 30)]


def make_shop(root: Path, count: int = 3) -> tuple[Path, Path]:
    """A tiny Kaggle-layout catalogue: ``root/images/<id>.png`` (64x64) + ``root/styles.csv``."""
    images = root / "images"
    images.mkdir(parents=True)
    lines = ["id,articleType,baseColour,productDisplayName"]
    for number in range(count):
        image = Image.new("RGB", (64, 64), "white")
        image.paste(COLOURS[number % len(COLOURS)], (8 + number, 12, 56 - number, 60))
        image.save(images / f"{number + 1}.png")
        lines.append(f"{number + 1},Tshirts,Red,Shirt {number + 1}")
    styles = root / "styles.csv"
    styles.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return images, styles


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` with its bytes, to prove nothing was touched."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def build_args(images: Path, styles: Path, out: Path, *extra: object) -> list[object]:
    return ["--images", images, "--styles", styles, "--out", out, "--backbone", "mobilenet_v2", "--weights", "none", "--quiet", *extra]


@pytest.fixture(scope="module")
def mobilenet_random() -> FeatureExtractor:
    """MobileNetV2 with seeded random weights: what ``--backbone mobilenet_v2 --weights none`` loads."""
    return FeatureExtractor("mobilenet_v2", "none").load()


def assert_index_is_fresh_extraction(out: Path, extractor: FeatureExtractor, ids: list[str]) -> None:
    """Each product's features equal a fresh extraction of its own photo (no mixed-up rows)."""
    index = load_index(out)
    assert index.ids() == ids
    assert index.manifest.model.weights_fingerprint == extractor.fingerprint
    for row in range(len(index)):
        expected = extractor.extract(load_image(index.image_path(row)))[0]
        np.testing.assert_allclose(index.features[row], expected, atol=1e-5, err_msg=index.ids()[row])


# --- 1. --out never deletes anything but an index --------------------------------------------


def test_out_holding_the_catalogue_is_refused_and_nothing_is_deleted(tmp_path):
    """The issue's command: ``--out shop`` where shop/ holds images/, styles.csv and other files."""
    shop = tmp_path / "shop"
    images, styles = make_shop(shop)
    (shop / "orders.xlsx").write_bytes(b"the shop's accounts")
    before = snapshot(shop)

    result = run_script("build_index.py", *build_args(images, styles, shop))

    assert result.returncode == 2, result.stdout + result.stderr
    line = error_line(result)
    assert f"The photos folder {images.resolve()} lies inside {shop.resolve()}" in line
    assert "would be deleted" in line
    assert snapshot(shop) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop"]  # no lock, staging or partial folder left


@pytest.mark.parametrize("where", ["photos-folder", "inside-photos-folder", "unrelated-folder", "foreign-partial-folder"])
def test_refused_outputs_keep_every_file(tmp_path, where):
    images, styles = make_shop(tmp_path / "shop")
    out = tmp_path / "index"
    if where == "photos-folder":
        out, message = images, "is inside the photos folder"
    elif where == "inside-photos-folder":
        out, message = images / "index", "is inside the photos folder"
    elif where == "unrelated-folder":
        out.mkdir()
        (out / "notes.txt").write_text("not an index")
        message = "is not empty (notes.txt) and holds no index (manifest.json)"
    else:
        partial = partial_dir_for(out)
        partial.mkdir()
        (partial / "thesis.tex").write_text("years of work")
        message = "holds files that are not a checkpoint"
    before = snapshot(tmp_path)

    with pytest.raises(BuildError) as exc_info:
        build_index(load_catalogue(images, styles), out, FeatureExtractor("mobilenet_v2", "none"))  # refused before any model work

    assert message in str(exc_info.value)
    assert snapshot(tmp_path) == before
    assert not (images / "index").exists() and not lock_path_for(out.resolve()).exists()


def test_an_empty_folder_or_an_earlier_index_is_replaced(tmp_path, mobilenet_random):
    images, styles = make_shop(tmp_path / "shop")
    out = tmp_path / "index"
    out.mkdir()
    catalogue = load_catalogue(images, styles)
    build_index(catalogue, out, mobilenet_random)  # an empty folder
    first = load_index(out).manifest.created_at
    (out / "vectors.npy").write_bytes(b"damaged")  # still an index: it has its manifest

    report = build_index(catalogue, out, mobilenet_random)

    assert report.count == 3
    assert_index_is_fresh_extraction(out, mobilenet_random, ["1", "2", "3"])
    assert load_index(out).manifest.created_at >= first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "shop"]


def test_a_mount_point_out_is_refused_before_any_work(tmp_path, monkeypatch):
    """A volume mounted at --out / INDEX_DIR: the swap would rename the mount point (EBUSY or EXDEV)
    after the whole build, on every restart. Refused up front, before a model is loaded."""
    images, styles = make_shop(tmp_path / "shop")
    volume = tmp_path / "volume"
    volume.mkdir()  # a fresh, empty volume (making a real mount point needs root tricks: the check is os.path.ismount)
    real_ismount = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == volume or real_ismount(path))
    catalogue = load_catalogue(images, styles)
    unloaded = FeatureExtractor("mobilenet_v2", "none")

    with pytest.raises(BuildError) as exc_info:
        build_index(catalogue, volume, unloaded)
    message = str(exc_info.value)
    assert f"The output folder {volume} is a mount point" in message
    assert "Mount the volume one level up, or point --out (INDEX_DIR for the bot) at a folder inside it" in message
    with pytest.raises(BuildError, match="is a mount point"):
        ensure_index(bot_settings(INDEX_DIR=str(volume), CATALOGUE_DIR=str(tmp_path / "shop")))
    for mount_point in ("/proc", "/dev/shm"):  # real ones, where this machine has them
        if real_ismount(mount_point):
            with pytest.raises(BuildError, match="is a mount point"):
                check_output(mount_point, catalogue)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop", "volume"] and not any(volume.iterdir())


@pytest.mark.parametrize(
    "case", ["first-build-cross-device", "rebuild-cross-device", "rebuild-busy"],
)  # fmt: skip
def test_a_failed_swap_is_a_clear_error_that_keeps_the_old_index_and_the_extracted_work(tmp_path, monkeypatch, mobilenet_random, case):
    """The final renames fail (a mount point, another filesystem): a BuildError that says what to do,
    the earlier index still in place, and a re-run finishing from the checkpoint without re-extracting."""
    images, styles = make_shop(tmp_path / "shop", count=4)
    out = tmp_path / "index"
    if case.startswith("rebuild"):
        (images / "4.png").rename(tmp_path / "4.png")
        build_index(load_catalogue(images, styles), out, mobilenet_random)
        (tmp_path / "4.png").rename(images / "4.png")
        before = snapshot(out)
    if case.endswith("cross-device"):  # the finished index cannot be moved in
        code, fails = errno.EXDEV, lambda source: Path(source).name.startswith(".index.tmp-")
    else:  # the earlier index cannot be moved aside
        code, fails = errno.EBUSY, lambda source: Path(source) == out
    real_rename = os.rename

    def rename(source, destination, *args, **kwargs):
        if fails(source):
            raise OSError(code, os.strerror(code), str(source), None, str(destination))
        return real_rename(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(BuildError) as exc_info:
        build_index(load_catalogue(images, styles), out, mobilenet_random)
    monkeypatch.undo()

    message = str(exc_info.value)
    assert f"Cannot put the new index in place at {out}: {os.strerror(code)}" in message
    assert "mount the volume one level up, or point --out at a folder inside it" in message
    assert f"kept in {partial_dir_for(out)}" in message and "run the same command again" in message
    if case.startswith("rebuild"):
        assert snapshot(out) == before  # the earlier index, untouched and still served
        assert load_index(out).ids() == ["1", "2", "3"]
    else:
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".index.partial", "shop", *(["index"] if case.startswith("rebuild") else [])])

    report = build_index(load_catalogue(images, styles), out, mobilenet_random)  # the cause fixed: the same command

    assert (report.count, report.resumed, report.extracted) == (4, 4, 0)
    assert_index_is_fresh_extraction(out, mobilenet_random, ["1", "2", "3", "4"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "shop"]


def bot_settings(**env: str):
    return load_settings({"TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN, "INDEX_WEIGHTS": "none", "INDEX_BACKBONE": "mobilenet_v2", **env})


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
    """The issue's case: INDEX_DIR=data (catalogue and file-id cache inside) must not be swapped away."""
    data = tmp_path / "data"
    images, _ = make_shop(data / "catalogue")
    (data / "telegram-file-ids.json").write_text("{}")
    before = snapshot(data)

    with pytest.raises(BuildError, match="would be deleted"):
        ensure_index(bot_settings(INDEX_DIR=str(data), CATALOGUE_DIR=str(data / "catalogue")))

    assert snapshot(data) == before


# --- 2. one builder per output folder --------------------------------------------------------


def test_second_builder_stops_clearly_or_waits_its_turn(tmp_path, mobilenet_random):
    """This test process holds the build lock; build_index.py processes meet it."""
    images, styles = make_shop(tmp_path / "shop")
    out = tmp_path / "index"
    with output_lock(out):
        result = run_script("build_index.py", *build_args(images, styles, out))
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"Another build is running on {out.resolve()} (process {os.getpid()})" in error_line(result)
        assert "--wait" in error_line(result)
        assert not out.exists() and not partial_dir_for(out).exists()

        log = tmp_path / "waiting.log"
        with open(log, "w", encoding="utf-8") as output:
            waiter = subprocess.Popen(
                script_command("build_index.py", *build_args(images, styles, out, "--wait")),
                cwd=REPO, env=SCRIPT_ENV, stdout=output, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while "Waiting for another build" not in log.read_text(encoding="utf-8"):
                assert waiter.poll() is None, log.read_text(encoding="utf-8")
                assert time.monotonic() < deadline, "the second build never said it was waiting"
                time.sleep(0.05)
            assert waiter.poll() is None and not out.exists()  # still queued behind us
        except BaseException:
            waiter.kill()
            raise
    assert waiter.wait(timeout=120) == 0, log.read_text(encoding="utf-8")
    assert "Index written to" in log.read_text(encoding="utf-8")
    assert_index_is_fresh_extraction(out, mobilenet_random, ["1", "2", "3"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index", "shop", "waiting.log"]  # lock file gone too


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


@pytest.mark.parametrize("planted", ["symlink", "dangling-symlink", "hard-link"])
def test_a_planted_lock_file_link_is_refused_and_its_target_untouched(tmp_path, planted):
    """The holder truncates the lock file and writes its pid: through a planted link that would
    overwrite (or create) another file. The build stops clearly instead."""
    images, styles = make_shop(tmp_path / "shop")
    out = tmp_path / "index"
    lock = lock_path_for(out.resolve())
    victim = tmp_path / "accounts.txt"
    if planted == "dangling-symlink":
        lock.symlink_to(victim)  # O_CREAT would create the file the link names
    else:
        victim.write_text("the shop's accounts")
        (lock.symlink_to if planted == "symlink" else lock.hardlink_to)(victim)
    before = snapshot(tmp_path)

    result = run_script("build_index.py", *build_args(images, styles, out))

    assert result.returncode == 2, result.stdout + result.stderr
    what = "is a plain file with 2 hard links" if planted == "hard-link" else "is a symbolic link"
    assert f"error: The build lock {lock} {what}; a build never writes through it" in error_line(result)
    assert snapshot(tmp_path) == before and (planted != "dangling-symlink" or not victim.exists())
    assert lock.is_symlink() == (planted != "hard-link") and not out.exists()


# --- 3. products.csv paths stay inside the catalogue -----------------------------------------


@pytest.mark.parametrize("image", ["../../etc/hostname", "/etc/hostname", "a/../1001.jpg", "evil.jpg", "linked/hostname"])
def test_product_paths_outside_the_catalogue_are_refused(tmp_path, demo_index, image):
    index_dir, root = tmp_path / "index", tmp_path / "images"
    shutil.copytree(demo_index.path, index_dir)
    root.mkdir()
    (root / "evil.jpg").symlink_to("/etc/hostname")
    (root / "linked").symlink_to("/etc", target_is_directory=True)
    (root / "kept.jpg").write_bytes(b"inside")
    (root / "alias.jpg").symlink_to(root / "kept.jpg")  # a link that stays inside is fine
    manifest = json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))
    manifest["images_root"] = str(root)
    (index_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    products = (index_dir / "products.csv").read_text(encoding="utf-8").splitlines()
    row = products[3].split(",")
    row[1] = "alias.jpg"
    products[2] = ",".join(row)
    load_index(index_dir)  # every path inside: accepted
    row[1] = image
    products[4] = ",".join(row)
    (index_dir / "products.csv").write_text("\n".join(products) + "\n", encoding="utf-8")

    with pytest.raises(IndexCorruptError) as exc_info:
        load_index(index_dir)
    message = str(exc_info.value)
    assert f"line 5 (id '{row[0]}')" in message and repr(image) in message
    assert f"outside the catalogue folder {root}" in message
    with pytest.raises(CatalogueIndexError, match="outside the catalogue folder"):
        Recommender(index_dir).load()  # what the bot and query.py call


def test_photos_linked_from_outside_the_catalogue_are_skipped_and_the_index_loads(tmp_path, mobilenet_random):
    """A catalogue of symlinks to a photo store used to build an index every load refused, and a
    rebuild made the same one: the builder applies the loader's rule and skips such photos."""
    images, styles = make_shop(tmp_path / "shop", count=4)
    store = tmp_path / "store"
    store.mkdir()
    (images / "2.png").rename(store / "2.png")
    (images / "2.png").symlink_to(store / "2.png")  # leads outside the photos folder: skipped
    (images / "4.png").unlink()
    (images / "4.png").symlink_to(images / "3.png")  # stays inside: indexed
    Image.new("RGB", (64, 64), "navy").save(store / "5.png")
    (images / "more").symlink_to(store, target_is_directory=True)  # linked sub-folders are not scanned
    catalogue = load_catalogue(images, styles)
    assert [item.id for item in catalogue.items] == ["1", "2", "3", "4"]
    out = tmp_path / "index"

    report = build_index(catalogue, out, mobilenet_random)

    assert (report.count, [item_id for item_id, _ in report.skipped]) == (3, ["2"])
    reason = report.skipped[0][1]
    assert f"2.png: links to {store / '2.png'}, outside the photos folder {images}" in reason
    with open(out / "skipped.csv", encoding="utf-8", newline="") as listed:
        assert list(csv.reader(listed)) == [["image", "reason"], ["2", reason]]
    assert_index_is_fresh_extraction(out, mobilenet_random, ["1", "3", "4"])  # load_index accepts it


# --- 6. one bad photo never ends a build -----------------------------------------------------


@pytest.mark.parametrize("failure", [MemoryError(), RuntimeError("decoder bug")], ids=["MemoryError", "RuntimeError"])
def test_a_photo_whose_decoding_fails_in_any_way_is_skipped(tmp_path, monkeypatch, mobilenet_random, failure):
    """A banner-shaped catalogue photo once raised MemoryError from the decoder and ended a 44k build."""
    import recommender.reader

    images, styles = make_shop(tmp_path / "shop", count=4)
    real_load_image = recommender.reader.load_image

    def load_image_failing_on_photo_2(path, *args, **kwargs):
        if Path(path).name == "2.png":
            raise failure
        return real_load_image(path, *args, **kwargs)

    monkeypatch.setattr(recommender.reader, "load_image", load_image_failing_on_photo_2)
    out = tmp_path / "index"

    report = build_index(load_catalogue(images, styles), out, mobilenet_random, batch_size=2)

    assert (report.count, report.extracted) == (3, 3)
    assert [item_id for item_id, _ in report.skipped] == ["2"]
    assert type(failure).__name__ in report.skipped[0][1] and "2.png" in report.skipped[0][1]
    assert "2," in (out / "skipped.csv").read_text(encoding="utf-8")
    monkeypatch.undo()
    assert_index_is_fresh_extraction(out, mobilenet_random, ["1", "3", "4"])


# --- 13. what the operator configured must be there ------------------------------------------


def test_settings_never_show_the_token_and_know_what_was_configured(tmp_path):
    settings = load_settings({"TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN, "INDEX_DIR": str(tmp_path / "index")})
    secret = DEFAULT_TOKEN.split(":")[1]
    assert secret not in repr(settings) and secret not in str(settings) and secret not in f"{settings!r}"
    assert settings.token == DEFAULT_TOKEN
    assert (settings.index_dir_configured, settings.catalogue_dir_configured) == (True, False)
    data_only = load_settings({"TELEGRAM_BOT_TOKEN": DEFAULT_TOKEN, "DATA_DIR": str(tmp_path)})
    assert (data_only.index_dir_configured, data_only.catalogue_dir_configured) == (False, False)
    assert data_only.index_dir == tmp_path / "index"


@pytest.mark.parametrize("setup", ["index-dir-missing", "index-dir-empty", "catalogue-dir-missing", "catalogue-dir-empty"])
def test_configured_but_missing_index_or_catalogue_stops_instead_of_serving_the_demo(tmp_path, setup):
    data = tmp_path / "data"
    env = {"DATA_DIR": str(data)}
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
    bytes) used to end ``python -m bot`` with a traceback; now one ``ERROR`` line and status 2."""
    index_dir = tmp_path / ("x" * 300) / "index"
    returncode, output = _run_bot_offline(tmp_path, index_dir)
    assert returncode == 2, output
    errors = [line for line in output.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"File name too long ({index_dir / 'manifest.json'})" in errors[0], output
    assert "Check INDEX_DIR, CATALOGUE_DIR and DATA_DIR" in errors[0]
    assert "Traceback" not in output and DEFAULT_TOKEN.split(":")[1] not in output
