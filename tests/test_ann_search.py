"""``--backend ann`` (recommender/ann_search.py): faiss' inverted file answers as the exact search does, filters
included; builds, updates and resumed builds write a consistent index; damaged files are refused by name.

Real parts throughout: real faiss, real index files, and for recall the real MobileNetV2 on the 4k catalogue.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import faiss
import numpy as np
import pytest

from recommender import BuildError, Recommender, build_index, load_index
from recommender.ann_search import ANN_FILE, ANN_ROWS, AnnSearcher, AnnSettings
from recommender.ann_search import build as build_ann
from recommender.backends import BackendChoice, open_searcher
from recommender.errors import IndexCorruptError, NotLoadedError
from recommender.filters import allowed_rows, canonical
from recommender.output_folder import partial_dir_for
from recommender.search import ExactSearcher
from tests.build_helpers import build_args, leftovers, make_shop, snapshot, subset
from tests.recommender_helpers import assert_same_neighbours, run_script

ANN = BackendChoice("ann")

# --- helpers --------------------------------------------------------------------------------------


def recall(found: np.ndarray, expected: np.ndarray) -> float:
    """Share of the exact search's rows that the ann search also returned (recall@k over all queries)."""
    hits = sum(len(set(ours) & set(theirs)) for ours, theirs in zip(found.tolist(), expected.tolist()))
    return hits / expected.size


def assert_true_similarities(vectors, queries, result):
    """Every similarity reported is the cosine of its row (exact re-scoring), best first; no row twice."""
    rows, sims = result
    true = np.einsum("qd,qkd->qk", queries.astype(np.float64), np.asarray(vectors)[rows].astype(np.float64))
    np.testing.assert_allclose(sims, true, atol=1e-5, rtol=0)
    assert np.all(np.diff(sims, axis=1) <= 1e-6)
    assert all(len(set(row)) == len(row) for row in rows.tolist())


def assert_shared_rows_score_alike(result, reference):
    """Rows both searches return carry the same similarity (float tolerance)."""
    for rows, sims, ref_rows, ref_sims in zip(*result, *reference):
        ours, theirs = dict(zip(rows.tolist(), sims.tolist())), dict(zip(ref_rows.tolist(), ref_sims.tolist()))
        for row in ours.keys() & theirs.keys():
            assert ours[row] == pytest.approx(theirs[row], abs=1e-5)


def built_afresh(note: str) -> bool:
    """The build's search note says a new ann index was built (no earlier one kept or trained again)."""
    return "built" in note and "kept" not in note and "again" not in note


def faiss_ids(ann) -> np.ndarray:
    """The ids the faiss index really holds, read from its inverted lists."""
    invlists = faiss.extract_index_ivf(ann.index).invlists
    assert invlists is not None
    ids = [faiss.rev_swig_ptr(invlists.get_ids(number), invlists.list_size(number)).copy() for number in range(invlists.nlist)]
    return np.sort(np.concatenate(ids))


def assert_consistent_ann(index):
    """ann_rows.npy maps every product row onto exactly one faiss id the index holds, and back."""
    ann = index.ann
    assert ann is not None and ann.count == len(index)
    live = np.flatnonzero(ann.rows >= 0)
    np.testing.assert_array_equal(np.sort(ann.rows[live]), np.arange(len(index)))
    np.testing.assert_array_equal(faiss_ids(ann), live)


def assert_answers_as_exact(index):
    """Leave-one-out top 5 of every product: the ann searcher of the index equals the exact search."""
    searcher = open_searcher(index)
    assert isinstance(searcher, AnnSearcher)
    rows = np.arange(len(index))
    queries = np.asarray(index.vectors)
    expected = ExactSearcher().fit(queries).search(queries, 5, exclude=rows)
    assert_same_neighbours(queries, queries, searcher.search(queries, 5, exclude=rows), expected)
    found, _ = searcher.search(queries, 1)
    np.testing.assert_array_equal(found[:, 0], rows)  # each product's own vector finds that product


