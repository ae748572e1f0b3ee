"""``--backend milvus`` (recommender/milvus_search.py): a Milvus collection answers as the exact search does,
filters included; builds, updates and resumed builds write the collection the index serves; a collection
of another index, a missing one, a held one or an unreachable server is refused with a clear message; a bot
whose Milvus goes away mid-run asks shoppers to try again and answers again once Milvus is back.

Real parts throughout: the Milvus Lite that pymilvus starts (3.x runs it in this process, on threads:
it keeps a folder's lock until released or the process exits), a standalone Milvus Lite server process
(``python -m milvus_lite server``, killed for real where a server must go away), real index files, real
models (the real MobileNetV2 on the 4k catalogue for recall), and the real bot process.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.handlers import HELP, SEARCH_DOWN
from recommender import BuildReport, Recommender, build_index, load_index
from recommender.backends import BackendChoice, open_searcher
from recommender.catalogue import Catalogue
from recommender.errors import IndexCorruptError, SearchBackendError, SearchUnavailableError
from recommender.filters import allowed_rows, canonical
from recommender.index_store import CatalogueIndex
from recommender.milvus_search import LOCAL_COLLECTION, LOCAL_DB, MilvusSearcher, client_uri, connect, label_fields, release
from recommender.output_folder import partial_dir_for
from recommender.search import ExactSearcher
from standin_bot_api import FakeBotApi
from tests.build_helpers import leftovers, snapshot, subset
from tests.recommender_helpers import assert_same_neighbours
from tests.test_bot_e2e import BotProcess, texts, wait_albums

MILVUS = BackendChoice("milvus")
#: how long a refusal may take (measured: an unreachable server 0.2 s, a held Milvus Lite folder well under 1 s)
QUICK_S = 15.0

# --- helpers --------------------------------------------------------------------------------------


def build(catalogue: Catalogue, out: Path, extractor: Any, **options: Any) -> BuildReport:
    """:func:`build_index` with plain backbone vectors (what an update leaves unchanged for the products it
    keeps) unless ``options`` say otherwise."""
    return build_index(catalogue, out, extractor, **{"refine": "none", "head": "none", "exact_items": False, **options})


def recall(found: np.ndarray, expected: np.ndarray) -> float:
    """Share of the exact search's rows that the Milvus search also returned (recall@k over all queries)."""
    hits = sum(len(set(ours) & set(theirs)) for ours, theirs in zip(found.tolist(), expected.tolist()))
    return hits / expected.size


def assert_true_similarities(vectors: np.ndarray, queries: np.ndarray, result: tuple[np.ndarray, np.ndarray]) -> None:
    """Every similarity reported is the cosine of its row, best first; no row twice."""
    rows, sims = result
    true = np.einsum("qd,qkd->qk", queries.astype(np.float64), np.asarray(vectors)[rows].astype(np.float64))
    np.testing.assert_allclose(sims, true, atol=1e-5, rtol=0)
    assert np.all(np.diff(sims, axis=1) <= 1e-6)
    assert all(len(set(row)) == len(row) for row in rows.tolist())


def assert_shared_rows_score_alike(result: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]) -> None:
    """Rows both searches return carry the same similarity (float tolerance)."""
    for rows, sims, ref_rows, ref_sims in zip(*result, *reference):
        ours, theirs = dict(zip(rows.tolist(), sims.tolist())), dict(zip(ref_rows.tolist(), ref_sims.tolist()))
        for row in ours.keys() & theirs.keys():
            assert ours[row] == pytest.approx(theirs[row], abs=1e-5)


def filter_columns(index: CatalogueIndex) -> list[str]:
    """What :attr:`Recommender.filter_columns` gives: every column of products.csv but the image path."""
    return [column for column in index.columns if column != "image"]


def filtered(index: CatalogueIndex, where: Mapping[str, str | Sequence[str]]) -> tuple[np.ndarray, tuple]:
    """``(allowed, canonical where)``, both as :meth:`Recommender.answer` hands them to the searcher."""
    key = canonical(where)
    return allowed_rows(index.products, key, filter_columns(index)), key


def milvus_searcher(index: CatalogueIndex) -> MilvusSearcher:
    searcher = open_searcher(index)
    assert isinstance(searcher, MilvusSearcher)
    return searcher


