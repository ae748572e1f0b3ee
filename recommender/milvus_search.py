"""Search in the Milvus vector database (``--backend milvus``), for catalogues that outgrow one machine.

One collection holds each product's vector under its id, with its label columns (case-folded, so
that filters keep :mod:`recommender.filters`' meaning) beside it: a ``where`` filter becomes a
Milvus expression and runs inside the engine. Everything else (captions, photos) stays in the
index directory; a hit's id is mapped to its row there, so an update that lands in the collection
while a bot still serves the older products.csv cannot send a wrong product.

Where the collection lives (``--milvus-uri``):

* nothing given: Milvus Lite (the embedded Milvus of ``pip install milvus-lite``), in ``milvus.db``
  inside the index directory. It is written in the build's staging folder and swapped in with the
  rest of the index, so a running bot keeps its own until it reloads. Milvus Lite serves one
  process at a time; this is why it lives inside the index.
* a local path: Milvus Lite there (the bot must not hold it open while a build writes it).
* ``http://host:19530`` or ``https://...``: a Milvus standalone or cluster; the token comes from
  ``MILVUS_TOKEN`` (never stored). A build writes a new collection and drops the earlier one once the
  new index is in place; ``--update`` upserts and deletes in place when the kept vectors did not change.

The collection's description records the index it belongs to (model fingerprint, vector length),
so a collection built from another model is refused by name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ann_search import AnnSettings
from .errors import SearchBackendError, SearchUnavailableError
from .filters import CanonicalWhere
from .manifest import MILVUS_BACKEND, Manifest
from .search import drop_excluded, no_rows, search_request

#: Milvus Lite's folder inside an index directory (the default)
LOCAL_DB = "milvus.db"
#: the collection's name inside an index's own Milvus Lite
LOCAL_COLLECTION = "products"
ID_FIELD = "id"
VECTOR_FIELD = "vector"
#: products written per insert call (a 2048-d batch stays far below gRPC's 64 MB message limit)
_BATCH = 1000
#: longest label value stored (longer ones are cut: a filter cannot name them)
_MAX_LABEL = 1024
#: seconds a search may take before the shopper is asked to try again
SEARCH_TIMEOUT_S = 10.0
#: nprobe that makes Milvus scan every cluster (it caps nprobe at 65536 and at the clusters it has)
ALL_CLUSTERS = 65_536
TOKEN_VARIABLE = "MILVUS_TOKEN"
#: Milvus' error code for a search of a collection that is not loaded (a restarted server loads none)
_NOT_LOADED = 101


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "tcp://", "grpc://"))


def client_uri(uri: str, index_dir: Path) -> str:
    """The address to connect to: a server URL as it is, a Milvus Lite path relative to the index."""
    if is_server(uri):
        return uri
    path = Path(uri or LOCAL_DB)
    return str(path if path.is_absolute() else index_dir / path)


def connect(uri: str, *, purpose: str) -> Any:
    """A ``MilvusClient`` for ``uri``; :class:`SearchBackendError` says clearly why there is none."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    try:
        return MilvusClient(uri=uri, token=os.environ.get(TOKEN_VARIABLE, ""), timeout=SEARCH_TIMEOUT_S)
    except (MilvusException, OSError, RuntimeError) as exc:
        hint = (
            " Milvus Lite serves one process at a time: is a bot or another build using it?"
            if not is_server(uri)
            else f" Is the server running and reachable, and {TOKEN_VARIABLE} right?"
        )
        raise SearchBackendError(f"Cannot open Milvus at {uri} to {purpose} ({_message(exc)}).{hint}") from exc


def release(uri: str) -> None:
    """Stop this process's Milvus Lite server for the local path ``uri``, if it runs one.

    pymilvus starts Milvus Lite inside the process on the first client for a path and keeps it, with
    its folder's lock, until the process exits, whether or not a client is left: a build would keep
    the collection it wrote locked (the swapped-in ``milvus.db``, which no later client of the same
    process, bot or Recommender, could then open), and a searcher closed would still hold its folder.
    """
    if is_server(uri):
        return
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # no Milvus Lite: nothing was started
        return
    server_manager_instance.release_server(uri)


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return str(text).strip().splitlines()[0][:300]


