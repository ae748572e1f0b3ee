"""Exact item: crops, the shortlist, stored SIFT keypoints and their geometric verification (real photos, real model)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recommender import ImageDecodeError, IndexCorruptError, Recommender, ShortlistQuery, build_index, load_index, local_features
from recommender.catalogue import Catalogue, CatalogueItem
from recommender.colour import DIM as COLOUR_DIM
from recommender.colour import colour_histograms
from recommender.evaluation.protocols import verified_exact_items
from recommender.evaluation.report import LABELS
from recommender.exact_match import (
    AGREEING_LABELS,
    CLEAR_LEAD,
    CROP_SCALES,
    EXACT_INLIERS,
    EXACT_INSIDE,
    LABELS_AGREE,
    LIFT,
    LIFT_FROM,
    LIFT_LABELS,
    LIKELY_INLIERS,
    MIN_INSIDE,
    PIN_INLIERS,
    SHORTLIST,
    Verifier,
    crop_boxes,
    lifts,
    query_crops,
    shortlist,
    shortlist_searcher,
)
from recommender.extractor import FeatureExtractor
from recommender.head import (
    INSTANCE_METHOD,
    INSTANCE_PREFIX,
    INSTANCE_TEMPERATURE,
    HeadSettings,
    head_files,
    instance_settings,
    product_vectors,
    shopper_views,
    view_means,
)
from recommender.images import BACKGROUND, decode_image, square_resize
from recommender.index_store import SHORTLIST_VECTORS, CatalogueIndex
from recommender.local_features import (
    BOXES,
    CATALOGUE_CONTRAST,
    COLOURS,
    DESCRIPTOR_SIZE,
    DESCRIPTORS,
    FILES,
    MAX_QUERY_POINTS,
    METHOD,
    OFFSETS,
    POINTS,
    QUERY_CONTRAST,
    QUERY_SIDE,
    LocalFeatures,
    LocalFeatureStore,
    catalogue_features,
    compute_rows,
    query_features,
    root_sift,
)
from recommender.recommender import EXACT_MATCH_LINE, Query
from recommender.shopper_photos import rng_for, shopper_photo
from tests.build_helpers import subset

#: Products of the store and the index: every 100th of the 4k catalogue (30 of them, all kinds of products).
STORE_STEP, STORE_SIZE = 100, 30
#: Shopper photos (seed 0) of these products verify with many inliers: a print T-shirt, a sports
#: shoe, a jacket and a watch (measured: 33-56 inliers, no other product pinned).
TEXTURED = ("6602", "13208", "22323", "41031")
#: Products NOT in the store: the neighbours (next id) of the store's first ten; 1538 is a Puma
#: T-shirt whose logo matches the store's Puma T-shirt 1537 (pinned with 11 inliers, not exact).
STRANGERS = 10
#: Verify every product of the store, none preferred by the global search.
ALL_ROWS, NO_SCORES = list(range(STORE_SIZE)), [0.0] * STORE_SIZE


#: The store's arrays (offsets, points, descriptors, boxes, ...), as saved and loaded.
STORE_ARRAYS = tuple(field.name for field in dataclasses.fields(LocalFeatureStore))


def assert_same_store(mine: LocalFeatureStore, theirs: LocalFeatureStore) -> None:
    for name in STORE_ARRAYS:
        np.testing.assert_array_equal(getattr(mine, name), getattr(theirs, name), err_msg=name)
        assert getattr(mine, name).dtype == getattr(theirs, name).dtype, name


def assert_same_rows(mine: LocalFeatureStore, row: int, theirs: LocalFeatureStore, their_row: int) -> None:
    """Product ``row`` of ``mine`` has exactly the keypoints (positions, descriptors, box, ...) of ``their_row`` of ``theirs``."""
    for mine_part, their_part in zip(mine.features(row), theirs.features(their_row), strict=True):
        np.testing.assert_array_equal(mine_part, their_part)


def spread(catalogue: Catalogue, start: int, count: int) -> list[CatalogueItem]:
    return catalogue.items[start::STORE_STEP][:count]


def item_with(items: list[CatalogueItem], item_id: str) -> CatalogueItem:
    return next(item for item in items if item.id == item_id)


def shopper_bytes(catalogue: Catalogue, item: CatalogueItem, seed: int = 0) -> bytes:
    """A phone photo of ``item``'s product (960 x 1280 JPEG, busy background, tilted, off-centre)."""
    return shopper_photo(catalogue.images_dir / item.image, rng_for(seed, item.id))


def shopper_keypoints(catalogue: Catalogue, item: CatalogueItem, seed: int = 0) -> LocalFeatures:
    """The photo's keypoints as :meth:`Recommender.prepare` makes them (decoded at least 448 px on the short side)."""
    return query_features(decode_image(shopper_bytes(catalogue, item, seed), min_side=448))


@pytest.fixture(scope="module")
def store_items(fashion_catalogue) -> list[CatalogueItem]:
    return spread(fashion_catalogue, 0, STORE_SIZE)


@pytest.fixture(scope="module")
def store(fashion_catalogue, store_items) -> LocalFeatureStore:
    """The keypoints of the 30 store products, as the build makes them."""
    return LocalFeatureStore.from_rows(compute_rows([fashion_catalogue.images_dir / item.image for item in store_items]))


