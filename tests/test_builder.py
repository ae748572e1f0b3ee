"""Building and updating indexes: build_index wires reader, extractor, checkpoint and writer (real models, real files)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from recommender import BuildError, build_index, load_catalogue, load_index
from recommender.images import load_image
from recommender.output_folder import partial_dir_for
from tests.build_helpers import assert_index_is_fresh_extraction, leftovers, make_shop, rows_by_id, snapshot, subset
from tests.recommender_helpers import error_line, perturb_photo, run_script

# --- a finished build ---------------------------------------------------------------------


def test_vectors_are_the_extractors_features(demo_index, resnet_random):

    index = demo_index.load()
    for row in (0, 50, 97):
        vector = resnet_random.extract(load_image(index.image_path(row)))[0]
        np.testing.assert_allclose(index.vectors[row], vector, atol=1e-5)


def test_catalogue_image_finds_itself_first(demo_recommender, demo_index):
    items = demo_index.catalogue.items[::12]
    paths = [demo_index.catalogue.images_dir / item.image for item in items]
    for item, matches in zip(items, demo_recommender.recommend_many(paths, k=3)):
        assert matches[0].id == item.id
        assert matches[0].score == pytest.approx(1.0, abs=1e-4)
        assert matches[1].score < matches[0].score


def test_real_catalogue_photo_finds_itself_first(fashion_recommender, fashion_index):
    items = fashion_index.catalogue.items[::30]
    paths = [fashion_index.catalogue.images_dir / item.image for item in items]
    answers = fashion_recommender.recommend_many(paths, k=2)
    assert [matches[0].id for matches in answers] == [item.id for item in items]
    assert all(matches[0].score == pytest.approx(1.0, abs=1e-4) for matches in answers)


def test_refined_index_keeps_features_and_finds_catalogue_photos(fashion_index_refined, fashion_index, fashion_recommender_refined):
    """Label-aware refinement (the default with labels): raw features kept, vectors refined.

    Its index vectors are pulled towards their article type's centroid, so a catalogue photo no
    longer scores ~1 against itself, and a mislabelled product can lose its own photo: nearly
    every photo, not every one, finds itself first.
    """
    refined, plain = fashion_index_refined.load(), fashion_index.load()
    assert refined.manifest.refinement_method == "label-centroids"
    assert refined.vectors.shape == (600, 1280 + 320) and refined.manifest.vector_dim == 1600
    assert refined.ids() == plain.ids()
    np.testing.assert_array_equal(refined.features, plain.vectors)
    np.testing.assert_array_equal(refined.colours, plain.colours)
    # What the Recommender sends for each catalogue photo (checked on a few), for all 600 at once.
    from recommender import ExactSearcher
    from recommender.refine import LabelCentroids

    queries = LabelCentroids.query_vectors(refined.features, refined.colours)
    rows = [0, 48, 599]
    for row, matches in zip(rows, fashion_recommender_refined.recommend_many([refined.image_path(r) for r in rows], k=1)):
        np.testing.assert_allclose(matches[0].score, float(queries[row] @ refined.vectors[matches[0].row]), atol=1e-5)
    top, _ = ExactSearcher().fit(refined.vectors).search(queries, 1)
    found = np.flatnonzero(top[:, 0] == np.arange(len(refined)))
    assert len(found) >= 597, sorted(set(range(len(refined))) - set(found.tolist()))


# --- robustness on real photos ----------------------------------------------------------------
#
# MobileNetV2 on the 600-product index, queried with degraded copies of catalogue photos. Each
# degradation alone keeps the original in the top 5 almost always; all three together on these
# small thumbnails (downscale, crop, then coarse JPEG blocks) are much harsher. The thresholds
# sit a few points under the rates measured when they were set.


def _ranks_of_originals(recommender, index, picks, k, **perturbation) -> list[int]:
    queries = [perturb_photo(index.image_path(row), seed=row, **perturbation) for row in picks]
    answers = recommender.recommend_many(queries, k=k)
    ids = index.ids()
    return [next((m.rank for m in matches if m.id == ids[row]), k) for row, matches in zip(picks, answers)]


@pytest.mark.parametrize(
    "perturbation",
    [dict(scale=0.7, crop=False, quality=None), dict(scale=None, crop=False, quality=40), dict(scale=None, crop=True, quality=None)],
    ids=["resized-0.7x", "jpeg-q40", "cropped-3-5pct"],
)
def test_one_degradation_keeps_the_original_in_top5(fashion_recommender, fashion_index, perturbation):
    index = fashion_index.load()
    picks = np.linspace(0, len(index) - 1, 20).astype(int)
    ranks = _ranks_of_originals(fashion_recommender, index, picks, 5, **perturbation)
    assert sum(rank < 5 for rank in ranks) >= 19, ranks
    assert sum(rank == 0 for rank in ranks) >= 17, ranks


@pytest.mark.shared
@pytest.mark.parametrize("refined", [False, True], ids=["plain", "refined"])
def test_resized_recompressed_cropped_copy_still_finds_the_original(request, refined):
    suffix = "_refined" if refined else ""
    recommender = request.getfixturevalue(f"fashion_recommender{suffix}")
    index = request.getfixturevalue(f"fashion_index{suffix}").load()
    picks = np.linspace(0, len(index) - 1, 100).astype(int)
    ranks = np.array(_ranks_of_originals(recommender, index, picks, 20))
    in_top5, in_top20 = int((ranks < 5).sum()), int((ranks < 20).sum())
    assert in_top5 >= 80, f"original in top 5 for {in_top5}/100 degraded copies; ranks {ranks.tolist()}"
    assert in_top20 >= 90, f"original in top 20 for {in_top20}/100 degraded copies; ranks {ranks.tolist()}"


def test_real_features_group_similar_products(fashion_index):
    """Leave-one-out: a product's nearest other product is usually of the same kind."""
    from recommender import ExactSearcher

    index = fashion_index.load()
    rows, _ = ExactSearcher().fit(index.vectors).search(index.vectors, 1, exclude=np.arange(len(index)))
    article = np.array([p["articleType"] for p in index.products])
    master = np.array([p["masterCategory"] for p in index.products])
    # Well above chance (about one in twenty for articleType), a little under the rates measured when set.
    assert (article[rows[:, 0]] == article).mean() >= 0.55
    assert (master[rows[:, 0]] == master).mean() >= 0.85