# --- the real 4k catalogue, real MobileNetV2 vectors ---------------------------------------------


@pytest.fixture(scope="module")
def fashion_ann(fashion_index_4k, fashion_catalogue, mobilenet_real, tmp_path_factory):
    """All 4,000 real products, plain MobileNetV2 vectors, switched to ``--backend ann`` by an update
    of the shared exact index (every vector reused)."""
    path = tmp_path_factory.mktemp("fashion-ann") / "index"
    shutil.copytree(fashion_index_4k, path)
    report = build_index(fashion_catalogue, path, mobilenet_real, update=True, search=ANN, refine="none", head="none")
    assert report.backend == "ann" and built_afresh(report.search_note) and report.count == report.reused == 4000
    return load_index(path, mmap=True)  # as the Recommender loads it


@pytest.fixture(scope="module")
def fashion_queries(fashion_ann):
    """300 products asked leave-one-out (their own vector, their own row excluded)."""
    picks = np.sort(np.random.default_rng(5).choice(len(fashion_ann), 300, replace=False))
    return np.asarray(fashion_ann.vectors[picks]), picks


def test_real_vectors_find_the_exact_top5(fashion_ann, fashion_queries):
    """The default settings for 4,000 products (64 clusters, 32 probed) find the exact neighbours:
    recall@5 measured 0.995 on these 300 queries when set; the bar sits below it."""
    queries, picks = fashion_queries
    searcher = open_searcher(fashion_ann)
    assert isinstance(searcher, AnnSearcher)
    assert fashion_ann.ann is not None and fashion_ann.ann.settings == AnnSettings.for_count(4000) == AnnSettings(64, 32)
    exact = ExactSearcher().fit(np.asarray(fashion_ann.vectors))
    expected = exact.search(queries, 5, exclude=picks)
    found = searcher.search(queries, 5, exclude=picks)
    assert found[0].shape == found[1].shape == (300, 5) and found[0].dtype == np.int64 and found[1].dtype == np.float32
    assert not (found[0] == picks[:, None]).any()
    assert recall(found[0], expected[0]) >= 0.95
    assert_true_similarities(fashion_ann.vectors, queries, found)
    assert_shared_rows_score_alike(found, expected)
    # The queries are not trivial: probing a single cluster misses many neighbours (recall 0.74 when measured).
    one = fashion_ann.ann.settings
    narrow = AnnSearcher(dataclasses.replace(fashion_ann.ann, settings=dataclasses.replace(one, nprobe=1))).fit(fashion_ann.vectors)
    assert recall(narrow.search(queries, 5, exclude=picks)[0], expected[0]) < 0.9


FILTERS = {"broad": {"gender": "Women"}, "category": {"masterCategory": "Footwear"}, "narrow": {"articleType": "Watches"}}


@pytest.mark.parametrize("path", ["exact-subset", "faiss"])
@pytest.mark.parametrize("kind", list(FILTERS))
def test_filtered_search_agrees_with_the_exact_filtered_search(fashion_ann, fashion_queries, kind, path):
    """Filters over real vectors: only passing products, the same neighbours as the exact search, on the
    exact path for filters under ``exact_below`` and through faiss' probed clusters above it."""
    queries, picks = fashion_queries
    allowed = allowed_rows(fashion_ann.products, canonical(FILTERS[kind]), fashion_ann.columns)
    assert 200 < allowed.sum() < 2000
    searcher = open_searcher(fashion_ann)
    assert isinstance(searcher, AnnSearcher)
    if path == "faiss":
        searcher.exact_below = 0
    expected = ExactSearcher().fit(np.asarray(fashion_ann.vectors)).search(queries, 5, exclude=picks, allowed=allowed)
    found = searcher.search(queries, 5, exclude=picks, allowed=allowed)
    assert found[0].shape == (300, 5)
    assert allowed[found[0]].all()
    assert recall(found[0], expected[0]) >= 0.95  # measured 1.0 on the exact path; 0.999, 0.983, 1.0 through faiss
    assert_true_similarities(fashion_ann.vectors, queries, found)
    assert_shared_rows_score_alike(found, expected)
    if path == "exact-subset":
        assert searcher._filter_cache is None  # faiss was never asked
        assert_same_neighbours(np.asarray(fashion_ann.vectors), queries, found, expected)
    else:
        # faiss itself found enough passing products for (nearly) every query: the exact fallback stays the exception
        assert searcher._filter_cache is not None
        ids = searcher._filtered(queries, 32, allowed, int(allowed.sum()))
        passing = np.where(ids >= 0, searcher._filter_cache[1][np.maximum(ids, 0)], False)
        assert np.array_equal(passing, ids >= 0)
        assert (passing.sum(axis=1) >= 6).mean() >= 0.99