def assert_answers_as_exact(index: CatalogueIndex) -> None:
    """Leave-one-out top 5 of every product through the index's collection equals the exact search; each
    product's own vector finds that very product."""
    searcher = milvus_searcher(index)
    try:
        rows = np.arange(len(index))
        vectors = np.asarray(index.vectors)
        expected = ExactSearcher().fit(vectors).search(vectors, 5, exclude=rows)
        assert_same_neighbours(vectors, vectors, searcher.search(vectors, 5, exclude=rows), expected)
        found, _ = searcher.search(vectors, 1)
        np.testing.assert_array_equal(found[:, 0], rows)
    finally:
        searcher.close()


def close(recommender: Recommender) -> None:
    """Close the Recommender's Milvus searcher: this process's Milvus Lite lets go of the folder."""
    assert isinstance(recommender.searcher, MilvusSearcher)
    recommender.searcher.close()


def stored_ids(uri: str, collection: str) -> set[str]:
    """The product ids the collection really holds, asked of Milvus itself (not of the index's files)."""
    client = connect(uri, purpose="read the collection")
    try:
        client.load_collection(collection)
        return {row["id"] for row in client.query(collection, filter='id != ""', output_fields=["id"], limit=16_384)}
    finally:
        client.close()
        release(uri)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class MilvusServer:
    """A standalone Milvus Lite server (``python -m milvus_lite server``): a Milvus the index reaches over the
    network, in its own process, so that it can really go away (SIGKILL) and come back (same port and data)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> MilvusServer:
        command = [sys.executable, "-u", "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir), "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # printed once it listens; "" if it died first
        assert "listening on" in line, f"Milvus Lite server did not start: {line}{self.process.stdout.read()}"
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture
def milvus_server(tmp_path: Path) -> Iterator[MilvusServer]:
    server = MilvusServer(tmp_path / "server.db").start()
    try:
        yield server
    finally:
        server.kill()


#: a process other than this one holding a Milvus Lite folder open (a bot serving it, say)
HOLDER = "import sys; from pymilvus import MilvusClient; MilvusClient(uri=sys.argv[1]); print('holding', flush=True); sys.stdin.read()"


class Holder:
    def __init__(self, uri: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, uri], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "holding"

    def let_go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()  # it exits, and its lock goes with it
        assert self.process.wait(timeout=30) == 0


# --- the real 4k catalogue, real MobileNetV2 vectors ---------------------------------------------


@pytest.fixture(scope="module")
def fashion_milvus(fashion_index_4k, fashion_catalogue, mobilenet_real, tmp_path_factory):
    """All 4,000 real products, plain MobileNetV2 vectors, switched to ``--backend milvus`` (the index's own
    Milvus Lite) by an update of the shared exact index: every vector reused, writing the collection about 5 s."""
    path = tmp_path_factory.mktemp("fashion-milvus") / "index"
    shutil.copytree(fashion_index_4k, path)
    report = build(fashion_catalogue, path, mobilenet_real, update=True, search=MILVUS)
    assert (report.backend, report.count, report.reused) == ("milvus", 4000, 4000)
    assert report.search_note == "collection 'products' written (4000 products)"
    return load_index(path, mmap=True)  # as the Recommender loads it


@pytest.fixture(scope="module")
def fashion_searchers(fashion_milvus) -> Iterator[tuple[MilvusSearcher, ExactSearcher]]:
    searcher = milvus_searcher(fashion_milvus)
    try:
        yield searcher, ExactSearcher().fit(np.asarray(fashion_milvus.vectors))
    finally:
        searcher.close()


@pytest.fixture(scope="module")
def fashion_queries(fashion_milvus) -> tuple[np.ndarray, np.ndarray]:
    """300 products asked leave-one-out (their own vector, their own row excluded)."""
    picks = np.sort(np.random.default_rng(11).choice(len(fashion_milvus), 300, replace=False))
    return np.asarray(fashion_milvus.vectors[picks]), picks


def test_real_vectors_find_the_exact_top5(fashion_milvus, fashion_searchers, fashion_queries):
    """The collection's own index, as the build chose it for 4,000 products, finds the exact neighbours of real
    photos' vectors; each similarity is the true cosine (measured recall@5: see the module's report)."""
    searcher, exact = fashion_searchers
    queries, picks = fashion_queries
    search = fashion_milvus.manifest.search
    assert search["index"] in ("FLAT", "IVF_FLAT") and search["nprobe"] >= 1
    expected = exact.search(queries, 5, exclude=picks)
    found = searcher.search(queries, 5, exclude=picks)
    assert found[0].shape == found[1].shape == (300, 5) and found[0].dtype == np.int64 and found[1].dtype == np.float32
    assert not (found[0] == picks[:, None]).any()
    assert recall(found[0], expected[0]) >= 0.99
    assert_true_similarities(fashion_milvus.vectors, queries, found)
    assert_shared_rows_score_alike(found, expected)


SAMPLED_IDS = "ids-few"
FILTERS: dict[str, Mapping[str, str | Sequence[str]]] = {
    "broad": {"gender": "Women"},
    "category": {"masterCategory": "footwear"},  # lower case on purpose: filters ignore case
    "two-columns": {"gender": ["MEN"], "articleType": ["tshirts", "Casual Shoes"]},
}


def _where(kind: str, index: CatalogueIndex) -> Mapping[str, str | Sequence[str]]:
    if kind in FILTERS:
        return FILTERS[kind]
    ids = index.ids()
    if kind == SAMPLED_IDS:  # a few hundred ids: Milvus is sent the ids that pass
        return {"id": [ids[row] for row in np.random.default_rng(3).choice(len(ids), 400, replace=False)]}
    return {"id": ids[150:]}  # all but 150: Milvus is sent the ids that do not


@pytest.mark.parametrize("kind", [*FILTERS, SAMPLED_IDS, "ids-most"])
def test_filtered_search_agrees_with_the_exact_filtered_search(fashion_milvus, fashion_searchers, fashion_queries, kind):
    """Filters over real vectors, passed as the Recommender passes them (the row mask and the filter): only
    passing products, the exact filtered top 5 (measured recall@5 1.0 for each filter)."""
    searcher, exact = fashion_searchers
    queries, picks = fashion_queries
    allowed, where = filtered(fashion_milvus, _where(kind, fashion_milvus))
    assert 200 < allowed.sum() < len(fashion_milvus)
    expression = searcher._expression(where, allowed)
    if kind in FILTERS:  # the label columns: the filter runs inside Milvus on its own copy of them
        assert expression.startswith("l_") and "id" not in expression.split()
    else:  # the id column is not stored as a label: the rows that pass go by id, whichever list is shorter
        assert expression.startswith("id in [" if kind == SAMPLED_IDS else "id not in [")
    expected = exact.search(queries, 5, exclude=picks, allowed=allowed)
    found = searcher.search(queries, 5, exclude=picks, allowed=allowed, where=where)
    assert found[0].shape == (300, 5) and (found[0] >= 0).all()
    assert allowed[found[0]].all()
    assert not (found[0] == picks[:, None]).any()
    assert recall(found[0], expected[0]) >= 0.99
    assert_true_similarities(fashion_milvus.vectors, queries, found)
    assert_shared_rows_score_alike(found, expected)


def test_filters_passing_nothing_or_fewer_than_k(fashion_milvus, fashion_searchers, fashion_queries):
    searcher, _ = fashion_searchers
    queries, _ = fashion_queries
    allowed, where = filtered(fashion_milvus, {"gender": "Martians"})
    assert not allowed.any()
    rows, sims = searcher.search(queries, 5, allowed=allowed, where=where)
    assert rows.shape == sims.shape == (300, 0) and rows.dtype == np.int64 and sims.dtype == np.float32
    few = np.array([17, 1999, 3998])
    allowed, where = filtered(fashion_milvus, {"id": [fashion_milvus.ids()[row] for row in few]})
    rows, sims = searcher.search(queries, 5, allowed=allowed, where=where)
    assert rows.shape == (300, 3)
    assert all(sorted(row) == few.tolist() for row in rows.tolist())
    assert_true_similarities(fashion_milvus.vectors, queries, (rows, sims))
    # the three asking themselves, each left out of its own answer: the other two
    rows, _ = searcher.search(np.asarray(fashion_milvus.vectors[few]), 5, exclude=few, allowed=allowed, where=where)
    assert [sorted(row) for row in rows.tolist()] == [[1999, 3998], [17, 3998], [17, 1999]]


# --- small pieces -----------------------------------------------------------------------------


def test_label_columns_get_distinct_milvus_field_names():
    fields = label_fields(["gender", "base colour", "base_colour", "Größe", "x" * 60])
    assert fields["gender"] == "l_gender" and fields["base colour"] == "l_base_colour"
    assert fields["base_colour"] == "l_base_colour_2"  # the same identifier twice: the later one is numbered
    assert fields["Größe"] == "l_Gr__e" and len(fields["x" * 60]) == 2 + 48
    assert len(set(fields.values())) == len(fields) and all(name.isidentifier() and name.isascii() for name in fields.values())


def test_where_the_collection_lives(tmp_path):
    assert client_uri("", tmp_path) == str(tmp_path / LOCAL_DB)  # the default: inside the index
    assert client_uri("shared.db", tmp_path) == str(tmp_path / "shared.db")  # relative to the index
    assert client_uri("/srv/milvus/shop.db", tmp_path) == "/srv/milvus/shop.db"
    assert client_uri("http://milvus:19530", tmp_path) == "http://milvus:19530"


# --- building, on a small generated catalogue ----------------------------------------------------

#: rows of the demo catalogue (98 products) in the first build; every 5th is left out for an update to add
BASE = [row for row in range(98) if row % 5]
REMOVED = [1, 22, 43, 64, 76, 97]
ADDED = [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]
UPDATED = sorted(set(BASE) - set(REMOVED) | set(ADDED))
#: labels and an id a Milvus expression must quote right: accents, quotes, a non-ASCII id
ODD_LABELS = {2: {"baseColour": "Crème"}, 3: {"baseColour": 'Rosé "vif"'}}
ODD_IDS = {4: "sac-à-main-4"}


def shop(catalogue: Catalogue, rows: Sequence[int], relabel: Mapping[int, Mapping[str, str]] | None = None) -> Catalogue:
    """The demo products of ``rows`` (with the odd labels and id above), ``relabel`` changing some labels."""
    items = []
    for row in rows:
        item = catalogue.items[row]
        item_id = ODD_IDS.get(row, item.id)
        labels = {**item.labels, **ODD_LABELS.get(row, {}), **(relabel or {}).get(row, {}), "id": item_id}
        items.append(dataclasses.replace(item, id=item_id, labels=labels))
    return subset(catalogue, items)


def ids_of(catalogue: Catalogue, rows: Sequence[int]) -> list[str]:
    return [ODD_IDS.get(row, catalogue.items[row].id) for row in rows]


@pytest.fixture(scope="module")
def demo_milvus(demo_catalogue, mobilenet_random, tmp_path_factory):
    """78 demo products, plain MobileNetV2 (random weights) vectors, ``--backend milvus`` into the index's own
    Milvus Lite. Read-only: copy it."""
    path = tmp_path_factory.mktemp("demo-milvus") / "index"
    report = build(shop(demo_catalogue, BASE), path, mobilenet_random, search=MILVUS)
    assert (report.backend, report.count) == ("milvus", len(BASE))
    assert report.search_note == f"collection 'products' written ({len(BASE)} products)"
    return path


@pytest.fixture
def milvus_copy(demo_milvus, tmp_path):
    out = tmp_path / "index"
    shutil.copytree(demo_milvus, out)
    return out


def test_the_manifest_records_the_milvus_backend_and_its_collection(demo_milvus):
    manifest = json.loads((demo_milvus / "manifest.json").read_text(encoding="utf-8"))
    search = manifest["search"]
    assert search["backend"] == "milvus" and search["uri"] == "" and search["collection"] == LOCAL_COLLECTION
    assert search["index"] in ("FLAT", "IVF_FLAT") and search["fields"] == label_fields(manifest["catalogue"]["columns"])
    assert (demo_milvus / LOCAL_DB).is_dir()
    index = load_index(demo_milvus)
    assert index.manifest.backend == "milvus" and index.ann is None
    assert stored_ids(str(demo_milvus / LOCAL_DB), LOCAL_COLLECTION) == set(index.ids())
    assert_answers_as_exact(index)


def test_the_recommender_serves_a_milvus_index_with_no_new_argument(demo_milvus, demo_catalogue):
    recommender = Recommender(demo_milvus).load()
    try:
        assert isinstance(recommender.searcher, MilvusSearcher)
        index = load_index(demo_milvus)
        exact = ExactSearcher().fit(index.vectors)
        for position in (0, 40, len(BASE) - 1):
            item = demo_catalogue.items[BASE[position]]
            matches = recommender.recommend(demo_catalogue.images_dir / item.image, k=5)
            assert matches[0].id == item.id and matches[0].score == pytest.approx(1.0, abs=1e-4)
            found = (np.array([[m.row for m in matches]]), np.array([[m.score for m in matches]], dtype=np.float32))
            assert_same_neighbours(index.vectors, index.vectors[position][None], found, exact.search(index.vectors[position], 5), atol=1e-4)
            shoes = recommender.recommend(demo_catalogue.images_dir / item.image, k=5, where={"articleType": "casual shoes"})
            assert len(shoes) == 5 and all(m.labels["articleType"] == "Casual Shoes" for m in shoes)
        photo = demo_catalogue.images_dir / demo_catalogue.items[BASE[0]].image
        assert recommender.recommend(photo, where={"articleType": "Sarees"}) == []
        # accents, quotes and non-ASCII ids reach Milvus as written (the filter runs inside it)
        assert [m.id for m in recommender.recommend(photo, where={"baseColour": "crème"})] == ids_of(demo_catalogue, [2])
        assert [m.id for m in recommender.recommend(photo, where={"baseColour": 'ROSÉ "VIF"'})] == ids_of(demo_catalogue, [3])
        by_id = recommender.recommend(photo, where={"id": ["SAC-À-MAIN-4", "1002"]})
        assert sorted(m.id for m in by_id) == ["1002", "sac-à-main-4"] and by_id[0].score >= by_id[1].score
    finally:
        close(recommender)


def test_a_milvus_that_stops_answering_is_search_unavailable(demo_milvus, demo_catalogue):
    """The in-process Milvus Lite server stopped under a loaded Recommender: SearchUnavailableError (the bot's
    "try again" answer), not pymilvus' own exception; a closed searcher says so too."""
    recommender = Recommender(demo_milvus).load()
    searcher = recommender.searcher
    assert isinstance(searcher, MilvusSearcher)
    photo = demo_catalogue.images_dir / demo_catalogue.items[BASE[0]].image
    assert len(recommender.recommend(photo)) == 5
    release(searcher.uri)  # the server itself goes, the client stays
    with pytest.raises(SearchUnavailableError, match="did not answer"):
        recommender.recommend(photo)
    searcher.close()
    with pytest.raises(SearchUnavailableError, match="not connected"):
        recommender.recommend(photo)
    close(Recommender(demo_milvus).load())  # nothing was left holding the folder


