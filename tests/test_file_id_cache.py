"""The file_id cache on disk: one entry per product, small appends instead of whole rewrites,
files written by earlier versions still load, and damaged or foreign files never break the bot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import bot.file_id_cache as file_id_cache
from bot.file_id_cache import FileIdCache


def photo(folder: Path, name: str, content: bytes = b"jpeg") -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


async def reloaded(path: Path, bot_id: int = 1) -> FileIdCache:
    cache = FileIdCache(path, bot_id)
    await cache.load()
    return cache


async def test_a_changed_photo_replaces_its_entry(tmp_path: Path) -> None:
    path = tmp_path / "ids.json"
    cache = await reloaded(path)
    shirt = photo(tmp_path, "1.jpg")
    old_key = await FileIdCache.key_for("1", shirt)
    cache.put(old_key, "OLD")
    cache.put(await FileIdCache.key_for("2", photo(tmp_path, "2.jpg")), "OTHER")
    await cache.save()
    photo(tmp_path, "1.jpg", b"a new photo of product 1")
    os.utime(shirt, ns=(1, 1))
    new_key = await FileIdCache.key_for("1", shirt)
    assert new_key != old_key and cache.get(new_key) is None
    cache.put(new_key, "NEW")
    await cache.save()
    assert len(cache) == 2 and cache.get(old_key) is None and cache.get(new_key) == "NEW"
    again = await reloaded(path)
    assert len(again) == 2 and again.get(old_key) is None and again.get(new_key) == "NEW"


async def test_saves_append_a_journal_instead_of_rewriting_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "ids.json"
    cache = await reloaded(path)
    keys = [f"{n}:100:{n}" for n in range(400)]
    for key in keys[:300]:
        cache.put(key, f"F{key}")
    await cache.save()
    snapshot = path.read_bytes()
    assert set(json.loads(snapshot)["files"]) == set(keys[:300])
    for album in range(20):  # twenty albums of five new photos each
        for key in keys[300 + album * 5: 305 + album * 5]:
            cache.put(key, f"F{key}")
        await cache.save()
    assert path.read_bytes() == snapshot  # the 300 entries were not written again
    journal = path.with_name("ids.json.journal").read_text(encoding="utf-8").splitlines()
    assert len(journal) == 1 + 100 and json.loads(journal[0]) == {"bot_id": 1}
    cache.forget(keys[0])
    await cache.save()
    again = await reloaded(path)
    assert len(again) == 399 and again.get(keys[0]) is None and again.get(keys[-1]) == f"F{keys[-1]}"


async def test_a_long_journal_is_folded_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_id_cache, "COMPACT_MIN_LINES", 10)
    path = tmp_path / "ids.json"
    cache = await reloaded(path)
    for n in range(40):
        cache.put(f"{n}:1:1", f"F{n}")
        await cache.save()
    journal = path.with_name("ids.json.journal")
    assert len(journal.read_text().splitlines()) <= 21  # header + at most max(10, 40 // 2) lines
    assert len(json.loads(path.read_text())["files"]) >= 20
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
    again = await reloaded(path)
    assert {again.get(f"{n}:1:1") for n in range(40)} == {f"F{n}" for n in range(40)}


async def test_a_cache_written_by_the_previous_version_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "ids.json"
    # Earlier versions rewrote one JSON object, indent=0, and kept every version of a photo.
    files = {"7:10:1": "OLDER", "8:20:2": "EIGHT", "7:11:5": "NEWER"}
    path.write_text(json.dumps({"bot_id": 1, "files": files}, indent=0), encoding="utf-8")
    cache = await reloaded(path)
    assert len(cache) == 2 and cache.get("7:11:5") == "NEWER" and cache.get("7:10:1") is None
    cache.put("9:1:1", "NINE")
    await cache.save()  # the duplicate is cleaned out of the file, in the same format
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == {"bot_id": 1, "files": {"7:11:5": "NEWER", "8:20:2": "EIGHT", "9:1:1": "NINE"}}


async def test_damaged_or_foreign_files_are_ignored_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "ids.json"
    cache = await reloaded(path)
    cache.put("1:1:1", "ONE")
    await cache.save()
    cache.put("2:1:1", "TWO")
    await cache.save()
    journal = path.with_name("ids.json.journal")
    with journal.open("a", encoding="utf-8") as handle:
        handle.write('{"put": "3:1:1", "file_')  # a write cut short by a crash
    torn = await reloaded(path)
    assert (torn.get("1:1:1"), torn.get("2:1:1"), torn.get("3:1:1")) == ("ONE", "TWO", None)
    torn.put("4:1:1", "FOUR")
    await torn.save()  # the torn line is not continued: the cache is rewritten whole
    assert not journal.exists()
    assert len(await reloaded(path)) == 3
    assert len(await reloaded(path, bot_id=2)) == 0  # file_ids of another bot are useless
    path.write_text("{truncated", encoding="utf-8")
    assert len(await reloaded(path)) == 0


async def test_file_id_cache_round_trip_is_atomic_and_per_bot(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "ids.json"
    photo = tmp_path / "1.jpg"
    photo.write_bytes(b"jpeg")
    cache = FileIdCache(path, bot_id=1)
    key = await FileIdCache.key_for("1", photo)
    cache.put(key, "FILE-A")
    await cache.save()
    assert json.loads(path.read_text())["files"] == {key: "FILE-A"}
    assert [p.name for p in path.parent.iterdir()] == ["ids.json"]  # no temp files left

    same_bot = FileIdCache(path, bot_id=1)
    await same_bot.load()
    assert same_bot.get(key) == "FILE-A"
    other_bot = FileIdCache(path, bot_id=2)
    await other_bot.load()
    assert other_bot.get(key) is None  # file_ids are valid for one bot only

    photo.write_bytes(b"a different photo")  # replaced photo: new key, uploaded afresh
    assert await FileIdCache.key_for("1", photo) != key


async def test_corrupt_file_id_cache_is_ignored_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "ids.json"
    path.write_text("{truncated", encoding="utf-8")
    cache = FileIdCache(path, bot_id=1)
    await cache.load()
    assert len(cache) == 0