@pytest.mark.parametrize("path", ["exact-subset", "faiss"])
def test_filters_passing_nothing_or_fewer_than_k(fashion_ann, fashion_queries, path):
    """The edges ExactSearcher has: nothing passes, (Q, 0); fewer pass than asked, all of them."""
    queries, _ = fashion_queries
    searcher = open_searcher(fashion_ann)
    assert isinstance(searcher, AnnSearcher)
    if path == "faiss":
        searcher.exact_below = 0
    rows, sims = searcher.search(queries, 5, allowed=np.zeros(len(fashion_ann), dtype=bool))
    assert rows.shape == sims.shape == (300, 0) and rows.dtype == np.int64 and sims.dtype == np.float32
    few = np.array([17, 1999, 3998])
    allowed = np.zeros(len(fashion_ann), dtype=bool)
    allowed[few] = True
    rows, sims = searcher.search(queries, 5, allowed=allowed)
    assert rows.shape == (300, 3)
    assert all(sorted(row) == few.tolist() for row in rows.tolist())
    assert_true_similarities(fashion_ann.vectors, queries, (rows, sims))
    # the three asking themselves, each left out of its own answer: the other two
    rows, _ = searcher.search(np.asarray(fashion_ann.vectors[few]), 5, exclude=few, allowed=allowed)
    assert [sorted(row) for row in rows.tolist()] == [[1999, 3998], [17, 3998], [17, 1999]]