# --- updating -------------------------------------------------------------------------------------


def test_update_of_plain_vectors_adds_and_removes_in_place(milvus_copy, demo_catalogue, mobilenet_random):
    before = load_index(milvus_copy)
    report = build_index(shop(demo_catalogue, UPDATED), milvus_copy, mobilenet_random, update=True, refine="none")

    assert (report.extracted, report.reused, report.removed, report.count) == (len(ADDED), len(BASE) - len(REMOVED), len(REMOVED), len(UPDATED))
    assert report.backend == "milvus"  # no search= on an update: the index's own backend
    assert report.search_note == f"collection 'products' updated in place: {len(ADDED)} added, {len(REMOVED)} removed"
    after = load_index(milvus_copy)
    assert after.manifest.search == before.manifest.search
    assert after.ids() == ids_of(demo_catalogue, UPDATED)
    removed, added = set(ids_of(demo_catalogue, REMOVED)), set(ids_of(demo_catalogue, ADDED))
    assert stored_ids(str(milvus_copy / LOCAL_DB), LOCAL_COLLECTION) == set(after.ids())
    assert_answers_as_exact(after)
    searcher = milvus_searcher(after)
    try:
        # the removed products' own vectors, asked for every product there is: none of them comes back
        old_rows = [before.ids().index(item) for item in removed]
        rows, _ = searcher.search(np.asarray(before.vectors[old_rows]), len(after))
        assert not removed & {after.ids()[row] for row in rows.ravel() if row >= 0}
        new_rows = [after.ids().index(item) for item in added]
        rows, _ = searcher.search(np.asarray(after.vectors[new_rows]), 1)
        assert [after.ids()[row] for row in rows[:, 0]] == [after.ids()[row] for row in new_rows]
    finally:
        searcher.close()