def label_fields(columns: Sequence[str]) -> dict[str, str]:
    """A Milvus field name for each label column (Milvus wants identifiers; CSV headers are anything)."""
    fields: dict[str, str] = {}
    for position, column in enumerate(columns):
        name = "l_" + re.sub(r"\W", "_", column, flags=re.ASCII)[:48]
        fields[column] = name if name not in fields.values() else f"{name}_{position}"
    return fields


def _folded(value: str) -> str:
    return value.strip().casefold()[:_MAX_LABEL]


@dataclass(frozen=True)
class MilvusPlan:
    """Where a build writes its collection: ``uri`` as the operator gave it ("": inside the index) and
    the collection's name (None: chosen)."""

    uri: str = ""
    collection: str | None = None


class MilvusWriter:
    """Writes (or updates) an index's collection at build time; :meth:`write` returns the manifest entry."""

    def __init__(self, plan: MilvusPlan, out_dir: Path, identity: Mapping[str, Any]) -> None:
        self.plan = plan
        self.out_dir = out_dir
        #: what the collection's description records, checked when the index is served
        self.identity = dict(identity)

    def write(
        self,
        staging: Path,
        vectors: np.ndarray,
        ids: Sequence[str],
        labels: Sequence[Mapping[str, str]],
        columns: Sequence[str],
        earlier: Mapping[str, Any] | None,
        earlier_ids: Sequence[str] | None,
        unchanged: bool,
        earlier_labels: Sequence[Mapping[str, str]] | None = None,
    ) -> tuple[dict[str, Any], str]:
        """Write the collection for ``vectors`` (row i = product ``ids[i]``); ``earlier``: the updated
        index's manifest entry (its collection is updated in place where it can be), ``earlier_ids``
        its products (``earlier_labels``: their labels, row by row), ``unchanged``: whether kept products kept
        their vectors. Returns (entry, note)."""
        settings = AnnSettings.for_count(len(vectors))
        # Milvus' clusters want more probes than faiss' for the same recall (4k: 0.975 at 8, 0.998 at 32 of 64)
        settings = AnnSettings(settings.nlist, max(32, settings.nlist // 32), 0)
        kind = "IVF_FLAT"  # FLAT answered in 264 ms at 44k in Milvus Lite, IVF_FLAT in milliseconds
        fields = label_fields(columns)
        inside = not self.plan.uri
        same_place = earlier is not None and earlier.get("uri", "") == self.plan.uri
        if inside:
            uri, name = client_uri("", staging), LOCAL_COLLECTION
            if same_place and earlier_ids is not None and (self.out_dir / LOCAL_DB).is_dir():
                shutil.copytree(self.out_dir / LOCAL_DB, staging / LOCAL_DB)  # updated on the copy, swapped in with the index
        else:
            uri = client_uri(self.plan.uri, self.out_dir)
            name = self.plan.collection or (str(earlier["collection"]) if same_place and earlier else _collection_name(self.out_dir))
        client = connect(uri, purpose="write the catalogue's vectors")
        try:
            in_place = (
                same_place and unchanged and earlier_ids is not None and earlier is not None
                and client.has_collection(name) and dict(earlier.get("fields") or {}) == fields
            )  # fmt: skip
            if in_place:
                note = self._update(client, name, vectors, ids, labels, fields, earlier_ids or [], earlier_labels)
            else:
                if not inside:
                    name = f"{name.rsplit('__', 1)[0]}__{_stamp()}"  # a new collection; the earlier one is dropped after the swap
                if client.has_collection(name):
                    client.drop_collection(name)
                self._create(client, name, vectors.shape[1], fields, kind, settings)
                self._insert(client, name, vectors, np.arange(len(ids)), ids, labels, fields)
                note = f"collection {name!r} written ({len(ids)} products)"
            client.flush(name)
            _wait_indexed(client, name)
            described = json.dumps({**self.identity, "count": len(ids)}, sort_keys=True)
            client.alter_collection_properties(name, {"lookalike.index": described})
        except SearchBackendError:
            raise
        except Exception as exc:  # pymilvus raises its own exceptions and gRPC's
            raise SearchBackendError(f"Milvus at {uri} refused the catalogue's vectors ({_message(exc)}).") from exc
        finally:
            client.close()
            release(uri)  # the collection is written: let the served index (or the next build) open it
        entry = {
            "backend": MILVUS_BACKEND, "uri": self.plan.uri, "collection": name, "fields": fields,
            "index": kind, "nlist": settings.nlist, "nprobe": settings.nprobe,
        }  # fmt: skip
        return entry, note

    def _create(self, client: Any, name: str, dim: int, fields: Mapping[str, str], kind: str, settings: AnnSettings) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=_MAX_LABEL)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
        for field in fields.values():
            schema.add_field(field, DataType.VARCHAR, max_length=_MAX_LABEL)
        index_params = client.prepare_index_params()
        params = {"nlist": settings.nlist} if kind == "IVF_FLAT" else {}
        index_params.add_index(field_name=VECTOR_FIELD, index_type=kind, metric_type="IP", params=params)
        client.create_collection(name, schema=schema, index_params=index_params)

    def _insert(
        self, client: Any, name: str, vectors: np.ndarray, rows: np.ndarray, ids: Sequence[str],
        labels: Sequence[Mapping[str, str]], fields: Mapping[str, str], upsert: bool = False,
    ) -> None:  # fmt: skip
        call = client.upsert if upsert else client.insert
        for start in range(0, len(rows), _BATCH):
            part = rows[start : start + _BATCH]
            order = np.sort(part)  # ascending rows: a memory map reads them in order
            block = np.asarray(vectors[order], dtype=np.float32)
            call(name, [
                {ID_FIELD: ids[row], VECTOR_FIELD: block[i], **{field: _folded(labels[row].get(column) or "") for column, field in fields.items()}}
                for i, row in enumerate(order)
            ])  # fmt: skip

    def _update(
        self, client: Any, name: str, vectors: np.ndarray, ids: Sequence[str], labels: Sequence[Mapping[str, str]],
        fields: Mapping[str, str], earlier_ids: Sequence[str], earlier_labels: Sequence[Mapping[str, str]] | None = None,
    ) -> str:  # fmt: skip
        """Delete the products that left, add the new ones and write again the kept ones whose labels
        changed (the filters run on the collection's copy of them); the other kept ones stay as they are."""
        before = set(earlier_ids)
        now = set(ids)
        gone = [item for item in earlier_ids if item not in now]
        for start in range(0, len(gone), _BATCH):
            client.delete(name, ids=gone[start : start + _BATCH])
        new_rows = [row for row, item in enumerate(ids) if item not in before]
        relabelled: list[int] = []
        if earlier_labels is not None:
            def stored(row_labels: Mapping[str, str]) -> list[str]:
                return [_folded(row_labels.get(column) or "") for column in fields]

            had = {item: stored(row_labels) for item, row_labels in zip(earlier_ids, earlier_labels) if item in now}
            relabelled = [row for row, item in enumerate(ids) if item in had and had[item] != stored(labels[row])]
        self._insert(client, name, vectors, np.asarray(sorted(new_rows + relabelled), dtype=np.int64), ids, labels, fields, upsert=True)
        note = f"collection {name!r} updated in place: {len(new_rows)} added, {len(gone)} removed"
        return note + (f", {len(relabelled)} relabelled" if relabelled else "")

    @staticmethod
    def drop_replaced(earlier: Mapping[str, Any], current: Mapping[str, Any], out_dir: Path) -> str | None:
        """After the swap: drop the earlier index's collection on a server if the new index no longer
        uses it. Returns a warning when it could not be dropped (the new index is served all the same)."""
        uri = str(earlier.get("uri", ""))
        if not uri or earlier.get("collection") == current.get("collection") and uri == current.get("uri"):
            return None
        try:
            client = connect(client_uri(uri, out_dir), purpose="drop the replaced collection")
            try:
                if client.has_collection(str(earlier["collection"])):
                    client.drop_collection(str(earlier["collection"]))
            finally:
                client.close()
                release(client_uri(uri, out_dir))
        except Exception as exc:
            return f"the replaced collection {earlier.get('collection')!r} at {uri} could not be dropped ({_message(exc)}); drop it by hand"
        return None


def _wait_indexed(client: Any, name: str, timeout: float = 3600.0) -> None:
    """Until Milvus has indexed every flushed row: a segment still waiting is searched vector by vector."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = client.describe_index(name, VECTOR_FIELD) or {}
        if described.get("state") == "Finished" or int(described.get("pending_index_rows", 0)) == 0:
            return
        time.sleep(0.5)


def _collection_name(out_dir: Path) -> str:
    import hashlib

    base = re.sub(r"\W", "_", out_dir.name, flags=re.ASCII)[:40] or "index"
    return f"lookalike_{base}_{hashlib.sha256(str(out_dir).encode()).hexdigest()[:8]}"


def _stamp() -> str:
    import time

    return f"{int(time.time() * 1000):x}"


class MilvusSearcher:
    """Searches an index's Milvus collection; same surface as :class:`recommender.search.ExactSearcher`.

    ``where`` (canonical, :mod:`recommender.filters`) runs inside Milvus as an expression; a row
    mask without one (``allowed`` alone) is sent as the ids it excludes or keeps, whichever is shorter.
    A query left short of results by the clusters it probed is asked again over every cluster.
    """

    def __init__(self, manifest: Manifest, index_dir: Path, ids: Sequence[str]) -> None:
        self.entry = dict(manifest.search)
        self.index_dir = index_dir
        self.ids = list(ids)
        self.row_of = {item: row for row, item in enumerate(self.ids)}
        self.identity = milvus_identity(manifest)
        self.uri = client_uri(str(self.entry.get("uri", "")), index_dir)
        self.collection = str(self.entry.get("collection", LOCAL_COLLECTION))
        self.fields: dict[str, str] = dict(self.entry.get("fields") or {})
        self.nprobe = int(self.entry.get("nprobe", 1))
        self._client: Any = None
        self._lock = threading.Lock()
        self._size = 0

    def fit(self, vectors: np.ndarray) -> MilvusSearcher:
        """Connect, check that the collection is this index's, and load it; ``vectors`` only give the size."""
        self._size = len(vectors)
        client = connect(self.uri, purpose="search the catalogue")
        try:
            if not client.has_collection(self.collection):
                raise SearchBackendError(f"Milvus at {self.uri} has no collection {self.collection!r}, which this index was built into. Rebuild the index.")
            properties = client.describe_collection(self.collection).get("properties") or {}
            recorded = json.loads(properties.get("lookalike.index") or "{}")
            expected = {**self.identity, "count": len(vectors)}
            if recorded != expected:
                different = sorted(key for key in set(recorded) | set(expected) if recorded.get(key) != expected.get(key))
                raise SearchBackendError(
                    f"The Milvus collection {self.collection!r} at {self.uri} does not belong to this index (it differs in "
                    f"{', '.join(different)}: built from another model or catalogue). Rebuild the index."
                )
            client.load_collection(self.collection)
        except SearchBackendError:
            client.close()
            release(self.uri)
            raise
        except Exception as exc:
            client.close()
            release(self.uri)
            raise SearchBackendError(f"Milvus at {self.uri} could not open the collection {self.collection!r} ({_message(exc)}).") from exc
        self._client = client
        return self

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
                release(self.uri)

    @property
    def size(self) -> int:
        return self._size

    @property
    def projected(self) -> bool:
        return False

    def prepare_projection(self) -> bool:
        return False

    def search(
        self, queries: np.ndarray, k: int = 5, *, exclude: np.ndarray | None = None, allowed: np.ndarray | None = None,
        where: CanonicalWhere = (),
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Top-``k`` rows and cosine similarities per query, as :meth:`ExactSearcher.search` gives them;
        :class:`SearchUnavailableError` when Milvus does not answer."""
        if self._client is None:
            raise SearchUnavailableError("The catalogue search is not connected.")
        queries, wanted, _ = search_request(queries, k, self.size, exclude, allowed)
        if wanted == 0:
            return no_rows(len(queries))
        expression = self._expression(where, allowed)
        # A filter's products crowd a few clusters (shoes in the shoe clusters), so a filtered search
        # scans them all: over the passing products only, which Milvus selects first.
        nprobe = self.nprobe if allowed is None else ALL_CLUSTERS
        rows, scores = self._search(queries, wanted, expression, nprobe)
        short = [i for i, found in enumerate(rows) if (found >= 0).sum() < wanted]
        if short and nprobe < ALL_CLUSTERS:  # the probed clusters held too few
            again_rows, again_scores = self._search(queries[short], wanted, expression, ALL_CLUSTERS)
            rows[short], scores[short] = again_rows, again_scores
        if exclude is not None:
            rows, scores = drop_excluded(rows, scores, np.asarray(exclude), k)
        return rows[:, :k], scores[:, :k]

    def candidates(self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.search(queries, k, allowed=allowed)

    def _search(self, queries: np.ndarray, wanted: int, expression: str, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        def ask() -> Any:
            return self._client.search(
                self.collection, data=[query for query in queries], filter=expression, limit=wanted,
                search_params={"metric_type": "IP", "params": {"nprobe": nprobe}}, timeout=SEARCH_TIMEOUT_S,
            )  # fmt: skip

        try:
            try:
                hits = ask()
            except Exception as exc:
                if getattr(exc, "code", None) != _NOT_LOADED:
                    raise
                self._client.load_collection(self.collection, timeout=SEARCH_TIMEOUT_S)  # a restarted server forgot what was loaded
                hits = ask()
        except Exception as exc:  # pymilvus' own exceptions and gRPC's: the server is gone or refused
            raise SearchUnavailableError(f"The catalogue search (Milvus at {self.uri}) did not answer: {_message(exc)}") from exc
        rows = np.full((len(queries), wanted), -1, dtype=np.int64)
        scores = np.full((len(queries), wanted), -np.inf, dtype=np.float32)
        for i, found in enumerate(hits):
            known = [(self.row_of[hit["id"]], hit["distance"]) for hit in found if hit["id"] in self.row_of][:wanted]
            for j, (row, score) in enumerate(known):
                rows[i, j], scores[i, j] = row, score
        return rows, scores

    def _expression(self, where: CanonicalWhere, allowed: np.ndarray | None) -> str:
        """The Milvus filter: the ``where`` columns it stores, else the rows of ``allowed`` by id."""
        if where and all(column in self.fields for column, _ in where):
            return " and ".join(f"{self.fields[column]} in {_literal(sorted(values))}" for column, values in where)
        if allowed is None:
            return ""
        kept = np.flatnonzero(allowed)
        if len(kept) <= len(allowed) - len(kept):
            return f"{ID_FIELD} in {_literal([self.ids[row] for row in kept])}"
        return f"{ID_FIELD} not in {_literal([self.ids[row] for row in np.flatnonzero(~allowed)])}"


def _literal(values: Sequence[str]) -> str:
    """A list of strings as a Milvus expression writes it: JSON, with non-ASCII characters as they are (Milvus refuses JSON's u-escapes)."""
    return json.dumps(list(values), ensure_ascii=False)


def milvus_identity(manifest: Manifest) -> dict[str, Any]:
    """What the collection must have been built from: the model's fingerprint and the vectors' length."""
    return {
        "weights_fingerprint": manifest.model.weights_fingerprint, "backbone": manifest.model.backbone,
        "runtime": manifest.model.runtime, "vector_dim": manifest.vector_dim, "refinement": manifest.refinement_method,
    }  # fmt: skip
