"""The ``milvus`` kind: the same index interface on Milvus (a server or cluster, or milvus-lite).

One collection per index: ``id`` INT64 primary key, ``code`` BINARY_VECTOR of the code
length (HAMMING metric), ``key``, ``metadata`` (JSON), ``embedding`` and ``thumbnail``
(base64 text) and ``added``. Durability is Milvus's own: there is no SQLite store or
snapshot beside it. Differences from the FAISS kinds are listed in docs/milvus.md.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crossbit.indexer.index import (
    MAX_K,
    Reranked,
    Results,
    _check_ids,
    check_codes,
    check_embeddings,
    rerank,
    vectors_from,
)
from crossbit.indexer.store import Item, StoreLimit, StoreWrite, repeated_items

log = logging.getLogger(__name__)

MILVUS_MAX_K = 16384  # Milvus's topk limit
MAX_TEXT = 65535


def _b64(data: bytes | None) -> str:
    return base64.b64encode(data).decode() if data else ""


class MilvusIndex:
    """A binary index stored in a Milvus collection.

    Args:
        directory: where a milvus-lite database lives when ``uri`` is not given, and where
            the id counter is kept.
        bits: code length.
        uri: ``http://host:19530`` for a Milvus server or cluster, or a local ``.db`` file
            for milvus-lite (default ``directory/milvus.db``).
        collection: collection name (default ``crossbit_<directory name>``).
        index_type: ``BIN_FLAT`` (exact; the only one milvus-lite has) or ``BIN_IVF_FLAT``.
        nlist, nprobe: BIN_IVF_FLAT parameters.
        consistency: Milvus consistency level; ``Strong`` makes an add visible to the next search.
        token: Milvus credentials (``user:password`` or an API key).
    """

    kind = "milvus"

    def __init__(self, directory: str | os.PathLike, bits: int, uri: str | None = None,
                 collection: str | None = None, index_type: str = "BIN_FLAT", nlist: int = 1024,
                 nprobe: int = 16, consistency: str = "Strong", token: str | None = None,
                 threads: int | None = None, snapshot_interval: float | None = None, **_):
        try:
            from pymilvus import DataType, MilvusClient
        except ImportError as exc:
            raise ValueError("index kind 'milvus' needs pymilvus: pip install 'crossbit[milvus]'"
                             ) from exc
        if bits % 8 or bits <= 0:
            raise ValueError(f"bits must be a positive multiple of 8, got {bits}")
        if index_type not in ("BIN_FLAT", "BIN_IVF_FLAT"):
            raise ValueError("index_type must be BIN_FLAT or BIN_IVF_FLAT")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.bits = bits
        self.uri = uri or str(self.directory / "milvus.db")
        self.collection = collection or "crossbit_" + "".join(
            c if c.isalnum() else "_" for c in self.directory.name)
        self.index_type, self.nlist, self.nprobe = index_type, nlist, nprobe
        self.consistency = consistency
        self.requested_kind = "milvus"
        self._lock = threading.Lock()
        self._client = MilvusClient(uri=self.uri, token=token or "")
        if not self._client.has_collection(self.collection):
            schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("code", DataType.BINARY_VECTOR, dim=bits)
            schema.add_field("key", DataType.VARCHAR, max_length=1024)
            schema.add_field("metadata", DataType.VARCHAR, max_length=MAX_TEXT)
            schema.add_field("embedding", DataType.VARCHAR, max_length=MAX_TEXT)
            schema.add_field("thumbnail", DataType.VARCHAR, max_length=MAX_TEXT)
            schema.add_field("added", DataType.DOUBLE)
            params = self._client.prepare_index_params()
            params.add_index(field_name="code", index_type=index_type, metric_type="HAMMING",
                             params={"nlist": nlist} if index_type == "BIN_IVF_FLAT" else {})
            self._client.create_collection(self.collection, schema=schema, index_params=params,
                                           consistency_level=consistency)
            log.info("milvus: created collection %s at %s (%s)", self.collection, self.uri,
                     index_type)
        self._client.load_collection(self.collection)
        self._state = self.directory / "milvus_state.json"
        self.opened_from = f"milvus collection {self.collection} at {self.uri}"

    # -- helpers ----------------------------------------------------------------------------------
    def _next_id(self, n: int) -> int:
        start = 0
        if self._state.exists():
            start = json.loads(self._state.read_text())["next_id"]
        self._state.write_text(json.dumps({"next_id": start + n}))
        return start

    def _query(self, expr: str, fields: list[str], limit: int | None = None) -> list[dict]:
        kwargs = {"limit": limit} if limit is not None else {}
        return self._client.query(self.collection, filter=expr, output_fields=fields,
                                  consistency_level=self.consistency, **kwargs)

    def _by_ids(self, ids: Sequence[int], fields: list[str]) -> list[dict]:
        out = []
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), 1000):
            chunk = ids[start:start + 1000]
            out += self._query(f"id in {chunk}", fields)
        return out

    # -- writes ---------------------------------------------------------------------------------
    def add(self, codes: np.ndarray, ids=None, keys=None, metadata=None, embeddings=None,
            thumbnails=None) -> np.ndarray:
        """Add or replace items (a known key keeps its id); returns their ids."""
        codes = check_codes(codes, self.bits)
        n = len(codes)
        keys = list(keys) if keys is not None else [None] * n
        metadata = list(metadata) if metadata is not None else [None] * n
        if len(keys) != n or len(metadata) != n:
            raise ValueError("keys and metadata need one entry per code")
        if ids is not None:
            ids = _check_ids(np.asarray(ids), n)
        if embeddings is not None:
            embeddings = np.asarray(embeddings, dtype=np.float32)
            if embeddings.shape[0] != n:
                raise ValueError(f"embeddings must have {n} rows")
        if n == 0:
            return np.zeros(0, np.int64)
        with self._lock:
            known = {}
            wanted = sorted({k for k in keys if k})
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                for row in self._query(f"key in {json.dumps(chunk)}", ["id", "key"]):
                    known[row["key"]] = row["id"]
            out = np.empty(n, np.int64)
            fresh = [i for i in range(n) if ids is None and keys[i] not in known]
            base = self._next_id(len(fresh)) if fresh else 0
            for i in range(n):
                if ids is not None:
                    out[i] = ids[i]
                elif keys[i] in known:
                    out[i] = known[keys[i]]
            for j, i in enumerate(fresh):
                out[i] = base + j
            stale = [known[k] for i, k in enumerate(keys) if k in known and known[k] != out[i]]
            if stale:
                self._client.delete(self.collection, ids=stale)
            now = time.time()
            rows = [{"id": int(out[i]), "code": codes[i].tobytes(), "key": keys[i] or "",
                     "metadata": json.dumps(metadata[i] or {}),
                     "embedding": _b64(None if embeddings is None else embeddings[i].tobytes()),
                     "thumbnail": _b64(None if thumbnails is None else thumbnails[i]),
                     "added": now} for i in range(n)]
            self._client.upsert(self.collection, rows)
        return out

    def add_items(self, codes: np.ndarray, ids=None, keys=None, metadata=None, embeddings=None,
                  thumbnails=None, positions=None, previews=None) -> StoreWrite:
        """Per item, as :meth:`BinaryIndex.add_items`: repeats of a key or id in the call are
        refused alone; given ids and assigned ids may be mixed. Previews are not kept
        (the thumbnail stands in for them)."""
        codes = check_codes(codes, self.bits)
        n = len(codes)
        ids = list(ids) if ids is not None else [None] * n
        keys = list(keys) if keys is not None else [None] * n
        refused = repeated_items(keys, ids, positions)
        out = np.full(n, -1, np.int64)
        for given in (True, False):
            rows = [i for i in range(n) if i not in refused and (ids[i] is not None) == given]
            if not rows:
                continue
            out[rows] = self.add(
                codes[rows], ids=[ids[i] for i in rows] if given else None,
                keys=[keys[i] for i in rows],
                metadata=None if metadata is None else [metadata[i] for i in rows],
                embeddings=None if embeddings is None else np.asarray(embeddings)[rows],
                thumbnails=None if thumbnails is None else [thumbnails[i] for i in rows])
        return StoreWrite(out, [], refused,
                          ["refused" if i in refused else "added" for i in range(n)])

    def remove(self, ids: Sequence[int]) -> int:
        """Delete by id; KeyError naming unknown ids (nothing deleted then)."""
        ids = sorted({int(i) for i in np.asarray(ids).ravel()})
        if not ids:
            return 0
        with self._lock:
            present = {r["id"] for r in self._by_ids(ids, ["id"])}
            missing = [i for i in ids if i not in present]
            if missing:
                raise KeyError(f"unknown ids: {missing[:20]}")
            self._client.delete(self.collection, ids=ids)
        return len(ids)

    def ids_for_keys(self, keys: Sequence[str]) -> dict[str, int]:
        keys = [k for k in keys if k]
        if not keys:
            return {}
        return {r["key"]: r["id"] for r in self._query(f"key in {json.dumps(keys)}", ["id", "key"])}

    # -- reads ----------------------------------------------------------------------------------
    def _check_k(self, k: int) -> int:
        limit = min(MILVUS_MAX_K, MAX_K)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= limit:
            raise ValueError(f"k must be between 1 and {limit} for a milvus index, got {k}")
        return int(k)

    def search(self, codes: np.ndarray, k: int, nprobe: int | None = None) -> Results:
        codes = check_codes(codes, self.bits, "query codes")
        k = self._check_k(k)
        params = {"metric_type": "HAMMING", "params": {}}
        if self.index_type == "BIN_IVF_FLAT":
            params["params"]["nprobe"] = int(nprobe or self.nprobe)
        answer = self._client.search(self.collection, data=[c.tobytes() for c in codes],
                                     anns_field="code", limit=k, search_params=params,
                                     output_fields=["id"], consistency_level=self.consistency)
        ids = np.full((len(codes), k), -1, np.int64)
        distances = np.full((len(codes), k), self.bits + 1, np.int32)
        for q, hits in enumerate(answer):
            rows = sorted((int(round(h["distance"])), int(h["id"])) for h in hits)
            for j, (d, i) in enumerate(rows[:k]):
                ids[q, j], distances[q, j] = i, d
        return Results(ids, distances)

    def search_rerank(self, codes, embeddings, k, shortlist=100, nprobe=None) -> Reranked:
        k = self._check_k(k)
        check_embeddings(embeddings, len(codes))
        first = self.search(codes, min(max(k, shortlist), MILVUS_MAX_K), nprobe)
        stored = self.embeddings(np.unique(first.ids[first.ids >= 0]))
        vectors, found = vectors_from(stored, first.ids, np.asarray(embeddings).shape[1])
        return rerank(first, embeddings, vectors, found, k, self.bits)

    def range_search(self, codes: np.ndarray, radius: int):
        """Items within ``radius``: the top 16,384 by distance, filtered (Milvus's topk limit)."""
        codes = check_codes(codes, self.bits, "query codes")
        if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or \
                not 0 <= radius <= self.bits:
            raise ValueError(f"radius must be an int between 0 and {self.bits}, got {radius!r}")
        n = len(self)
        if n == 0:
            return [(np.zeros(0, np.int64), np.zeros(0, np.int32)) for _ in codes]
        res = self.search(codes, min(n, MILVUS_MAX_K))
        return [(i[(i >= 0) & (d <= radius)], d[(i >= 0) & (d <= radius)])
                for i, d in zip(res.ids, res.distances)]

    def items(self, ids: Sequence[int], max_bytes: int | None = None) -> dict[int, Item]:
        out, total = {}, 0
        for r in self._by_ids(ids, ["id", "key", "metadata", "added"]):
            size = len(r["key"] or "") + len(r["metadata"] or "")
            total += size
            if max_bytes is not None and total > max_bytes:
                raise StoreLimit(f"the hits' metadata is over {max_bytes} bytes")
            out[r["id"]] = Item(r["id"], r["key"] or None, json.loads(r["metadata"] or "{}"),
                                r["added"], size)
        return out

    def thumbnail(self, item_id: int) -> bytes | None:
        rows = self._by_ids([item_id], ["thumbnail"])
        if not rows:
            raise KeyError(f"unknown id {item_id}")
        return base64.b64decode(rows[0]["thumbnail"]) if rows[0]["thumbnail"] else None

    def preview(self, item_id: int) -> bytes | None:
        return self.thumbnail(item_id)

    def codes(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        rows = self._by_ids(ids, ["id", "code"])
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, self.bits // 8), np.uint8)
        codes = [r["code"][0] if isinstance(r["code"], list) else r["code"] for r in rows]
        return np.array([r["id"] for r in rows], np.int64), \
            np.frombuffer(b"".join(bytes(c) for c in codes), np.uint8).reshape(len(rows), -1)

    def embeddings(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        return {r["id"]: np.frombuffer(base64.b64decode(r["embedding"]), np.float32)
                for r in self._by_ids(ids, ["id", "embedding"]) if r["embedding"]}

    def page(self, offset: int, limit: int, newest_first: bool = False) -> list[Item]:
        rows = self._query("id >= 0", ["id", "key", "metadata", "added"],
                           limit=None if newest_first else offset + limit)
        rows = sorted(rows, key=lambda r: r["id"], reverse=newest_first)[offset:offset + limit]
        return [Item(r["id"], r["key"] or None, json.loads(r["metadata"] or "{}"), r["added"])
                for r in rows]

    def __len__(self) -> int:
        rows = self._query("", ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def stats(self) -> dict:
        return {"kind": "milvus", "requested_kind": "milvus", "bits": self.bits,
                "items": len(self), "exact": self.index_type == "BIN_FLAT",
                "params": {"uri": self.uri, "collection": self.collection,
                           "index_type": self.index_type, "nlist": self.nlist,
                           "nprobe": self.nprobe, "consistency": self.consistency},
                "opened_from": self.opened_from, "directory": str(self.directory)}

    def snapshot(self) -> bool:
        """Nothing to do: Milvus persists by itself (flush happens on its own schedule)."""
        return True

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing a lost connection is not worth failing shutdown over
            log.debug("milvus close failed", exc_info=True)

    def __enter__(self) -> MilvusIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