def test_update_that_relabels_kept_products_rewrites_their_labels(milvus_copy, demo_catalogue, mobilenet_random):
    """A kept product whose labels changed in styles.csv: its vector stays, its labels in the collection
    (where the filters run) change with it."""
    relabel = {BASE[10]: {"articleType": "Sarees"}}
    report = build_index(shop(demo_catalogue, BASE, relabel), milvus_copy, mobilenet_random, update=True, refine="none")
    assert report.search_note == "collection 'products' updated in place: 0 added, 0 removed, 1 relabelled"
    recommender = Recommender(milvus_copy).load()
    try:
        item = demo_catalogue.items[BASE[10]]
        photo = demo_catalogue.images_dir / item.image
        assert [m.id for m in recommender.recommend(photo, where={"articleType": "sarees"})] == [item.id]
        was = item.labels["articleType"]
        others = recommender.recommend(photo, k=30, where={"articleType": was})
        assert others and item.id not in {m.id for m in others} and all(m.labels["articleType"] == was for m in others)
    finally:
        close(recommender)


def test_update_with_the_refinement_writes_the_collection_anew(milvus_copy, demo_catalogue, mobilenet_random):
    """A refinement learned on the updated catalogue changes every vector (and their length): a new collection."""
    report = build_index(shop(demo_catalogue, UPDATED), milvus_copy, mobilenet_random, update=True, refine="label-centroids")
    assert report.extracted == len(ADDED) and report.refinement == "label-centroids" and report.backend == "milvus"
    assert report.search_note == f"collection 'products' written ({len(UPDATED)} products)"
    after = load_index(milvus_copy)
    assert after.manifest.vector_dim == 1600 and after.manifest.search["collection"] == LOCAL_COLLECTION
    assert stored_ids(str(milvus_copy / LOCAL_DB), LOCAL_COLLECTION) == set(after.ids())
    assert_answers_as_exact(after)