# --- the settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 2, 38, 39, 77, 78, 500, 4000, 44_441, 1_000_000, 30_000_000])
def test_settings_chosen_for_the_catalogue_size(count):
    """A power of two of clusters, each with at least 39 products to train on (faiss' own minimum), probed 1 to nlist."""
    settings = AnnSettings.for_count(count)
    assert settings.nlist & (settings.nlist - 1) == 0
    assert settings.nlist == 1 or settings.nlist * 39 <= count
    assert 1 <= settings.nprobe <= settings.nlist
    if count >= 100_000:  # about 4 sqrt(count) where there are enough products to train them
        assert 4 * math.sqrt(count) / math.sqrt(2) <= settings.nlist <= 4 * math.sqrt(count) * math.sqrt(2)
        assert settings.nprobe == min(settings.nlist, max(32, settings.nlist // 128))


def test_settings_overrides_are_respected_within_bounds():
    assert AnnSettings.for_count(4000, nlist=100, nprobe=7) == AnnSettings(100, 7)  # not a power of two: as asked
    assert AnnSettings.for_count(4000, nlist=16, nprobe=50) == AnnSettings(16, 16)  # never more probes than clusters
    assert AnnSettings.for_count(10, nlist=64).nlist == 10  # never more clusters than products
    assert AnnSettings.for_count(4000, nprobe=3) == AnnSettings(64, 3)
    assert AnnSettings.for_count(4000, rerank=0).rerank == 0
    assert AnnSettings.from_json(AnnSettings(32, 4, 16).to_json()) == AnnSettings(32, 4, 16)


# --- building, on a small generated catalogue ----------------------------------------------------

#: rows of the demo catalogue (98 products) in the first build; every 5th is left out for an update to add
BASE = [row for row in range(98) if row % 5]
REMOVED = [1, 22, 43, 64, 76, 97]
ADDED = [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]
UPDATED = sorted(set(BASE) - set(REMOVED) | set(ADDED))


def demo_rows(catalogue, rows):
    return subset(catalogue, [catalogue.items[row] for row in rows])


@pytest.fixture(scope="module")
def demo_ann(demo_catalogue, mobilenet_random, tmp_path_factory):
    """78 demo products, plain MobileNetV2 (random weights) vectors, ``--backend ann``. Read-only: copy it."""
    path = tmp_path_factory.mktemp("demo-ann") / "index"
    report = build_index(demo_rows(demo_catalogue, BASE), path, mobilenet_random, search=ANN, refine="none", head="none", exact_items=False)
    assert report.backend == "ann" and built_afresh(report.search_note) and report.count == len(BASE)
    return path


@pytest.fixture
def ann_copy(demo_ann, tmp_path):
    out = tmp_path / "index"
    shutil.copytree(demo_ann, out)
    return out


def test_the_manifest_records_the_ann_backend_and_its_files(demo_ann):
    """What the bot, query.py and evaluate.py read to serve the index as built."""
    manifest = json.loads((demo_ann / "manifest.json").read_text(encoding="utf-8"))
    settings = AnnSettings.for_count(len(BASE))
    assert manifest["search"] == {
        "backend": "ann", "library": f"faiss {faiss.__version__}", "factory": f"IVF{settings.nlist},SQ8",
        "nlist": settings.nlist, "nprobe": settings.nprobe, "rerank": settings.rerank, "trained_on": len(BASE),
        "file": ANN_FILE, "rows_file": ANN_ROWS,
    }  # fmt: skip
    assert (demo_ann / ANN_FILE).is_file() and (demo_ann / ANN_ROWS).is_file()
    index = load_index(demo_ann)
    assert index.manifest.backend == "ann" and index.ann is not None and index.ann.settings == settings
    assert_consistent_ann(index)
    assert_answers_as_exact(index)


def test_the_recommender_serves_an_ann_index_with_no_new_argument(demo_ann, demo_catalogue):
    """The bot's path: Recommender(index).load() opens the ann searcher by itself; answers and filters as exact."""
    recommender = Recommender(demo_ann).load()
    assert isinstance(recommender.searcher, AnnSearcher)
    index = load_index(demo_ann)
    exact = ExactSearcher().fit(index.vectors)
    for row in (0, 40, len(BASE) - 1):
        item = demo_catalogue.items[BASE[row]]
        matches = recommender.recommend(demo_catalogue.images_dir / item.image, k=5)
        assert matches[0].id == item.id and matches[0].score == pytest.approx(1.0, abs=1e-4)
        found = (np.array([[m.row for m in matches]]), np.array([[m.score for m in matches]], dtype=np.float32))
        assert_same_neighbours(index.vectors, index.vectors[row][None], found, exact.search(index.vectors[row], 5), atol=1e-4)
        shoes = recommender.recommend(demo_catalogue.images_dir / item.image, k=5, where={"articleType": "Casual Shoes"})
        assert len(shoes) == 5 and all(m.labels["articleType"] == "Casual Shoes" for m in shoes)
    assert recommender.recommend(demo_catalogue.images_dir / item.image, where={"articleType": "Sarees"}) == []


def test_the_searcher_refuses_misuse(demo_ann):
    """Vectors of another length than its faiss index holds, a search before fit, k below 1."""
    index = load_index(demo_ann)
    assert index.ann is not None
    with pytest.raises(ValueError, match=f"{len(BASE) - 1} vectors for an ann index of {len(BASE)}"):
        AnnSearcher(index.ann).fit(index.vectors[1:])
    with pytest.raises(NotLoadedError, match="before fit"):
        AnnSearcher(index.ann).search(index.vectors[:1])
    with pytest.raises(ValueError, match="k must be at least 1"):
        AnnSearcher(index.ann).fit(index.vectors).search(index.vectors[:1], 0)


def test_bad_backend_choices_are_refused_before_any_work(tmp_path, demo_catalogue, mobilenet_random):
    """A library caller's typo fails at once, leaving nothing behind."""
    catalogue = demo_rows(demo_catalogue, BASE[:4])
    with pytest.raises(BuildError, match="Unknown search backend 'faiss'"):
        build_index(catalogue, tmp_path / "index", mobilenet_random, search=BackendChoice("faiss"))
    for choice in (BackendChoice("ann", nlist=0), BackendChoice("ann", nprobe=-1)):
        with pytest.raises(BuildError, match="must be at least 1"):
            build_index(catalogue, tmp_path / "index", mobilenet_random, search=choice)
    assert not (tmp_path / "index").exists() and not partial_dir_for(tmp_path / "index").exists()


# --- updating -------------------------------------------------------------------------------------


def update(catalogue, out, extractor, **options):
    """``--update`` of the plain-vector index at ``out`` (no search= unless given: what the index has)."""
    return build_index(catalogue, out, extractor, update=True, refine=options.pop("refine", "none"), **options)


def test_update_of_plain_vectors_adds_and_removes_in_place(ann_copy, demo_catalogue, mobilenet_random):
    """Kept products keep their vectors: the clusters and faiss ids stay, removed ids leave, new ones are added."""
    before = load_index(ann_copy)
    assert before.ann is not None
    faiss_id = {before.ids()[row]: int(np.flatnonzero(before.ann.rows == row)[0]) for row in range(len(before))}

    report = update(demo_rows(demo_catalogue, UPDATED), ann_copy, mobilenet_random)

    kept = len(BASE) - len(REMOVED)
    assert (report.extracted, report.reused, report.removed, report.count) == (len(ADDED), kept, len(REMOVED), len(UPDATED))
    assert report.backend == "ann"  # no search= on an update: the index's own backend
    for part in (f"{len(ADDED)} added", f"{len(REMOVED)} removed", f"{kept} unchanged", "kept"):
        assert part in report.search_note
    assert "again" not in report.search_note
    after = load_index(ann_copy)
    assert after.manifest.backend == "ann" and after.ann is not None and after.ann.settings == before.ann.settings
    assert after.ids() == [demo_catalogue.items[row].id for row in UPDATED]
    assert_consistent_ann(after)
    assert len(after.ann.rows) == len(BASE) + len(ADDED) and (after.ann.rows == -1).sum() == len(REMOVED)  # holes where removed
    for row, product in enumerate(after.ids()):
        if product in faiss_id:  # a kept product answers to the faiss id it had
            assert after.ann.rows[faiss_id[product]] == row
    assert_answers_as_exact(after)
    assert_answers_as_exact(load_index(ann_copy, mmap=True))


def test_update_with_the_refinement_encodes_every_vector_again(ann_copy, demo_catalogue, mobilenet_random):
    """A refinement re-learned on the updated catalogue changes every vector: the clusters stay, all vectors are re-added.
    Switching the plain index to the refinement changes the vectors' length: the clusters are trained again."""
    refined = update(demo_rows(demo_catalogue, BASE), ann_copy, mobilenet_random, refine="label-centroids")
    assert refined.extracted == 0 and refined.refinement == "label-centroids"
    assert "trained again" in refined.search_note and "1600" in refined.search_note
    assert_consistent_ann(load_index(ann_copy))

    report = update(demo_rows(demo_catalogue, UPDATED), ann_copy, mobilenet_random, refine="label-centroids")

    assert report.extracted == len(ADDED) and report.backend == "ann"
    assert "every vector encoded again" in report.search_note and "trained" not in report.search_note
    after = load_index(ann_copy)
    assert after.manifest.vector_dim == 1600 and after.ann is not None
    np.testing.assert_array_equal(after.ann.rows, np.arange(len(UPDATED)))  # ids numbered afresh, no holes
    assert_consistent_ann(after)
    assert_answers_as_exact(after)


@pytest.mark.parametrize(
    "kept, note",
    [(30, ["every vector encoded again", "renumbered"]), (15, ["trained again", f"{len(BASE)} products trained them, now 15"])],
    ids=["mostly-holes", "shrunk-4x"],
)
def test_an_update_that_removes_most_products(ann_copy, demo_catalogue, mobilenet_random, kept, note):
    """More holes than products: ids renumbered; a catalogue 4 times smaller: clusters trained again for its size."""
    report = update(demo_rows(demo_catalogue, BASE[:kept]), ann_copy, mobilenet_random)
    assert report.extracted == 0 and all(part in report.search_note for part in note), report.search_note
    after = load_index(ann_copy)
    assert after.ann is not None
    np.testing.assert_array_equal(after.ann.rows, np.arange(kept))
    if kept == 15:
        assert after.ann.settings == AnnSettings.for_count(15) and after.ann.trained_on == 15
    assert_consistent_ann(after)
    assert_answers_as_exact(after)


def test_update_asking_other_ann_settings_trains_again(ann_copy, demo_catalogue, mobilenet_random):
    """--update --ann-nlist: other clusters need training; the settings the index has do not."""
    catalogue = demo_rows(demo_catalogue, BASE)
    had = load_index(ann_copy).manifest.search
    same = update(catalogue, ann_copy, mobilenet_random, search=BackendChoice("ann", had["nlist"], had["nprobe"]))
    assert "0 added, 0 removed" in same.search_note and "trained" not in same.search_note  # the same settings: nothing to train

    report = update(catalogue, ann_copy, mobilenet_random, search=BackendChoice("ann", nlist=4))

    assert "trained again" in report.search_note and "new settings" in report.search_note
    after = load_index(ann_copy)
    assert {key: after.manifest.search[key] for key in ("nlist", "nprobe", "factory")} == {"nlist": 4, "nprobe": 4, "factory": "IVF4,SQ8"}
    assert after.ann is not None and faiss.extract_index_ivf(after.ann.index).nlist == 4
    assert_consistent_ann(after)
    assert_answers_as_exact(after)


def test_update_asking_only_other_probes_keeps_the_clusters(ann_copy, demo_catalogue, mobilenet_random):
    """--update --ann-nprobe: how many clusters a query scans is a search setting; nothing is trained again."""
    catalogue = demo_rows(demo_catalogue, BASE)
    had = load_index(ann_copy).manifest.search
    report = update(catalogue, ann_copy, mobilenet_random, search=BackendChoice("ann", nprobe=1))
    assert "trained" not in report.search_note and "0 added, 0 removed" in report.search_note
    after = load_index(ann_copy)
    assert (after.manifest.search["nlist"], after.manifest.search["nprobe"]) == (had["nlist"], 1)
    assert after.ann is not None and after.ann.settings.nprobe == 1 and after.ann.trained_on == had["trained_on"]
    assert_consistent_ann(after)


def test_update_to_the_exact_backend_drops_the_ann_files(ann_copy, demo_catalogue, mobilenet_random):
    """--update --backend exact: no stale ann files that a later loader could take for current."""
    report = update(demo_rows(demo_catalogue, UPDATED), ann_copy, mobilenet_random, search=BackendChoice("exact"))
    assert (report.backend, report.search_note) == ("exact", "")
    assert not (ann_copy / ANN_FILE).exists() and not (ann_copy / ANN_ROWS).exists()
    assert "search" not in json.loads((ann_copy / "manifest.json").read_text(encoding="utf-8"))
    index = load_index(ann_copy)
    assert index.manifest.backend == "exact" and index.ann is None
    assert isinstance(open_searcher(index), ExactSearcher)


# --- interrupted builds ---------------------------------------------------------------------------


def build_in_steps(catalogue, out, extractor, **callbacks):
    """An ann build of plain vectors in batches of 4, each checkpointed: what an interruption leaves behind."""
    return build_index(
        catalogue, out, extractor, batch_size=4, checkpoint_every=4, search=ANN, refine="none", head="none", exact_items=False, **callbacks
    )


def test_an_interrupted_ann_build_resumes_from_its_checkpoint(tmp_path, demo_catalogue, mobilenet_random):
    """Ctrl-C mid-extraction, the same build again: it resumes from the checkpoint and writes a whole ann index."""
    catalogue = demo_rows(demo_catalogue, BASE[:24])
    out = tmp_path / "index"
    calls = []

    def interrupt_on_third_batch(count: int) -> None:
        calls.append(count)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_in_steps(catalogue, out, mobilenet_random, on_progress=interrupt_on_third_batch)
    assert not out.exists() and list(partial_dir_for(out).glob("chunk-*.json"))

    started = []
    report = build_in_steps(catalogue, out, mobilenet_random, on_start=lambda *a: started.append(a))

    assert started == [(24, 12)]
    assert (report.resumed, report.extracted, report.count) == (12, 12, 24)
    assert report.backend == "ann" and built_afresh(report.search_note)
    index = load_index(out)
    assert index.ids() == [item.id for item in catalogue.items]
    assert_consistent_ann(index)
    assert_answers_as_exact(index)
    assert leftovers(out) == []


def test_an_interrupted_ann_update_leaves_the_served_index_untouched(ann_copy, demo_catalogue, mobilenet_random):
    """An update changes its faiss index in memory only: Ctrl-C leaves the served files as they were, and a re-run resumes."""
    before = snapshot(ann_copy)

    def interrupt(count: int) -> None:
        raise KeyboardInterrupt

    catalogue = demo_rows(demo_catalogue, UPDATED)
    with pytest.raises(KeyboardInterrupt):
        update(catalogue, ann_copy, mobilenet_random, batch_size=4, checkpoint_every=4, on_progress=interrupt)
    assert snapshot(ann_copy) == before
    assert_consistent_ann(load_index(ann_copy))

    report = update(catalogue, ann_copy, mobilenet_random, batch_size=4, checkpoint_every=4)

    assert (report.resumed, report.extracted) == (4, len(ADDED) - 4)
    assert f"{len(ADDED)} added, {len(REMOVED)} removed" in report.search_note
    after = load_index(ann_copy)
    assert_consistent_ann(after)
    assert_answers_as_exact(after)


# --- damaged indexes ------------------------------------------------------------------------------


def _damage(out, damage, vectors):
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if damage == "ann.faiss missing":
        (out / ANN_FILE).unlink()
    elif damage == "ann.faiss truncated":
        whole = (out / ANN_FILE).read_bytes()
        (out / ANN_FILE).write_bytes(whole[: len(whole) * 9 // 10])
    elif damage == "ann.faiss garbage":
        (out / ANN_FILE).write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "ann.faiss of another index":
        build_ann(np.asarray(vectors[:40]), AnnSettings.for_count(40)).save(out)  # also writes its 40 rows
        np.save(out / ANN_ROWS, np.arange(len(vectors), dtype=np.int64))
    elif damage == "ann_rows.npy missing":
        (out / ANN_ROWS).unlink()
    elif damage == "ann_rows.npy duplicate row":
        rows = np.load(out / ANN_ROWS)
        rows[5] = rows[6]
        np.save(out / ANN_ROWS, rows)
    elif damage == "ann_rows.npy out of range":
        rows = np.load(out / ANN_ROWS)
        rows[5] = len(vectors)
        np.save(out / ANN_ROWS, rows)
    elif damage == "search entry malformed":
        del manifest["search"]["nlist"]
    elif damage == "unknown backend":
        manifest["search"]["backend"] = "milvus-from-the-future"
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")


DAMAGES = {
    "ann.faiss missing": f"lacks {ANN_FILE}, which its manifest lists",
    "ann.faiss truncated": rf"The ann index at .*{ANN_FILE} is unreadable",
    "ann.faiss garbage": rf"The ann index at .*{ANN_FILE} is unreadable",
    "ann.faiss of another index": rf"{ANN_FILE} holds 40 vectors of 1280 values; the index has {len(BASE)} of 1280",
    "ann_rows.npy missing": r"is unreadable \(.*ann_rows.npy",
    "ann_rows.npy duplicate row": f"{ANN_ROWS} does not map the ann ids onto the {len(BASE)} products",
    "ann_rows.npy out of range": f"{ANN_ROWS} does not map the ann ids onto the {len(BASE)} products",
    "search entry malformed": "describes its ann search malformed",
    "unknown backend": "built for the search backend 'milvus-from-the-future', which this version does not serve",
}


@pytest.mark.parametrize("mmap", [False, True], ids=["read", "mapped"])
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_ann_files_are_refused_by_name(ann_copy, damage, mmap):
    """Read in full (an update) or memory-mapped (the bot): never a crash or a silently wrong answer."""
    _damage(ann_copy, damage, load_index(ann_copy).vectors)
    with pytest.raises(IndexCorruptError, match=DAMAGES[damage]):
        load_index(ann_copy, mmap=mmap)


def test_the_recommender_refuses_a_damaged_ann_index(ann_copy):
    _damage(ann_copy, "ann.faiss truncated", load_index(ann_copy).vectors)
    with pytest.raises(IndexCorruptError, match="unreadable"):
        Recommender(ann_copy).load()


# --- the build script -----------------------------------------------------------------------------


def test_the_build_script_builds_an_ann_index(tmp_path):
    """The operator's command line: --backend ann with its two parameters reaches the manifest."""
    images, styles = make_shop(tmp_path / "shop", count=6)
    out = tmp_path / "index"
    result = run_script("build_index.py", *build_args(images, styles, out, "--backend", "ann", "--ann-nlist", 2, "--ann-nprobe", 1))
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("Search") and "ann" in line and "built" in line for line in result.stdout.splitlines()), result.stdout
    index = load_index(out)
    assert (index.manifest.search["nlist"], index.manifest.search["nprobe"]) == (2, 1)
    assert_consistent_ann(index)


@pytest.mark.parametrize("option", ["--ann-nlist", "--ann-nprobe"])
def test_the_build_script_refuses_zero_clusters_or_probes(tmp_path, option):
    """argparse refuses them (exit 2) before any model is loaded."""
    images, styles = make_shop(tmp_path / "shop", count=2)
    result = run_script("build_index.py", *build_args(images, styles, tmp_path / "index", "--backend", "ann", option, 0))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"argument {option}: must be at least 1, not 0" in result.stderr
    assert not (tmp_path / "index").exists()


def test_a_memory_mapped_index_rescores_from_reads_not_from_the_map(demo_ann):
    """The bot maps vectors.npy; re-scoring reads its 32 candidate rows with pread instead of touching
    the map (each touch mapped up to 2 MB of page cache: 1.5 GB of resident memory after 30 photos at
    1M products). The rows read are the stored rows, and the answers those of the vectors in memory."""
    mapped = load_index(demo_ann, mmap=True)
    searcher = open_searcher(mapped)
    assert isinstance(searcher, AnnSearcher) and searcher._rows is not None
    rows = np.array([5, 0, len(mapped) - 1, 17])
    assert np.array_equal(searcher._rows.read(rows), np.asarray(mapped.vectors)[rows])
    in_memory = load_index(demo_ann, mmap=False)
    assert open_searcher(in_memory)._rows is None  # type: ignore[attr-defined]
    queries = np.asarray(mapped.vectors[:20])
    ours, theirs = searcher.search(queries, 5), open_searcher(in_memory).search(queries, 5)
    assert np.array_equal(ours[0], theirs[0]) and np.allclose(ours[1], theirs[1], atol=1e-6)
