"""Product photos stay inside the catalogue: one rule for the reader (skips) and the loader (refuses)."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from PIL import Image

from recommender import CatalogueIndexError, IndexCorruptError, Recommender, build_index, load_catalogue, load_index
from recommender.confinement import ImageConfinement
from tests.build_helpers import assert_index_is_fresh_extraction, make_shop


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
    """A catalogue of symlinks to a photo store: the builder applies the loader's rule and skips the
    photos that lead outside, so the index it writes loads."""
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


@pytest.mark.parametrize(
    "image, allowed",
    [
        ("kept.jpg", True),
        ("sub/deeper.jpg", True),
        ("alias.jpg", True),  # a link that stays inside
        ("missing.jpg", True),  # not there is the reader's problem, not a way out
        ("evil.jpg", False),  # a link out of the folder
        ("linked/hostname", False),  # a linked folder that leads out
        ("../outside.jpg", False),
        ("sub/../kept.jpg", False),
        ("./kept.jpg", False),
        ("/etc/hostname", False),
        ("", False),
        ("sub//deeper.jpg", False),
        ("kept.jpg\x00.png", False),
    ],
)
def test_only_paths_that_really_lie_inside_the_root_are_allowed(tmp_path, image, allowed):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "kept.jpg").write_bytes(b"inside")
    (root / "sub" / "deeper.jpg").write_bytes(b"inside")
    (tmp_path / "outside.jpg").write_bytes(b"outside")
    (root / "alias.jpg").symlink_to(root / "kept.jpg")
    (root / "evil.jpg").symlink_to(tmp_path / "outside.jpg")
    (root / "linked").symlink_to("/etc", target_is_directory=True)

    confinement = ImageConfinement(root)

    assert confinement.allows(image) is allowed
    assert confinement.allows(image) is allowed  # answered again from what it cached
    assert confinement.root == str(root.resolve())