def test_update_to_the_exact_backend_drops_milvus_db(milvus_copy, demo_catalogue, mobilenet_random):
    report = build_index(shop(demo_catalogue, UPDATED), milvus_copy, mobilenet_random, update=True, refine="none", search=BackendChoice("exact"))
    assert (report.backend, report.search_note) == ("exact", "")
    assert not (milvus_copy / LOCAL_DB).exists()
    assert "search" not in json.loads((milvus_copy / "manifest.json").read_text(encoding="utf-8"))
    index = load_index(milvus_copy)
    assert index.manifest.backend == "exact"
    assert isinstance(open_searcher(index), ExactSearcher)


# --- interrupted builds ---------------------------------------------------------------------------


def test_an_interrupted_milvus_build_resumes_from_its_checkpoint(tmp_path, demo_catalogue, mobilenet_random):
    catalogue = shop(demo_catalogue, BASE[:24])
    out = tmp_path / "index"
    calls = []

    def interrupt_on_third_batch(count: int) -> None:
        calls.append(count)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(catalogue, out, mobilenet_random, batch_size=4, checkpoint_every=4, on_progress=interrupt_on_third_batch, search=MILVUS)
    assert not out.exists() and list(partial_dir_for(out).glob("chunk-*.json"))

    started = []
    report = build(catalogue, out, mobilenet_random, batch_size=4, checkpoint_every=4, on_start=lambda *a: started.append(a), search=MILVUS)

    assert started == [(24, 12)]
    assert (report.resumed, report.extracted, report.count, report.backend) == (12, 12, 24, "milvus")
    assert report.search_note == "collection 'products' written (24 products)"
    index = load_index(out)
    assert index.ids() == [item.id for item in catalogue.items]
    assert_answers_as_exact(index)
    assert leftovers(out) == []