# --- unreadable images ------------------------------------------------------------------------


def test_unreadable_images_are_skipped_and_listed(tmp_path, demo_catalogue, demo_index, resnet_random):
    images = tmp_path / "images"
    images.mkdir()
    good = demo_catalogue.items[:5]
    for item in good:
        shutil.copy(demo_catalogue.images_dir / item.image, images / item.image)
    whole = (demo_catalogue.images_dir / good[0].image).read_bytes()
    (images / "9001.jpg").write_bytes(whole[: len(whole) // 3])  # truncated
    (images / "9002.jpg").write_text("this is not a photo\n", encoding="utf-8")
    (images / "9003.png").write_bytes(b"")
    out = tmp_path / "index"

    report = build_index(load_catalogue(images), out, resnet_random)

    assert report.count == 5 and report.extracted == 5
    assert sorted(item_id for item_id, _ in report.skipped) == ["9001", "9002", "9003"]
    index = load_index(out)
    assert index.ids() == [item.id for item in good]
    expected = rows_by_id(demo_index.load())
    np.testing.assert_allclose(index.vectors, np.stack([expected[i] for i in index.ids()]), atol=1e-5)
    skipped = (out / "skipped.csv").read_text(encoding="utf-8").splitlines()
    assert skipped[0] == "image,reason"
    assert sorted(line.split(",")[0] for line in skipped[1:]) == ["9001", "9002", "9003"]
    assert "9002.jpg: This file is not an image" in (out / "skipped.csv").read_text(encoding="utf-8")
    assert index.manifest.catalogue.skipped == 3
    assert leftovers(out) == []


def test_nothing_readable_is_a_build_error(tmp_path, resnet_random):
    images = tmp_path / "images"
    images.mkdir()
    (images / "1.jpg").write_bytes(b"junk")
    with pytest.raises(BuildError, match="None of the 1 images could be read"):
        build_index(load_catalogue(images), tmp_path / "index", resnet_random)
    assert not (tmp_path / "index").exists()


# --- updating -------------------------------------------------------------------------------


def test_update_extracts_only_new_images_and_equals_a_fresh_build(tmp_path, demo_catalogue, resnet_random):
    out = tmp_path / "index"
    items = demo_catalogue.items
    build_index(subset(demo_catalogue, items[:12]), out, resnet_random)
    first = load_index(out).manifest
    assert first.count == 12

    new_catalogue = subset(demo_catalogue, items[2:18])  # 2 products gone, 6 new
    report = build_index(new_catalogue, out, resnet_random, update=True)

    assert (report.extracted, report.reused, report.removed, report.count) == (6, 10, 2, 16)
    index = load_index(out)
    assert index.ids() == [item.id for item in items[2:18]]
    build_index(new_catalogue, tmp_path / "fresh", resnet_random)
    fresh = load_index(tmp_path / "fresh")
    assert index.manifest.refinement == fresh.manifest.refinement
    assert index.manifest.refinement_method == "label-centroids"  # refitted on the new rows
    for name in ("vectors", "features", "colours"):
        np.testing.assert_allclose(getattr(index, name), getattr(fresh, name), atol=1e-5, err_msg=name)
    assert index.products == fresh.products
    assert index.manifest.created_at == first.created_at and index.manifest.updated_at is not None
    assert leftovers(out) == []


def test_update_without_an_index_is_a_build_error(tmp_path, demo_catalogue, resnet_random):
    with pytest.raises(BuildError, match="--update needs an existing index"):
        build_index(subset(demo_catalogue, demo_catalogue.items[:2]), tmp_path / "index", resnet_random, update=True)


def test_update_with_another_model_is_refused(tmp_path, demo_catalogue, demo_index):
    out = tmp_path / "index"
    shutil.copytree(demo_index.path, out)
    before = (out / "vectors.npy").read_bytes()
    result = run_script(
        "build_index.py", "--images", demo_catalogue.images_dir, "--styles", demo_catalogue.styles_path,
        "--out", out, "--update", "--backbone", "mobilenet_v2", "--weights", "none", "--quiet",
    )  # fmt: skip
    assert result.returncode == 2
    line = error_line(result)
    assert "does not match the one this index was built with" in line
    assert "backbone: index='resnet50', requested='mobilenet_v2'" in line
    assert (out / "vectors.npy").read_bytes() == before
    assert leftovers(out) == []


# --- putting the index in place ---------------------------------------------------------------


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


# --- loading the model ------------------------------------------------------------------------