@pytest.fixture
def photo() -> Image.Image:
    """A 320 x 240 photo with detail everywhere (smooth gradients plus seeded noise), so resampling errors show."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:240, 0:320]
    base = np.stack([x * 0.7, y * 0.9, (x + y) * 0.4], axis=-1) + rng.normal(0, 25, (240, 320, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


# --- the model input of a photo and of its crops -------------------------------------------------


def padded_then_resized(image: Image.Image, size: int) -> np.ndarray:
    """The canonical model input, written out: pad to a centred white square, resize bilinearly."""
    side = max(image.size)
    canvas = Image.new("RGB", (side, side), BACKGROUND)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return np.asarray(canvas.resize((size, size), Image.Resampling.BILINEAR) if side != size else canvas, dtype=np.uint8)


def test_square_resize_pads_to_a_white_square_then_resizes(photo):
    for image in (photo, photo.crop((0, 0, 120, 240)), photo.crop((0, 0, 224, 224)), photo.crop((3, 7, 101, 55))):
        resized = square_resize(image, 224)
        assert resized.shape == (224, 224, 3) and resized.dtype == np.uint8
        np.testing.assert_array_equal(resized, padded_then_resized(image, 224))
    thin = square_resize(photo.crop((100, 0, 180, 240)), 224)  # white bands beside a tall crop
    assert (thin[:, :60] == 255).all() and (thin[:, -60:] == 255).all() and not (thin[:, 100:124] == 255).all()


# --- crops -------------------------------------------------------------------------------------


@pytest.mark.parametrize("width, height", [(960, 1280), (640, 480), (448, 448), (37, 501)])
@pytest.mark.parametrize("scales", [CROP_SCALES, (0.8, 0.65)])
def test_crop_boxes_are_overlapping_grids_inside_the_photo(width, height, scales):
    boxes = crop_boxes(width, height, scales, diagonal=False)
    sizes = {0.8: 4, 0.65: 9}
    assert len(boxes) == sum(sizes[scale] for scale in scales)
    start = 0
    for scale in scales:
        grid = boxes[start : start + sizes[scale]]
        start += sizes[scale]
        for left, top, right, bottom in grid:
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
            assert abs((right - left) - width * scale) <= 1 and abs((bottom - top) - height * scale) <= 1
        lefts, tops = sorted({box[0] for box in grid}), sorted({box[1] for box in grid})
        assert lefts[0] == 0 and tops[0] == 0 and max(box[2] for box in grid) == width and max(box[3] for box in grid) == height
        # neighbours overlap by at least half a crop
        assert all(b - a <= width * scale / 2 + 1 for a, b in zip(lefts, lefts[1:]))
        assert all(b - a <= height * scale / 2 + 1 for a, b in zip(tops, tops[1:]))
    assert len(set(boxes)) == len(boxes)
    # the diagonal: each grid's crops from the top left to the bottom right, in order
    diagonal = crop_boxes(width, height, scales)
    expected = [box for scale in scales for box in crop_boxes(width, height, (scale,), diagonal=False)[:: math.isqrt(sizes[scale]) + 1]]
    assert diagonal == expected and len(diagonal) == sum(math.isqrt(sizes[scale]) for scale in scales)
    assert diagonal[0][:2] == (0, 0) and diagonal[len(diagonal) // len(scales) - 1][2:] == (width, height)


def test_crop_boxes_of_other_scales():
    assert crop_boxes(100, 100, ()) == []
    assert len(crop_boxes(100, 100, (0.5,), diagonal=False)) == 9  # 3 x 3: steps of a quarter of the photo, half a crop
    assert len(crop_boxes(100, 100, (0.5,))) == 3
    assert len(crop_boxes(100, 100, (0.9,), diagonal=False)) == 4
    for whole in (1.0, 1.5, 0.0):
        with pytest.raises(ValueError, match="between 0 and 1"):
            crop_boxes(100, 100, (whole,))


def test_query_crops_are_the_crops_model_inputs(photo):
    """Each crop is cut out, then padded and resized exactly as a whole photo is."""
    crops = query_crops(photo, 64)
    assert crops.shape == (len(crop_boxes(photo.width, photo.height)), 64, 64, 3) == (2, 64, 64, 3) and crops.dtype == np.uint8
    for crop, box in zip(crops, crop_boxes(photo.width, photo.height)):
        np.testing.assert_array_equal(crop, padded_then_resized(photo.crop(box), 64))
    assert query_crops(photo, 64, ()).shape == (0, 64, 64, 3)


def test_query_crops_of_a_real_shopper_photo(fashion_catalogue, store_items):
    image = decode_image(shopper_bytes(fashion_catalogue, item_with(store_items, TEXTURED[0])), min_side=448)
    assert image.size == (480, 640)  # the 960 x 1280 phone photo, decoded at half size as Recommender.prepare does
    crops = query_crops(image, 224)
    assert crops.shape == (2, 224, 224, 3)
    for crop, box in zip(crops, crop_boxes(*image.size)):
        np.testing.assert_array_equal(crop, square_resize(image.crop(box), 224))
    assert len({crop.tobytes() for crop in crops}) == 2


# --- the shortlist -----------------------------------------------------------------------------


def test_shortlist_keeps_each_row_once_at_its_best_crop_and_ignores_empty_slots():
    rows = np.array([[3, 7, 1, -1], [7, 2, 3, -1], [9, -1, -1, -1]])
    scores = np.array([[0.9, 0.5, 0.4, -9.0], [0.95, 0.6, 0.1, -9.0], [0.3, 5.0, 5.0, 5.0]], dtype=np.float32)
    chosen, best = shortlist(rows, scores)
    assert chosen.tolist() == [7, 3, 2, 1, 9]
    np.testing.assert_allclose(best, [0.95, 0.9, 0.6, 0.4, 0.3])
    chosen, best = shortlist(rows, scores, size=2)
    assert chosen.tolist() == [7, 3]
    assert shortlist(np.full((2, 3), -1), np.zeros((2, 3)))[0].size == 0
    assert shortlist(np.zeros((0, 0), np.int64), np.zeros((0, 0), np.float32))[0].size == 0


@pytest.mark.parametrize("seed", range(5))
def test_shortlist_is_the_brute_force_top_rows_by_best_crop(seed):
    """As the Recommender uses it: each crop's own top rows of an exact search, then the shortlist."""
    rng = np.random.default_rng(seed)
    products, crops, dim, size = 300, 14, 16, 50
    vectors = rng.normal(size=(products, dim)).astype(np.float32)
    queries = rng.normal(size=(crops, dim)).astype(np.float32)
    similarity = queries @ vectors.T
    top = np.argsort(-similarity, axis=1)[:, :size]
    chosen, best = shortlist(top, np.take_along_axis(similarity, top, axis=1), size)

    best_of_row = similarity.max(axis=0)  # brute force: every product's best crop, all products
    expected = np.argsort(-best_of_row)[:size]
    assert chosen.tolist() == expected.tolist()
    np.testing.assert_allclose(best, best_of_row[expected], rtol=1e-6)
    assert len(set(chosen.tolist())) == size


# --- the stored keypoints ----------------------------------------------------------------------


def test_a_shopper_photo_keeps_more_keypoints_than_the_catalogues_threshold_would(fashion_catalogue, store_items):
    """A phone photo is blurred and noisy: the query side's lower contrast threshold keeps more of its keypoints."""
    shot = decode_image(shopper_bytes(fashion_catalogue, item_with(store_items, TEXTURED[1])), min_side=448)
    query = query_features(shot)  # measured: 117 keypoints against 65
    at_catalogue_threshold, _ = local_features._sift(shot, QUERY_SIDE, MAX_QUERY_POINTS, CATALOGUE_CONTRAST)
    assert QUERY_CONTRAST < CATALOGUE_CONTRAST
    assert len(query) > 1.4 * len(at_catalogue_threshold) > 0


def test_two_nearest_are_the_two_best_columns_of_each_row():
    from recommender.exact_match import _two_nearest

    similarity = np.random.default_rng(3).random((500, 40), dtype=np.float32)
    similarity[7] = similarity[7, 0]  # a row of ties: the first column, twice the same similarity
    before = similarity.copy()
    nearest, best, second = _two_nearest(similarity)
    ordered = np.sort(before, axis=1)
    np.testing.assert_array_equal(best, ordered[:, -1])
    np.testing.assert_array_equal(second, ordered[:, -2])
    np.testing.assert_array_equal(before[np.arange(500), nearest], best)
    assert nearest[7] == 0 and best[7] == second[7]
    np.testing.assert_array_equal(similarity, before)  # restored


def test_catalogue_keypoints_of_a_real_photo(fashion_catalogue, store, store_items):
    features, box = catalogue_features(Image.open(fashion_catalogue.images_dir / store_items[4].image).convert("RGB"))
    assert features.size == (240, 320)  # 60 x 80 scaled to a long side of 320
    assert 20 < len(features) <= 200 and features.points.dtype == np.float32 and features.descriptors.dtype == np.uint8
    assert features.descriptors.shape == (len(features), DESCRIPTOR_SIZE)
    left, top, right, bottom = box
    assert 0 <= left < right <= 240 and 0 <= top < bottom <= 320  # the product, not the whole white photo
    assert (right - left) * (bottom - top) < 240 * 320
    assert (features.points >= 0).all() and (features.points[:, 0] <= 240).all() and (features.points[:, 1] <= 320).all()
    stored = store.features(4)
    np.testing.assert_array_equal(stored[0], features.points)
    np.testing.assert_array_equal(stored[1], features.descriptors)
    np.testing.assert_array_equal(stored[2], box)
    rooted = root_sift(stored[1])
    np.testing.assert_allclose(np.linalg.norm(rooted, axis=1), 1.0, atol=1e-5)