def test_an_interrupted_milvus_update_leaves_the_served_index_untouched(milvus_copy, demo_catalogue, mobilenet_random):
    before = snapshot(milvus_copy)

    def interrupt(count: int) -> None:
        raise KeyboardInterrupt

    catalogue = shop(demo_catalogue, UPDATED)
    with pytest.raises(KeyboardInterrupt):
        build_index(catalogue, milvus_copy, mobilenet_random, update=True, refine="none", batch_size=4, checkpoint_every=4, on_progress=interrupt)
    assert snapshot(milvus_copy) == before

    report = build_index(catalogue, milvus_copy, mobilenet_random, update=True, refine="none", batch_size=4, checkpoint_every=4)

    assert (report.resumed, report.extracted) == (4, len(ADDED) - 4)
    assert report.search_note == f"collection 'products' updated in place: {len(ADDED)} added, {len(REMOVED)} removed"
    assert_answers_as_exact(load_index(milvus_copy))
    assert leftovers(milvus_copy) == []


# --- refused: another index's collection, a missing one, a held one, an unreachable server ---------


def test_a_collection_of_another_index_is_refused_by_name(milvus_copy, demo_catalogue, mobilenet_random, tmp_path):
    # the manifest says another model made the vectors: exactly that difference is named
    manifest_path = milvus_copy / "manifest.json"
    original = manifest_path.read_text(encoding="utf-8")
    manifest = json.loads(original)
    manifest["weights_fingerprint"] = "0" * len(manifest["weights_fingerprint"])
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(SearchBackendError, match=r"differs in weights_fingerprint: built from another model"):
        open_searcher(load_index(milvus_copy))
    manifest_path.write_text(original, encoding="utf-8")

    # milvus.db of another index (other products, refined vectors of another length) put in its place
    other = tmp_path / "other"
    build_index(shop(demo_catalogue, ADDED), other, mobilenet_random, refine="label-centroids", head="none", exact_items=False, search=MILVUS)
    shutil.rmtree(milvus_copy / LOCAL_DB)
    shutil.copytree(other / LOCAL_DB, milvus_copy / LOCAL_DB)
    with pytest.raises(SearchBackendError, match=r"does not belong to this index \(it differs in count, refinement, vector_dim:"):
        Recommender(milvus_copy).load()

    shutil.rmtree(milvus_copy / LOCAL_DB)
    with pytest.raises(IndexCorruptError, match="lacks milvus.db"):
        load_index(milvus_copy)
    with pytest.raises(IndexCorruptError, match="lacks milvus.db"):
        Recommender(milvus_copy).load()


