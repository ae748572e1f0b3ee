"""One builder per output folder: the build lock, between threads and processes, and planted lock-file links."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from recommender.errors import BuildError, BuildLockedError, LockBusyError
from recommender.locking import build_lock, lock_path_for
from recommender.output_folder import output_lock, partial_dir_for
from tests.build_helpers import assert_index_is_fresh_extraction, build_args, make_shop, snapshot
from tests.recommender_helpers import REPO, SCRIPT_ENV, error_line, run_script, script_command


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


def test_the_lock_is_reentrant_in_one_thread_and_excludes_others(tmp_path):
    out = tmp_path / "index"
    lock = lock_path_for(out)
    refused: list[LockBusyError] = []

    def try_to_build() -> None:
        try:
            with build_lock(out, wait=0):
                pass
        except LockBusyError as exc:
            refused.append(exc)

    with build_lock(out) as held:
        assert held == lock and lock.read_text() == str(os.getpid())
        with build_lock(out):  # what build_index does inside a caller's lock
            assert lock.exists()
        assert lock.exists(), "leaving the inner hold must not release the outer one"
        other = threading.Thread(target=try_to_build)
        other.start()
        other.join()
    assert len(refused) == 1 and refused[0].holder_pid == os.getpid() and isinstance(refused[0], BuildError)
    assert not lock.exists()  # released and removed

    refused.clear()
    other = threading.Thread(target=try_to_build)
    other.start()
    other.join()
    assert refused == []


def test_a_waiting_builder_is_told_once_and_gets_the_lock_when_it_is_released(tmp_path):
    out = tmp_path / "index"
    told: list[str] = []
    acquired = threading.Event()

    def wait_for_it() -> None:
        with build_lock(out, wait=None, on_wait=lambda: told.append("waiting")):
            acquired.set()

    with build_lock(out):
        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        deadline = time.monotonic() + 30
        while not told:
            assert time.monotonic() < deadline, "the waiter was never told"
            time.sleep(0.01)
        assert not acquired.wait(0.3)  # still queued behind us
    waiter.join(timeout=30)
    assert acquired.is_set() and told == ["waiting"]


def test_output_lock_names_the_running_build(tmp_path):
    out = tmp_path / "index"
    errors: list[BaseException] = []

    def second_build() -> None:
        try:
            with output_lock(out):
                pass
        except BuildLockedError as exc:
            errors.append(exc)

    with output_lock(out):
        other = threading.Thread(target=second_build)
        other.start()
        other.join()
    assert [str(error) for error in errors] == [
        f"Another build is running on {out.resolve()} (process {os.getpid()}). Wait for it to finish, "
        "or run again with --wait to start as soon as it is done."
    ]
