"""File helpers: a crash or a failed rename never leaves a half-written file or a missing directory."""

from __future__ import annotations

import errno
import os

import pytest

from recommender.fileio import atomic_file, os_error_text, read_json, swap_into_place, temporary_sibling, write_json_atomic


def test_an_atomic_file_appears_complete_or_not_at_all(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")

    with pytest.raises(RuntimeError):
        with atomic_file(target) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("crash while writing")
    assert target.read_bytes() == b"old"

    with atomic_file(target) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data.bin"]  # no temporary file left


def test_json_round_trips_unicode(tmp_path):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"name": "Café", "ids": [1, 2]})
    assert read_json(path) == {"name": "Café", "ids": [1, 2]}
    assert "Café" in path.read_text(encoding="utf-8")


def test_a_swap_replaces_the_directory_and_removes_the_old_one(tmp_path):
    target, staging = tmp_path / "index", temporary_sibling(tmp_path / "index", "tmp")
    assert staging.parent == tmp_path and staging.name.startswith(".index.tmp-")
    target.mkdir()
    (target / "old.txt").write_text("old")
    staging.mkdir()
    (staging / "new.txt").write_text("new")

    swap_into_place(staging, target)

    assert [path.name for path in target.iterdir()] == ["new.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["index"]


def test_a_failed_swap_changes_nothing(tmp_path, monkeypatch):
    target, staging = tmp_path / "index", tmp_path / ".index.tmp-1-2"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staging.mkdir()
    real_rename = os.rename

    def rename(source, destination):
        if source == staging:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(source))
        return real_rename(source, destination)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError) as exc_info:
        swap_into_place(staging, target)
    monkeypatch.undo()

    assert exc_info.value.errno == errno.EXDEV
    assert [path.name for path in target.iterdir()] == ["old.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [".index.tmp-1-2", "index"]


def test_an_os_error_reads_as_what_went_wrong_and_where():
    assert os_error_text(OSError(errno.ENOSPC, "No space left on device", "/data/x.npy")) == "No space left on device (/data/x.npy)"
    assert os_error_text(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device"