def test_an_external_milvus_lite_path_and_its_collections(tmp_path, demo_catalogue, mobilenet_random):
    """``--milvus-uri PATH``: the collection lives outside the index, named after it; a rebuild or an update
    that writes a new one drops the one it replaces; one that is gone is refused by name."""
    shared = str(tmp_path / "shared.db")
    out = tmp_path / "index"
    choice = BackendChoice("milvus", milvus_uri=shared)
    catalogue = shop(demo_catalogue, BASE[:12])
    first = build(catalogue, out, mobilenet_random, search=choice)
    name = load_index(out).manifest.search["collection"]
    assert name.startswith("lookalike_index_") and first.search_note == f"collection {name!r} written (12 products)"
    assert not (out / LOCAL_DB).exists() and stored_ids(shared, name) == set(ids_of(demo_catalogue, BASE[:12]))

    build(catalogue, out, mobilenet_random, search=choice)  # a fresh build over it
    second = load_index(out).manifest.search["collection"]
    updated = build_index(catalogue, out, mobilenet_random, update=True, refine="label-centroids")
    third = load_index(out).manifest.search["collection"]
    assert len({name, second, third}) == 3 and updated.search_note == f"collection {third!r} written (12 products)"
    recommender = Recommender(out).load()
    assert len(recommender.recommend(demo_catalogue.images_dir / catalogue.items[0].image)) == 5
    close(recommender)
    client = connect(shared, purpose="list")  # (a second client in this process would share its Milvus Lite)
    try:
        assert client.list_collections() == [third]  # the replaced ones were dropped
        client.drop_collection(third)
    finally:
        client.close()
        release(shared)
    with pytest.raises(SearchBackendError, match=f"has no collection '{third}'"):
        Recommender(out).load()


def test_milvus_lite_held_by_another_process_is_refused_with_a_hint(tmp_path, demo_catalogue, mobilenet_random):
    """Milvus Lite serves one process at a time: a second process gets a clear error, at build and at serve
    time; the build keeps what it extracted and finishes once the folder is free. (Within one process a
    second client shares the first one's server: no error there.)"""
    shared = str(tmp_path / "shared.db")
    first, second = connect(shared, purpose="a"), connect(shared, purpose="b")
    first.close()
    second.close()
    release(shared)

    catalogue = shop(demo_catalogue, BASE[:8])
    out = tmp_path / "index"
    choice = BackendChoice("milvus", milvus_uri=shared)
    holder = Holder(shared)
    try:
        started = time.monotonic()
        with pytest.raises(SearchBackendError, match="serves one process at a time: is a bot or another build using it") as refused:
            build(catalogue, out, mobilenet_random, search=choice)
        assert time.monotonic() - started < QUICK_S + 30  # the extraction of 8 photos, then a prompt refusal
        assert str(refused.value).startswith(f"Cannot open Milvus at {shared} to write the catalogue's vectors (Open local milvus failed)")
        assert not out.exists() and list(partial_dir_for(out).glob("chunk-*.json")) and leftovers(out) == [partial_dir_for(out).name]
    finally:
        holder.let_go()
    report = build(catalogue, out, mobilenet_random, search=choice)
    assert (report.resumed, report.extracted, report.count) == (8, 0, 8)

    holder = Holder(shared)  # now a bot elsewhere has it while this one starts
    try:
        started = time.monotonic()
        with pytest.raises(SearchBackendError, match="to search the catalogue .*serves one process at a time"):
            Recommender(out).load()
        assert time.monotonic() - started < QUICK_S
    finally:
        holder.let_go()
    close(Recommender(out).load())

    inside = tmp_path / "inside"  # the default, inside the index: the same rule
    build(catalogue, inside, mobilenet_random, search=MILVUS)
    holder = Holder(str(inside / LOCAL_DB))
    try:
        with pytest.raises(SearchBackendError, match=f"Cannot open Milvus at {inside / LOCAL_DB} .*one process at a time"):
            Recommender(inside).load()
    finally:
        holder.let_go()


