"""What a build may replace: --out never deletes anything but an index (real files, real subprocesses)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bot.startup import ensure_index
from recommender import BuildError, FeatureExtractor, build_index, load_catalogue, load_index
from recommender.locking import lock_path_for
from recommender.output_folder import check_output, partial_dir_for, remove_stale_siblings
from tests.build_helpers import assert_index_is_fresh_extraction, bot_settings, build_args, make_shop, snapshot
from tests.recommender_helpers import error_line, run_script


def test_out_holding_the_catalogue_is_refused_and_nothing_is_deleted(tmp_path):
    """``--out shop`` where shop/ holds images/, styles.csv and other files: refused, nothing touched."""
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


def test_the_checkpoint_folder_sits_beside_the_output(tmp_path):
    assert partial_dir_for(tmp_path / "index") == tmp_path / ".index.partial"


def test_new_empty_and_index_folders_may_be_replaced_and_nothing_else(tmp_path):
    images, styles = make_shop(tmp_path / "shop")
    catalogue = load_catalogue(images, styles)
    check_output(tmp_path / "new" / "index", catalogue)
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", catalogue)
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "manifest.json").write_text("{}")  # even a damaged index: it is ours
    check_output(tmp_path / "earlier", catalogue)

    (tmp_path / "file").write_text("x")
    with pytest.raises(BuildError, match="exists and is not a directory"):
        check_output(tmp_path / "file", catalogue)
    labels = tmp_path / "labels"
    labels.mkdir()
    styles = styles.rename(labels / "styles.csv")
    with pytest.raises(BuildError, match=f"The styles file {styles.resolve()} lies inside {labels.resolve()}"):
        check_output(labels, load_catalogue(images, styles))
    many = tmp_path / "many"
    many.mkdir()
    for number in range(7):
        (many / f"{number}.txt").write_text("x")
    with pytest.raises(BuildError, match=r"is not empty \(0.txt, 1.txt, 2.txt, 3.txt, 4.txt and 2 more\)"):
        check_output(many, catalogue)


def test_only_folders_left_by_killed_builds_are_removed(tmp_path):
    out = tmp_path / "index"
    stale = [tmp_path / ".index.tmp-123-1700000000000", tmp_path / ".index.old-9-1700000000001"]
    kept = [tmp_path / ".index.partial", tmp_path / ".index.tmp-mine", tmp_path / ".other.tmp-1-2", tmp_path / "index"]
    for folder in stale + kept:
        folder.mkdir()
        (folder / "file").write_text("x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "file").write_text("keep")
    (tmp_path / ".index.old-1-2").symlink_to(elsewhere, target_is_directory=True)

    remove_stale_siblings(out)

    assert not any(folder.exists() for folder in stale)
    assert all((folder / "file").exists() for folder in kept)
    assert (tmp_path / ".index.old-1-2").is_symlink() and (elsewhere / "file").read_text() == "keep"