def test_store_round_trips_through_its_files(tmp_path, store):
    assert len(store) == STORE_SIZE and store.offsets[0] == 0 and (np.diff(store.offsets) >= 0).all()
    store.save(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(FILES)
    for mmap in (True, False):
        loaded = LocalFeatureStore.load(tmp_path, STORE_SIZE, mmap=mmap)
        assert loaded is not None and len(loaded) == STORE_SIZE
        assert all(isinstance(getattr(loaded, name), np.memmap) is mmap for name in STORE_ARRAYS)
        assert_same_store(loaded, store)
    # take() carries rows into another store unchanged
    again = LocalFeatureStore.from_rows(store.take([3, 0, 3]))
    for row, source in enumerate((3, 0, 3)):
        assert_same_rows(again, row, store, source)


def test_an_empty_store_and_rows_without_keypoints(tmp_path):
    empty = LocalFeatureStore.from_rows([])
    assert len(empty) == 0 and empty.descriptors.shape == (0, DESCRIPTOR_SIZE)
    (tmp_path / "broken.jpg").write_bytes(b"not a photo")
    rows = compute_rows([tmp_path / "broken.jpg", tmp_path / "missing.jpg"])
    assert [len(features) for features, _ in rows] == [0, 0]
    store = LocalFeatureStore.from_rows(rows)
    assert store.offsets.tolist() == [0, 0, 0] and store.features(1)[0].shape == (0, 2)
    query = LocalFeatures(np.zeros((5, 2), np.float32), np.ones((5, 128), np.float32), (9, 9))
    assert Verifier(store).verify(query, [0, 1], [0.0, 0.0]).pinned == ()


def test_load_finds_no_store_in_an_index_without_one(tmp_path):
    assert LocalFeatureStore.load(tmp_path, 0) is None
    assert LocalFeatureStore.load(tmp_path, 30) is None


@pytest.mark.parametrize(
    "damage", ["fewer-rows", "offsets-past-the-points", "float-descriptors", "colours-of-other-points", "missing-file", "truncated-file"]
)
def test_a_store_that_does_not_fit_the_index_is_refused(tmp_path, store, damage):
    store.save(tmp_path)
    count = STORE_SIZE
    if damage == "fewer-rows":
        count = STORE_SIZE + 1  # the index lists one more product than the store has
    elif damage == "offsets-past-the-points":
        offsets = store.offsets.copy()
        offsets[-1] += 5
        np.save(tmp_path / OFFSETS, offsets)
    elif damage == "float-descriptors":
        np.save(tmp_path / DESCRIPTORS, store.descriptors.astype(np.float32))
    elif damage == "colours-of-other-points":
        np.save(tmp_path / COLOURS, store.colours[:-1])
    elif damage == "missing-file":
        (tmp_path / BOXES).unlink()
    else:
        path = tmp_path / POINTS
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(IndexCorruptError, match="rebuild the index"):
        LocalFeatureStore.load(tmp_path, count)


# --- verification of real shopper photos -------------------------------------------------------


@pytest.mark.parametrize("product", TEXTURED)
def test_a_shopper_photo_pins_its_own_product_first_as_exact(fashion_catalogue, store, store_items, product):
    row = [item.id for item in store_items].index(product)
    query = shopper_keypoints(fashion_catalogue, store_items[row])
    assert query.size == (240, 320) and len(query) > 20  # 960 x 1280 decoded at half size, scaled to QUERY_SIDE
    found = Verifier(store).verify(query, ALL_ROWS, NO_SCORES)
    assert found.pinned[0] == row and found.exact
    assert found.inliers[0] >= 2 * EXACT_INLIERS
    assert len(found.pinned) == len(found.inliers) and all(count >= PIN_INLIERS for count in found.inliers)
    assert list(found.inliers) == sorted(found.inliers, reverse=True)
    # the rows given are what is pinned: a shortlist that leaves the product out cannot pin it
    others = [r for r in range(STORE_SIZE) if r != row]
    assert row not in Verifier(store).verify(query, others, [0.0] * len(others)).pinned


def test_shopper_photos_of_products_not_in_the_store_are_never_exact(fashion_catalogue, store, store_items):
    strangers = spread(fashion_catalogue, 1, STRANGERS)
    assert not {item.id for item in strangers} & {item.id for item in store_items}
    verifier = Verifier(store)
    for item in strangers:
        found = verifier.verify(shopper_keypoints(fashion_catalogue, item), ALL_ROWS, NO_SCORES)
        assert not found.exact, (item.id, found)


@pytest.mark.parametrize("product", ["22323", "3057", "7787"])  # a red jacket, a green and a navy T-shirt
def test_the_same_product_in_another_colour_is_not_exact(fashion_catalogue, store, store_items, product):
    """SIFT sees grey levels only: the keypoints' colours keep a recoloured product from being called the same one."""
    item = item_with(store_items, product)
    red, green, blue = Image.open(fashion_catalogue.images_dir / item.image).convert("RGB").split()
    verifier = Verifier(store)
    own = verifier.verify(shopper_keypoints(fashion_catalogue, item), ALL_ROWS, NO_SCORES)
    assert own.exact and store_items[own.pinned[0]] is item  # in its own colour, the very product
    for channels in ((blue, red, green), (green, blue, red)):  # red becomes green, or blue; the shapes stay
        recoloured = shopper_photo(Image.merge("RGB", channels), rng_for(0, item.id))
        query = query_features(decode_image(recoloured, min_side=448))
        assert not verifier.verify(query, ALL_ROWS, NO_SCORES).exact


#: how :func:`moved_keypoints` places a product's keypoints in its 'photo': one scale, one shift (x, y)
MOVE_SCALE, MOVE_SHIFT = 1.5, (40.0, 60.0)


def moved_keypoints(store: LocalFeatureStore, row: int, count: int) -> LocalFeatures:
    """A 'photo' holding ``count`` of product ``row``'s own keypoints, moved by one scale and shift: exactly
    ``count`` matches agree in place and colour."""
    points, descriptors, box, colours = store.features(row)
    keep = np.linspace(0, len(points) - 1, count).round().astype(int)
    scale, shift = MOVE_SCALE, np.array(MOVE_SHIFT, dtype=np.float32)
    size = (int(box[2] * scale + 100), int(box[3] * scale + 120))
    return LocalFeatures(points[keep] * scale + shift, root_sift(descriptors[keep]), size, colours[keep])  # a query's descriptors are RootSIFT


def test_a_few_agreeing_matches_put_the_likeliest_first_but_never_verify_it(store, store_items):
    """LIKELY_INLIERS to PIN_INLIERS - 1 matches are too few to verify a product, but the candidate first
    by matches (the shortlist's score breaking near-ties: 50 x its cosine) comes first with them, not
    called exact; a product far below in the shortlist needs PIN_INLIERS."""
    row = next(i for i, item in enumerate(store_items) if item.id == TEXTURED[0])
    other = (row + 1) % STORE_SIZE
    verifier = Verifier(store)
    few = moved_keypoints(store, row, PIN_INLIERS - 1)
    assert LIKELY_INLIERS <= PIN_INLIERS - 1
    found = verifier.verify(few, [row, other], [0.9, 0.5])
    assert found.pinned == (row,) and found.inliers == (PIN_INLIERS - 1,) and not found.exact
    assert row not in verifier.verify(few, [other, row], [0.9, 0.5]).pinned  # 0.4 of cosine below: too few
    behind = verifier.verify(few, [other, row], [0.62, 0.60])  # 0.02 below: its matches outweigh that
    assert behind.pinned == (row,) and behind.inliers == (PIN_INLIERS - 1,) and not behind.exact
    assert verifier.verify(moved_keypoints(store, row, 1), [row, other], [0.9, 0.5]).pinned == ()  # one keypoint: nothing
    # LIKELY_INLIERS agreeing matches, with one more that does not (RANSAC needs 4 in all)
    one_astray = moved_keypoints(store, row, LIKELY_INLIERS + 1)
    astray = one_astray.points.copy()
    astray[0] += 150.0
    fewest = verifier.verify(LocalFeatures(astray, one_astray.descriptors, one_astray.size, one_astray.colours), [row, other], [0.9, 0.5])
    assert fewest.pinned == (row,) and fewest.inliers == (LIKELY_INLIERS,) and not fewest.exact
    two_astray = astray.copy()
    two_astray[1] -= 150.0  # another astray the other way: LIKELY_INLIERS - 1 agree, too few
    too_few = LocalFeatures(two_astray, one_astray.descriptors, one_astray.size, one_astray.colours)
    assert verifier.verify(too_few, [row, other], [0.9, 0.5]).pinned == ()
    assert verifier.verify(moved_keypoints(store, row, PIN_INLIERS - 1), [other, row], [0.9, 0.5]).pinned == ()  # far below: one too few
    assert verifier.verify(moved_keypoints(store, row, PIN_INLIERS), [other, row], [0.9, 0.5]).pinned == (row,)
    enough = verifier.verify(moved_keypoints(store, row, PIN_INLIERS + 2), [other, row], [0.9, 0.5])
    assert enough.pinned == (row,) and not enough.exact  # verified wherever it stands in the shortlist
    exact = verifier.verify(moved_keypoints(store, row, EXACT_INLIERS + 4), [other, row], [0.9, 0.5])
    assert exact.pinned == (row,) and exact.exact


def test_a_product_running_off_the_photos_edge_comes_first_but_is_not_called_exact(store, store_items):
    """A product in the backdrop (a poster, a neighbouring garment) is cut by the frame; the one the
    shopper points the camera at is in the picture whole. Cut between EXACT_INSIDE and MIN_INSIDE of
    its box, a product is still verified and put first, but it is not called an exact match."""
    row = next(i for i, item in enumerate(store_items) if item.id == TEXTURED[0])
    other = (row + 1) % STORE_SIZE
    whole = moved_keypoints(store, row, 60)
    _, _, box, _ = store.features(row)
    left, right = float(box[0]), float(box[2])
    kept_share = (MIN_INSIDE + EXACT_INSIDE) / 2
    width = int(MOVE_SHIFT[0] + MOVE_SCALE * (left + kept_share * (right - left)))  # the frame cuts the box's right side
    inside = whole.points[:, 0] < width
    cut = LocalFeatures(whole.points[inside], whole.descriptors[inside], (width, whole.size[1]), whole.colours[inside])
    assert len(cut) >= EXACT_INLIERS + 4
    verifier = Verifier(store)
    assert verifier.verify(whole, [other, row], [0.9, 0.5]).exact  # the whole product: exact
    found = verifier.verify(cut, [other, row], [0.9, 0.5])
    assert found.pinned == (row,) and found.inliers[0] >= EXACT_INLIERS and not found.exact


def test_a_photo_with_too_few_keypoints_or_no_candidates_verifies_nothing(store):
    blank = query_features(Image.new("RGB", (480, 640), (120, 90, 60)))
    assert len(blank) == 0
    assert Verifier(store).verify(blank, ALL_ROWS, NO_SCORES) == Verifier(store).verify(blank, [], [])
    assert Verifier(store).verify(blank, [], []).pinned == () and not Verifier(store).verify(blank, [], []).exact


def test_a_clear_lead_in_the_shortlist_comes_first_when_the_keypoints_say_nothing(store):
    """A plain garment or a blurred photo gives SIFT nothing to match; the instance head's best still comes
    first (never called exact) when its score stands CLEAR_LEAD above the next one's, and only for a
    verifier told to (an index whose shortlist is the instance head's)."""
    blank = query_features(Image.new("RGB", (480, 640), (120, 90, 60)))
    rows = [3, 7, 11]
    lead = Verifier(store, clear_lead=CLEAR_LEAD)
    found = lead.verify(blank, rows, [0.5, 0.5 + CLEAR_LEAD + 0.01, 0.3])
    assert found.pinned == (7,) and found.inliers == (0,) and not found.exact
    assert lead.verify(blank, rows, [0.5, 0.5 + CLEAR_LEAD - 0.01, 0.3]).pinned == ()  # too close to call
    assert lead.verify(blank, [7], [0.9]).pinned == ()  # nothing to lead
    assert Verifier(store).verify(blank, rows, [0.5, 0.9, 0.3]).pinned == ()


def test_the_label_heads_word_puts_the_likeliest_first_when_nothing_else_does(store):
    """Nothing verified, too few matches, no clear lead: the candidate first by matches and score still
    comes first (never called exact) when the label head agrees with its labels; another candidate's
    agreement, or none given, puts nothing first, and a clear lead goes first whatever the labels say."""
    blank = query_features(Image.new("RGB", (480, 640), (120, 90, 60)))
    rows, close = [3, 7, 11], [0.5, 0.52, 0.3]
    verifier = Verifier(store, clear_lead=CLEAR_LEAD)
    found = verifier.verify(blank, rows, close, np.array([False, True, False]))
    assert found.pinned == (7,) and found.inliers == (0,) and not found.exact
    assert verifier.verify(blank, rows, close, np.array([True, False, True])).pinned == ()  # not the likeliest
    assert verifier.verify(blank, rows, close).pinned == ()
    assert verifier.verify(blank, rows, [0.5, 0.6, 0.3], np.array([True, False, False])).pinned == (7,)  # the lead


def test_lifts_are_the_shortlists_candidates_above_the_score_whose_labels_the_head_believes():
    rows, scores = np.array([5, 8, 2, 9]), np.array([LIFT_FROM + 0.3, LIFT_FROM + 0.1, LIFT_FROM, LIFT_FROM + 0.2])
    lifted = lifts(rows, scores, np.array([True, True, True, False]))
    assert [row for row, _ in lifted] == [5, 8]  # at LIFT_FROM: nothing; not agreeing: nothing
    np.testing.assert_allclose([lift for _, lift in lifted], [LIFT * 0.3, LIFT * 0.1])
    assert lifts(rows, scores, None) == ()  # no label head: nothing rises


def album_order_by_hand(recommender: Recommender, query: Query, allowed: np.ndarray | None = None) -> list[int]:
    """Every product in a query's order: its pinned ones, then all the others by album score plus lift."""
    index = recommender.index
    assert index is not None
    lift = dict(query.lifted)
    scores = index.vectors @ query.vector
    order = sorted(range(len(index)), key=lambda row: -(scores[row] + lift.get(row, 0.0)))
    keep = [row for row in order if allowed is None or allowed[row]]
    first = [row for row in query.pinned if row in keep]
    return first + [row for row in keep if row not in first]


def test_lifted_products_rise_in_the_album_on_every_page_and_under_any_filter(exact_recommender):
    """A query's lifted products rank by album score plus lift, over the whole catalogue: a product the
    page's search did not reach comes in, pinned ones stay first, every page and every filter sees the one order."""
    index = exact_recommender.index
    assert index is not None
    vector = index.vectors[0]
    scores = index.vectors @ vector
    plain = list(np.argsort(-scores, kind="stable"))
    last, middle = int(plain[-1]), int(plain[len(plain) // 2])
    query = Query(vector, pinned=(int(plain[3]),), lifted=((last, 3.0), (middle, float(scores[plain[1]] - scores[middle]) + 0.01), (int(plain[3]), 5.0)))
    expected = album_order_by_hand(exact_recommender, query)
    assert expected[:4] == [int(plain[3]), last, int(plain[0]), middle]  # the pinned one, then the lifted from the bottom and the middle
    first, second = (exact_recommender.answer([query], k=5, offset=offset)[0] for offset in (0, 5))
    assert [match.row for match in first + second] == expected[:10]
    assert first[1].score == pytest.approx(scores[last])  # a lifted product shows its own album score
    assert [match.row for match in exact_recommender.answer([query], k=len(index))[0]] == expected
    kind = index.products[middle]["masterCategory"]
    allowed = np.array([product["masterCategory"] == kind for product in index.products])
    filtered = exact_recommender.answer([query], k=5, where={"masterCategory": kind})[0]
    assert [match.row for match in filtered] == album_order_by_hand(exact_recommender, query, allowed)[:5]
    assert [match.row for match in filtered] == [row for row in expected if allowed[row]][:5]


def test_a_photo_brings_what_the_label_head_believes_and_candidates_agree_by_their_own_labels(head_exact_index):
    """With the instance head's shortlist, a photo's shortlist query carries the label head's class
    probabilities for it; a product agrees when the probability of each of its own AGREEING_LABELS the head
    learned (this small head: the article type only) reaches LABELS_AGREE, and a product lacking one never agrees."""
    recommender = Recommender(head_exact_index).load()
    index = recommender.index
    assert index is not None and index.head is not None and recommender.extractor is not None
    photo = recommender.prepare(index.image_path(0).read_bytes())
    _, (asked,) = recommender.embed_photos([photo])
    assert asked is not None and asked.labels is not None
    features = recommender.extractor.extract(photo.pixels[None])
    _, expected = index.head.query_vectors_and_labels(features, colour_histograms(photo.pixels[None], index.head.settings.colour_method))
    assert set(asked.labels) == set(index.head.class_names)
    for label, likely in asked.labels.items():
        assert likely.shape == (len(index.head.class_names[label]),)
        np.testing.assert_allclose(likely, expected[label][0], atol=1e-5)
        assert abs(float(likely.sum()) - 1.0) < 1e-4
    rows = np.arange(len(index))
    agree = recommender.agreeing(asked, rows)
    assert agree is not None and agree.dtype == bool and len(agree) == len(rows)
    known = [label for label in AGREEING_LABELS if label in index.head.class_names]
    assert known == ["articleType"]
    by_hand = np.ones(len(rows), dtype=bool)
    for label in known:
        names = index.head.class_names[label]
        for row in rows:
            value = index.products[row].get(label, "")
            by_hand[row] &= value in names and asked.labels[label][names.index(value)] >= LABELS_AGREE
    np.testing.assert_array_equal(agree, by_hand)
    sure = {label: np.zeros_like(likely) for label, likely in asked.labels.items()}  # certain of product 0's own labels
    for label in known:
        sure[label][index.head.class_names[label].index(index.products[0][label])] = 1.0
    agree = recommender.agreeing(ShortlistQuery(asked.vectors, sure), rows)
    assert agree is not None and agree[0]
    same = [all(product[label] == index.products[0][label] for label in known) for product in index.products]
    np.testing.assert_array_equal(agree, same)
    assert not all(same)
    unknown = ShortlistQuery(asked.vectors, {label: np.zeros_like(likely) for label, likely in asked.labels.items()})
    nothing = recommender.agreeing(unknown, rows)
    assert nothing is not None and not nothing.any()
    assert recommender.agreeing(ShortlistQuery(asked.vectors), rows) is None


def test_a_photos_query_lifts_the_shortlisted_products_the_label_head_believes(head_exact_index, fashion_catalogue, store_items):
    """verify() lifts (Query.lifted) each shortlisted product, other than the one put first, whose score in the
    instance head's space is above LIFT_FROM and whose labels the head gives LIFT_LABELS, by LIFT x (score -
    LIFT_FROM)."""
    recommender = Recommender(head_exact_index).load()
    index = recommender.index
    assert index is not None and index.shortlist_vectors is not None
    lifted_any = False
    for product_id in TEXTURED:
        photo = recommender.prepare(shopper_bytes(fashion_catalogue, item_with(store_items, product_id)))
        (vector,), (asked,) = recommender.embed_photos([photo])
        assert asked is not None
        query = recommender.verify(photo, vector, asked)
        scores = index.shortlist_vectors @ asked.vectors[0]
        shortlisted = np.argsort(-scores, kind="stable")[:SHORTLIST]
        agree = recommender.agreeing(asked, shortlisted, LIFT_LABELS)
        assert agree is not None
        by_hand = {int(row): LIFT * (float(scores[row]) - LIFT_FROM) for row, ok in zip(shortlisted, agree) if ok and scores[row] > LIFT_FROM}
        assert dict(query.lifted) == pytest.approx(by_hand, abs=1e-5)
        lifted_any |= bool(by_hand)
        assert [match.row for match in recommender.answer([query], k=len(index))[0]] == album_order_by_hand(recommender, query)
    assert lifted_any


# --- end to end: an index with keypoints, the Recommender ---------------------------------------


@pytest.fixture(scope="module")
def exact_index(fashion_catalogue, store_items, mobilenet_real, tmp_path_factory) -> Path:
    """The 30 store products indexed with the real MobileNetV2 (TensorFlow), keypoints included. Read-only."""
    out = tmp_path_factory.mktemp("exact") / "index"
    report = build_index(subset(fashion_catalogue, store_items), out, mobilenet_real, refine="none", exact_items=True)
    assert report.exact_items and report.local_computed == STORE_SIZE and report.count == STORE_SIZE
    assert 0 < report.local_seconds < report.seconds
    return out


@pytest.fixture(scope="module")
def exact_recommender(exact_index) -> Recommender:
    return Recommender(exact_index).load()


def test_the_index_stores_the_keypoints_and_lists_them(exact_index, exact_recommender, store):
    verifier = exact_recommender.verifier
    assert verifier is not None and verifier.clear_lead is None  # no head: the album's vectors shortlist
    manifest = json.loads((exact_index / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["local_features"] == {**LocalFeatureStore.describe(), "keypoints": int(store.offsets[-1])}
    assert manifest["local_features"]["method"] == METHOD == "sift"
    assert all((exact_index / name).is_file() for name in FILES)
    index = load_index(exact_index)
    assert index.manifest.local_features == manifest["local_features"]
    assert index.local_features is not None and len(index.local_features) == len(index) == STORE_SIZE
    assert_same_store(index.local_features, store)  # the build's keypoints are compute_rows' own


def test_a_shopper_photo_of_a_catalogue_product_is_the_exact_match(exact_recommender, fashion_catalogue, store_items):
    assert exact_recommender.finds_exact_items
    for product in TEXTURED[:2]:
        matches = exact_recommender.recommend(shopper_bytes(fashion_catalogue, item_with(store_items, product)), k=5)
        assert [match.rank for match in matches] == [0, 1, 2, 3, 4]
        first = matches[0]
        assert first.id == product and first.exact
        assert first.caption() == f"{EXACT_MATCH_LINE}\n{dataclasses.replace(first, exact=False).caption()}"
        details = f"{first.labels['articleType']} · {first.labels['baseColour']} · {first.labels['gender']}"
        assert first.caption().split("\n") == [EXACT_MATCH_LINE, first.display_name, details]
        assert first.to_dict()["exact_match"] is True
        assert not any(match.exact for match in matches[1:])
        assert not any(match.caption().startswith(EXACT_MATCH_LINE) for match in matches[1:])
        assert len({match.id for match in matches}) == 5


def test_pages_keep_the_pinned_product_first_and_never_repeat(exact_recommender, fashion_catalogue, store_items):
    item = item_with(store_items, TEXTURED[2])
    queries = exact_recommender.queries([exact_recommender.prepare(shopper_bytes(fashion_catalogue, item))])
    assert queries[0].exact and exact_recommender.index.ids()[queries[0].pinned[0]] == item.id
    first = exact_recommender.answer(queries, k=5, offset=0)[0]
    second = exact_recommender.answer(queries, k=5, offset=5)[0]
    assert first[0].id == item.id and first[0].exact
    assert [match.rank for match in second] == [5, 6, 7, 8, 9]
    assert not {match.id for match in first} & {match.id for match in second}
    assert not any(match.exact for match in second)
    whole = exact_recommender.answer(queries, k=10)[0]
    assert [match.id for match in whole] == [match.id for match in first + second]
    # every page of all 30 products, 7 at a time: each product once
    pages = [exact_recommender.answer(queries, k=7, offset=offset)[0] for offset in range(0, STORE_SIZE, 7)]
    assert sorted(match.id for page in pages for match in page) == sorted(item.id for item in store_items)


def test_prepare_finds_keypoints_and_matches_skips_verification(exact_recommender, fashion_catalogue, store_items):
    """With keypoints in the index a photo brings its keypoints and no crops (``exact_crops`` off, the default):
    the shortlist searches the photo alone. matches() alone ranks by the vector, never exact."""
    photo = exact_recommender.prepare(shopper_bytes(fashion_catalogue, item_with(store_items, TEXTURED[0])))
    assert photo.crops is not None and photo.crops.shape == (0, 224, 224, 3) and photo.local is not None
    assert not exact_recommender.exact_crops and exact_recommender.crops_per_photo == 0
    vectors, asked = exact_recommender.embed_photos([photo])
    # no head: the shortlist searches the search vectors themselves, with the photo's own vector
    assert exact_recommender.index.shortlist_vectors is None
    assert asked[0] is not None and asked[0].vectors.shape == (1, vectors.shape[1])
    np.testing.assert_allclose(asked[0].vectors[0], vectors[0], atol=1e-6)
    plain = exact_recommender.matches(vectors, k=5)[0]
    assert not any(match.exact for match in plain)


def test_with_exact_crops_a_photo_brings_its_2_crops_to_the_shortlist(exact_index, fashion_catalogue, store_items):
    """``exact_crops``: the photo and its 2 crops are embedded in one forward pass and all three search the shortlist."""
    recommender = Recommender(exact_index, exact_crops=True).load()
    assert recommender.crops_per_photo == 2
    item = item_with(store_items, TEXTURED[0])
    photo = recommender.prepare(shopper_bytes(fashion_catalogue, item))
    assert photo.crops is not None and photo.crops.shape == (2, 224, 224, 3)
    assert len({crop.tobytes() for crop in photo.crops} | {photo.pixels.tobytes()}) == 3
    vectors, asked = recommender.embed_photos([photo])
    assert asked[0] is not None and asked[0].vectors.shape == (3, vectors.shape[1])
    np.testing.assert_allclose(asked[0].vectors[0], vectors[0], atol=1e-6)
    np.testing.assert_allclose(asked[0].vectors[1:], recommender.embed(photo.crops), atol=1e-5)
    first = recommender.recommend(shopper_bytes(fashion_catalogue, item), k=5)[0]
    assert first.id == item.id and first.exact


def test_keypoints_found_on_an_executor_verify_as_those_found_in_place(exact_recommender, fashion_catalogue, store_items):
    """The bot finds a photo's keypoints beside the forward pass: prepare() then holds their future and
    verify() waits for it, answering as with keypoints found in place. A shut-down executor (a server
    stopping) falls back to finding them in place; keypoints that ran out of memory are a friendly error."""
    data = shopper_bytes(fashion_catalogue, item_with(store_items, TEXTURED[0]))
    in_place = exact_recommender.prepare(data)
    with ThreadPoolExecutor(max_workers=1) as pool:
        later = exact_recommender.prepare(data, keypoints_on=pool)
        assert isinstance(later.local, Future)
        vectors, asked = exact_recommender.embed_photos([in_place, later])
        first, second = (exact_recommender.verify(*arguments) for arguments in zip((in_place, later), vectors, asked))
    assert isinstance(in_place.local, LocalFeatures) and later.keypoints() == later.local.result()
    np.testing.assert_array_equal(later.local.result().points, in_place.local.points)
    assert exact_recommender.index is not None and second.pinned == first.pinned == (exact_recommender.index.ids().index(TEXTURED[0]),)
    assert first.exact and second.exact
    stopped = ThreadPoolExecutor(max_workers=1)
    stopped.shutdown()
    assert isinstance(exact_recommender.prepare(data, keypoints_on=stopped).local, LocalFeatures)
    failed: Future[LocalFeatures] = Future()
    failed.set_exception(MemoryError())
    with pytest.raises(ImageDecodeError, match="not enough memory"):
        dataclasses.replace(in_place, local=failed).keypoints()


async def test_the_bot_service_finds_keypoints_beside_the_model_and_a_failure_is_a_friendly_answer(
    exact_recommender, fashion_catalogue, store_items, monkeypatch, caplog
):
    """The bot's inference service: the photo's keypoints are found on its decoding pool (a future the
    verification waits for) and the answer is the exact match; keypoints that run out of memory reach
    the shopper as the friendly decode error, logged without a traceback."""
    import recommender.recommender as recommender_module
    from bot.inference import InferenceService

    item = item_with(store_items, TEXTURED[0])
    service = InferenceService(exact_recommender)
    service.start()
    try:
        answer = await service.embed_and_page(shopper_bytes(fashion_catalogue, item), 5)
        assert answer.page[0].id == item.id and answer.page[0].exact and answer.query.exact

        def out_of_memory(image: Image.Image) -> LocalFeatures:
            raise MemoryError

        monkeypatch.setattr(recommender_module, "query_features", out_of_memory)
        with pytest.raises(ImageDecodeError, match="not enough memory"):
            await service.embed_and_page(shopper_bytes(fashion_catalogue, item), 5)
    finally:
        service.stop()
    assert not [record for record in caplog.records if record.exc_info]


def test_update_reuses_the_keypoints_and_exact_items_off_drops_them(
    exact_index, fashion_catalogue, store_items, store, mobilenet_real, tmp_path
):
    out = tmp_path / "index"
    shutil.copytree(exact_index, out)
    added = spread(fashion_catalogue, 1, 2)
    grown = subset(fashion_catalogue, store_items + added)
    report = build_index(grown, out, mobilenet_real, update=True, refine="none")  # exact_items=None: what the index has
    assert report.exact_items and report.local_computed == 2 and report.reused == STORE_SIZE and report.extracted == 2
    index = load_index(out)
    assert index.local_features is not None and len(index.local_features) == STORE_SIZE + 2
    rows = {item_id: row for row, item_id in enumerate(index.ids())}
    for position, item in enumerate(store_items):  # old rows: the earlier index's keypoints, unchanged
        assert_same_rows(index.local_features, rows[item.id], store, position)
    fresh = LocalFeatureStore.from_rows(compute_rows([fashion_catalogue.images_dir / item.image for item in added]))
    for position, item in enumerate(added):  # new rows: made now, as a fresh build makes them
        assert_same_rows(index.local_features, rows[item.id], fresh, position)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["local_features"]["keypoints"] == int(index.local_features.offsets[-1])

    report = build_index(grown, out, mobilenet_real, update=True, refine="none", exact_items=False)
    assert not report.exact_items and report.local_computed == 0 and report.extracted == 0
    assert not any((out / name).exists() for name in FILES)
    assert "local_features" not in json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert load_index(out).local_features is None
    plain = Recommender(out).load()
    assert not plain.finds_exact_items
    item = item_with(store_items, TEXTURED[0])
    photo = plain.prepare(shopper_bytes(fashion_catalogue, item))
    assert photo.crops is None and photo.local is None
    assert not any(match.exact for match in plain.recommend(shopper_bytes(fashion_catalogue, item)))

    report = build_index(grown, out, mobilenet_real, update=True, refine="none")  # still off: the index has none
    assert not report.exact_items and not (out / OFFSETS).exists()
    report = build_index(grown, out, mobilenet_real, update=True, refine="none", exact_items=True)  # on again: all made
    assert report.exact_items and report.local_computed == STORE_SIZE + 2


def test_an_index_built_without_exact_items_has_no_keypoints(fashion_catalogue, store_items, mobilenet_real, tmp_path):
    out = tmp_path / "index"
    report = build_index(subset(fashion_catalogue, store_items[:6]), out, mobilenet_real, refine="none", exact_items=False)
    assert not report.exact_items and report.local_computed == 0
    assert not any((out / name).exists() for name in FILES)
    assert "local_features" not in json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    index = load_index(out)
    assert index.local_features is None and len(index) == 6
    corrupt = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    corrupt["local_features"] = {**LocalFeatureStore.describe(), "keypoints": 0}
    (out / "manifest.json").write_text(json.dumps(corrupt), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="lacks the local features"):  # a manifest that lists keypoints the index lacks
        load_index(out)


def test_a_filter_keeps_the_verified_product_only_when_it_passes(exact_recommender, fashion_catalogue, store_items):
    """The whole catalogue is verified; a filter then keeps the verified product first, or leaves it out,
    so a filtered answer is always the unfiltered one's passing products, in order."""
    item = item_with(store_items, TEXTURED[0])
    shot = shopper_bytes(fashion_catalogue, item)
    everything = exact_recommender.recommend(shot, k=len(exact_recommender))
    assert everything[0].id == item.id and everything[0].exact
    own = {"masterCategory": item.labels["masterCategory"]}
    other = {"masterCategory": next(i.labels["masterCategory"] for i in store_items if i.labels["masterCategory"] != own["masterCategory"])}
    for where in (own, other):
        kept = exact_recommender.recommend(shot, k=3, where=where)
        passing = [m.id for m in everything if m.labels["masterCategory"] == where["masterCategory"]]
        assert [m.id for m in kept] == passing[:3]
        assert kept[0].exact == (where is own)


def test_the_shortlist_comes_from_the_projection_when_it_is_ready(fashion_index):
    """A large catalogue's shortlist is the projection's first pass (no exact pass per crop); a small one's
    is the exact search. Real MobileNetV2 vectors of 600 products, the projection forced on."""
    from recommender.search import ExactSearcher

    vectors = np.asarray(load_index(fashion_index.path).vectors)
    queries = vectors[:40:5]
    searcher = ExactSearcher(project_above=0).fit(vectors)
    exact_rows, _ = searcher.search(queries, 20)
    rows, _ = searcher.candidates(queries, 20)
    np.testing.assert_array_equal(rows, exact_rows)  # no projection yet: the exact search
    assert searcher.prepare_projection()
    rows, scores = searcher.candidates(queries, 20)
    assert rows.shape == scores.shape == (8, 20) and all(len(set(r)) == 20 for r in rows.tolist())
    assert all(np.all(np.diff(s) <= 0) for s in scores)
    assert [r[0] for r in rows.tolist()] == list(range(0, 40, 5))  # each product finds itself first
    overlap = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(rows.tolist(), exact_rows.tolist())])
    assert overlap >= 0.7, overlap  # approximate, but mostly the same products
    allowed = np.zeros(len(vectors), dtype=bool)
    allowed[::3] = True
    rows, _ = searcher.candidates(queries, 20, allowed=allowed)
    assert np.all(rows % 3 == 0)


#: a head small enough to train in seconds on the store's 30 products (one shopper view each, two for the instance head)
SMALL_HEAD = HeadSettings(labels=("articleType",), hidden=128, dim=32, epochs=30, batch_size=16, views=1, instance_views=2, seed=1)


@pytest.fixture(scope="module")
def head_exact_index(fashion_catalogue, store_items, mobilenet_real, tmp_path_factory) -> Path:
    """The store indexed with a learned head and keypoints (the default of a new labelled index). Read-only."""
    out = tmp_path_factory.mktemp("head-exact") / "index"
    report = build_index(subset(fashion_catalogue, store_items), out, mobilenet_real, head="labels", head_settings=SMALL_HEAD, exact_items=True)
    assert report.exact_items and report.head == "labels"
    return out


def test_the_evaluator_reports_what_a_shopper_whose_product_is_not_carried_sees(head_exact_index, fashion_catalogue, store_items):
    """verified_exact_items asks each photo again with its product taken out of the index: the album there
    is what a shop that does not carry it shows. Its agreement with the product's labels, through the stage
    (whatever it puts first, then the global order) and through the global search alone, is the mean
    over photos of each album's share, as computed here by hand."""
    recommender = Recommender(head_exact_index).load()
    index = recommender.index
    assert index is not None
    rows = [index.ids().index(product_id) for product_id in TEXTURED]
    shots = [shopper_bytes(fashion_catalogue, item_with(store_items, product_id)) for product_id in TEXTURED]
    _, with_stage = verified_exact_items(recommender, shots, rows, k=3)
    assert with_stage.taken_out is not None and set(with_stage.taken_out) == set(LABELS)  # the store's products have all four
    shares: dict[str, dict[str, list[float]]] = {stage: {label: [] for label in LABELS} for stage in ("with_stage", "without_stage")}
    for shot, row in zip(shots, rows):
        photo = recommender.prepare(shot)
        (vector,), (asked,) = recommender.embed_photos([photo])
        allowed = np.ones(len(index), dtype=bool)
        allowed[row] = False
        taken_out = recommender.verify(photo, vector, asked, allowed=allowed)
        assert row not in taken_out.pinned
        ranked = [match.row for match in recommender.matches(vector[None], k=len(index))[0] if match.row != row]
        assert row not in dict(taken_out.lifted)  # the stage's album: the pinned product, then the lifted ones risen
        albums = {"with_stage": [r for r in album_order_by_hand(recommender, taken_out) if r != row][:3], "without_stage": ranked[:3]}
        for stage, album in albums.items():
            for label in LABELS:
                shares[stage][label].append(float(np.mean([index.products[r][label] == index.products[row][label] for r in album])))
    for stage, by_label in shares.items():
        for label, values in by_label.items():
            assert with_stage.taken_out[label][stage] == pytest.approx(np.mean(values))
    assert with_stage.to_json()["taken_out_agreement"] == {
        label: {stage: round(value, 4) for stage, value in figures.items()} for label, figures in with_stage.taken_out.items()
    }


def instance_files(directory: Path) -> list[Path]:
    params_json, weight_files, _ = head_files(INSTANCE_PREFIX)
    return [directory / name for name in (params_json, *weight_files, SHORTLIST_VECTORS)]


def shortlist_vectors_made_again(index: CatalogueIndex, catalogue: Catalogue, items: list[CatalogueItem], extractor: FeatureExtractor) -> np.ndarray:
    """What a build of ``items`` should store as the shortlist's vectors: the instance head's embedding of each
    product's photo plus the mean of its shopper-like views', the views made again as the build made them."""
    instance = index.shortlist_head
    assert instance is not None
    in_rows = [item_with(items, product["id"]) for product in index.products]
    views, colours = shopper_views(subset(catalogue, items), in_rows, extractor, instance.settings, colours=instance.takes_colours)
    inputs = [instance.inputs(view, None if colours is None else colours[i]) for i, view in enumerate(views)]
    return product_vectors(instance, instance.inputs(index.features, index.colours), view_means(instance, inputs))


def test_a_head_index_shortlists_with_its_instance_head(head_exact_index, fashion_catalogue, store_items, mobilenet_real):
    """The head gathers products of one type; the shortlist searches the instance head's embedding, trained
    on the same views and more of its own to tell the products themselves apart."""
    index = load_index(head_exact_index)
    assert index.head is not None and index.shortlist_head is not None and index.shortlist_vectors is not None
    assert all(path.is_file() for path in instance_files(head_exact_index))
    instance = index.shortlist_head
    assert instance.settings == instance_settings(SMALL_HEAD) and not instance.prototypes and instance.settings.temperature == INSTANCE_TEMPERATURE
    assert index.head.settings.views == 1 and instance.settings.views == 2  # the head's view, and one more of its own
    # it takes each photo's colour histogram beside its features (the same cut in other colours is the usual look-alike)
    assert instance.takes_colours and instance.feature_dim == index.features.shape[1] + COLOUR_DIM
    assert not np.allclose(instance.w1[: index.head.feature_dim], index.head.w1)  # trained apart from the head
    # every product trained it, so each product's vector takes in its views (database-side augmentation)
    np.testing.assert_allclose(index.shortlist_vectors, shortlist_vectors_made_again(index, fashion_catalogue, store_items, mobilenet_real), atol=1e-4)
    assert not np.allclose(index.shortlist_vectors, instance.embed(instance.inputs(index.features, index.colours)), atol=1e-2)
    manifest = json.loads((head_exact_index / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["local_features"]["shortlist"] == {
        "method": INSTANCE_METHOD, "vector_dim": SMALL_HEAD.dim, "settings": instance.settings.to_json(), "views_in_product_vectors": 2,
    }  # fmt: skip
    recommender = Recommender(head_exact_index, exact_crops=True).load()
    assert index.instance_shortlist and recommender.verifier is not None and recommender.verifier.clear_lead == CLEAR_LEAD
    item = item_with(store_items, TEXTURED[1])
    photo = recommender.prepare(shopper_bytes(fashion_catalogue, item))
    vectors, asked = recommender.embed_photos([photo])
    assert asked[0] is not None and asked[0].vectors.shape == (3, SMALL_HEAD.dim)
    assert recommender.extractor is not None and photo.crops is not None
    pixels = np.concatenate([photo.pixels[None], photo.crops])
    features = recommender.extractor.extract(pixels)
    inputs = instance.inputs(features, colour_histograms(pixels, instance.settings.colour_method))
    np.testing.assert_allclose(asked[0].vectors, instance.embed(inputs), atol=1e-5)  # the photo, then its crops
    album_colours = colour_histograms(pixels[:1], index.head.settings.colour_method)
    np.testing.assert_allclose(vectors[0], index.head.query_vectors(features[:1], album_colours)[0], atol=1e-5)  # the album's own vector
    first = recommender.recommend(shopper_bytes(fashion_catalogue, item), k=5)[0]
    assert first.id == item.id and first.exact
    alone = Recommender(head_exact_index).load()  # the default: the photo alone, in the instance head's space
    photo = alone.prepare(shopper_bytes(fashion_catalogue, item))
    vectors, asked = alone.embed_photos([photo])
    assert asked[0] is not None and asked[0].vectors.shape == (1, SMALL_HEAD.dim)
    np.testing.assert_allclose(asked[0].vectors, instance.embed(inputs[:1]), atol=1e-5)
    first = alone.recommend(shopper_bytes(fashion_catalogue, item), k=5)[0]
    assert first.id == item.id and first.exact


def test_a_large_catalogues_shortlist_is_searched_through_a_projection_all_the_same(
    fashion_index, head_exact_index, fashion_catalogue, store_items, monkeypatch
):
    """From SHORTLIST_PROJECT_ABOVE products on, the shortlist's embedding is searched through a projection
    on a quarter of its directions: the exact top 50 all the same (600 real MobileNetV2 vectors, the
    threshold lowered), and a loaded index's shortlist takes that path and verifies the same product."""
    import recommender.exact_match as exact_match

    vectors = np.asarray(load_index(fashion_index.path).vectors)
    queries = vectors[1:200:25] + 0.5 * vectors[2:201:25]  # between two products: no query is a product itself
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    full = shortlist_searcher(vectors)
    assert not full.projected  # 600 products: searched in full
    monkeypatch.setattr(exact_match, "SHORTLIST_PROJECT_ABOVE", 0)
    projected = shortlist_searcher(vectors)
    assert projected.projected
    rows, scores = projected.search(queries, SHORTLIST)
    exact_rows, exact_scores = full.search(queries, SHORTLIST)
    np.testing.assert_array_equal(rows, exact_rows)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)
    pruned = projected._projected
    assert pruned is not None and min(pruned.last_exact_rows) < len(vectors)  # not only full passes: the bound pruned

    loaded = Recommender(head_exact_index).load()
    assert loaded._shortlist_searcher is not None and loaded._shortlist_searcher.projected
    item = item_with(store_items, TEXTURED[1])
    first = loaded.recommend(shopper_bytes(fashion_catalogue, item), k=5)[0]
    assert first.id == item.id and first.exact


def test_an_index_built_before_the_instance_head_shortlists_with_the_head_and_a_damaged_one_is_refused(head_exact_index, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(head_exact_index, old)
    for path in instance_files(old):
        path.unlink()
    index = load_index(old)
    assert index.head is not None and index.shortlist_head is index.head and index.shortlist_vectors is not None
    before_the_pull = index.head.embed(index.head.inputs(index.features, index.colours))
    np.testing.assert_allclose(index.shortlist_vectors, before_the_pull, atol=1e-6)
    loaded = Recommender(old).load()
    assert loaded.finds_exact_items
    verifier = loaded.verifier
    assert not index.instance_shortlist and verifier is not None and verifier.clear_lead is None  # measured for the instance head only
    damaged = tmp_path / "damaged"
    shutil.copytree(head_exact_index, damaged)
    np.save(damaged / SHORTLIST_VECTORS, np.zeros((STORE_SIZE, SMALL_HEAD.dim + 1), dtype=np.float32))
    with pytest.raises(IndexCorruptError, match="damaged"):
        load_index(damaged)
    (damaged / SHORTLIST_VECTORS).unlink()
    with pytest.raises(IndexCorruptError, match="damaged"):
        load_index(damaged)
    mixed = tmp_path / "mixed"  # weights that take colours, settings that say they do not
    shutil.copytree(head_exact_index, mixed)
    params_json = mixed / head_files(INSTANCE_PREFIX)[0]
    params = json.loads(params_json.read_text(encoding="utf-8"))
    params["settings"]["colour"] = 0.0
    params_json.write_text(json.dumps(params), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="damaged"):
        load_index(mixed)


def test_an_instance_head_without_colours_shortlists_on_the_features_alone(fashion_catalogue, store_items, mobilenet_real, tmp_path):
    """An instance head built before it took colours (or with ``instance_colour`` 0) embeds the photo's
    features alone, and still finds the product."""
    out = tmp_path / "index"
    settings = dataclasses.replace(SMALL_HEAD, instance_colour=0.0)
    build_index(subset(fashion_catalogue, store_items), out, mobilenet_real, head="labels", head_settings=settings, exact_items=True)
    index = load_index(out)
    instance = index.shortlist_head
    assert instance is not None and index.head is not None and not instance.takes_colours and instance.feature_dim == index.features.shape[1]
    recommender = Recommender(out).load()
    item = item_with(store_items, TEXTURED[1])
    photo = recommender.prepare(shopper_bytes(fashion_catalogue, item))
    _, (asked,) = recommender.embed_photos([photo])
    assert asked is not None and recommender.extractor is not None
    np.testing.assert_allclose(asked.vectors, instance.embed(recommender.extractor.extract(photo.pixels[None])), atol=1e-5)
    first = recommender.recommend(shopper_bytes(fashion_catalogue, item), k=5)[0]
    assert first.id == item.id and first.exact


def test_a_head_index_without_keypoints_keeps_no_shortlist(head_exact_index, fashion_catalogue, store_items, mobilenet_real, tmp_path):
    out = tmp_path / "index"
    shutil.copytree(head_exact_index, out)
    report = build_index(subset(fashion_catalogue, store_items), out, mobilenet_real, update=True, exact_items=False)
    assert report.head == "labels" and not report.exact_items
    index = load_index(out)
    assert index.head is not None and index.local_features is None and index.shortlist_vectors is None and index.shortlist_head is None
    assert not any(path.exists() for path in instance_files(out))  # written only beside keypoints
    report = build_index(subset(fashion_catalogue, store_items), out, mobilenet_real, update=True, exact_items=True)
    assert report.exact_items and all(path.is_file() for path in instance_files(out))  # keypoints again: the instance head too
    assert load_index(out).shortlist_head is not None and report.local_computed == STORE_SIZE


def test_an_update_of_a_head_index_reuses_its_keypoints_and_trains_the_instance_head_again(
    head_exact_index, fashion_catalogue, store_items, mobilenet_real, tmp_path
):
    out = tmp_path / "index"
    shutil.copytree(head_exact_index, out)
    report = build_index(subset(fashion_catalogue, store_items), out, mobilenet_real, update=True)  # what the index has
    assert report.head == "labels" and report.exact_items and report.local_computed == 0 and report.reused == STORE_SIZE
    before, after = load_index(head_exact_index), load_index(out)
    assert after.shortlist_head is not None and before.shortlist_head is not None and after.shortlist_vectors is not None
    assert after.shortlist_head.settings == before.shortlist_head.settings
    np.testing.assert_allclose(after.shortlist_vectors, shortlist_vectors_made_again(after, fashion_catalogue, store_items, mobilenet_real), atol=1e-4)