def test_an_unreachable_milvus_server_is_refused_quickly(tmp_path, demo_catalogue, mobilenet_random, milvus_server):
    closed = f"http://127.0.0.1:{free_port()}"
    catalogue = shop(demo_catalogue, BASE[:8])
    started = time.monotonic()
    with pytest.raises(SearchBackendError, match=f"Cannot open Milvus at {closed} .*Is the server running and reachable"):
        build(catalogue, tmp_path / "nowhere", mobilenet_random, search=BackendChoice("milvus", milvus_uri=closed))
    assert time.monotonic() - started < QUICK_S + 30  # the extraction of 8 photos, then a prompt refusal
    assert not (tmp_path / "nowhere").exists()

    out = tmp_path / "index"
    report = build(catalogue, out, mobilenet_random, search=BackendChoice("milvus", milvus_uri=milvus_server.uri))
    assert report.backend == "milvus" and load_index(out).manifest.search["uri"] == milvus_server.uri
    close(Recommender(out).load())
    milvus_server.kill()
    started = time.monotonic()
    with pytest.raises(SearchBackendError, match=f"Milvus at {milvus_server.uri} .*Fail connecting to server"):
        Recommender(out).load()
    assert time.monotonic() - started < QUICK_S


# --- the bot, end to end --------------------------------------------------------------------------


def answers(api: FakeBotApi, chat: int) -> int:
    """Albums and texts the chat got (a text prompt follows each album)."""
    return len(api.albums(chat)) + len(texts(api, chat))


def wait_answer(api: FakeBotApi, chat: int, had: int) -> None:
    api.wait_for(lambda s: answers(s, chat) > had, timeout=60)


def test_a_bot_on_a_milvus_server_asks_to_retry_while_it_is_down(tmp_path, demo_catalogue, mobilenet_random, milvus_server):
    """The bot serves an index whose collection is on a Milvus server: albums as usual; the server killed, a
    photo gets the "try again" answer and the bot keeps answering; the server back, photos get albums again."""
    index = tmp_path / "index"
    build(shop(demo_catalogue, BASE), index, mobilenet_random, search=BackendChoice("milvus", milvus_uri=milvus_server.uri))
    photo = (demo_catalogue.images_dir / demo_catalogue.items[BASE[7]].image).read_bytes()
    with FakeBotApi() as api:
        bot = BotProcess(api, tmp_path / "data", tmp_path / "bot.log", INDEX_DIR=str(index), RATE_LIMIT_PER_MINUTE="600")
        try:
            bot.wait_ready()
            api.user_sends_photo(photo, chat_id=4101)
            album = wait_albums(api, 4101)[0]
            assert len(album.items) == 5 and (album.items[0].caption or "").startswith(demo_catalogue.items[BASE[7]].labels["productDisplayName"])

            milvus_server.kill()
            api.user_sends_photo(photo, chat_id=4102)
            api.wait_for(lambda s: texts(s, 4102), timeout=60)
            assert texts(api, 4102) == [SEARCH_DOWN] and not api.albums(4102)
            api.user_sends_text("/help", chat_id=4102)
            api.wait_for(lambda s: len(texts(s, 4102)) == 2, timeout=60)
            assert texts(api, 4102)[1] == HELP
            assert bot.process.poll() is None

            milvus_server.start()  # the same port and data: the bot reconnects (and has the collection loaded again)
            for _ in range(40):  # pymilvus reconnects within seconds (measured about 2 s)
                asked = answers(api, 4103)
                api.user_sends_photo(photo, chat_id=4103)
                wait_answer(api, 4103, asked)
                if api.albums(4103):
                    break
                assert texts(api, 4103)[-1] == SEARCH_DOWN  # still reconnecting: asked to retry, as a shopper would be
                time.sleep(0.5)  # a shopper's pause before trying again
            albums = api.albums(4103)
            assert albums and len(albums[0].items) == 5, f"no album in {len(texts(api, 4103))} tries once Milvus was back"
        finally:
            code = bot.stop()
    output = bot.output()
    assert code == 0 and "Stopped cleanly" in output, output[-3000:]
    assert "Search unavailable" in output and "inference failed" not in output
