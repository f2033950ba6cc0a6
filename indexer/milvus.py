"""The ``milvus`` kind: the index interface on one Milvus collection, shared by any number of servers.

Each item is one row keyed by Milvus's primary key, so Milvus itself keeps keys unique:
``pk`` is ``k`` + the key's UTF-8 in hex (``i`` + the id for an item without a key; hex
keeps every key out of reach of Milvus's expression parser), and an add is an upsert of
that row: two servers adding one key leave one item. Assigned ids come from Milvus's own
global id allocator (the auto ids of a small ``<collection>_ids`` collection), so servers
never hand out one id twice without talking to each other. The collection's description
records the schema, the code length and the model that made the codes. Durability is
Milvus's: there is no SQLite store or snapshot beside it. docs/milvus.md lists where the
semantics differ from the FAISS kinds.
"""

from __future__ import annotations

import base64
import heapq
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from crossbit.indexer import call_context
from crossbit.indexer.interface import (
    MAX_K,
    Index,
    Results,
    check_codes,
    check_items,
    check_radius,
)
from crossbit.indexer.items import (
    Item,
    StoreLimit,
    StoreWrite,
    repeated_items,
    takes_claimed,
)
from crossbit.indexer.milvus_rows import (
    MilvusUnavailable,
    b64,
    chunks,
    code_bytes,
    connection_trouble,
    id_pk,
    key_pk,
    message,
    pk_chunks,
    quoted,
    same_vector,
)
from crossbit.indexer.milvus_schema import (
    MAX_EMBEDDING_DIM,
    MAX_KEY_BYTES,
    MAX_TEXT,
    CollectionSchema,
)

log = logging.getLogger(__name__)

MILVUS_MAX_K = 16384  # Milvus's topk limit
CONSISTENCY = ("Strong", "Session", "Bounded", "Eventually")
INDEX_TYPES = ("BIN_FLAT", "BIN_IVF_FLAT")
LITE_START_S = 60.0  # how long a milvus-lite database may take to start its server
# pymilvus 2.5 fails to parse a query answer without rows when it asks for an ARRAY field
# (milvus-lite answers that way whatever the fields): it means no rows
EMPTY_ANSWER = "Unsupported data type: 0"


class MilvusIndex(CollectionSchema, Index):
    """A binary index stored in a Milvus collection, consistent across servers.

    Args:
        directory: where a milvus-lite database lives when ``uri`` is not given; nothing
            else is kept there (another server needs nothing from it).
        bits: code length.
        uri: ``http://host:19530`` for a Milvus server or cluster, or a local ``.db`` file
            for milvus-lite (default ``directory/milvus.db``).
        collection: collection name (default ``crossbit_<directory name>``).
        index_type: ``BIN_FLAT`` (exact; the only one milvus-lite has) or ``BIN_IVF_FLAT``.
        nlist, nprobe: BIN_IVF_FLAT parameters.
        consistency: Milvus consistency of searches and item reads: ``Session`` (default:
            this server's own writes are seen at once), ``Bounded``, ``Eventually`` or
            ``Strong``. Reads before writes, deletes and counts are always ``Strong``, and so
            is a search made inside ``call_context.within(fresh=True)``.
        token: Milvus credentials (``user:password`` or an API key).
        database: Milvus database (default ``default``).
        model: the fingerprint of the model making the codes: recorded in a new collection,
            and an existing collection made by another model is refused (ModelMismatch).
        timeout_s: how long a call waits for Milvus when its caller set no deadline.
    """

    kind = "milvus"

    def __init__(self, directory: str | os.PathLike, bits: int, uri: str | None = None,
                 collection: str | None = None, index_type: str = "BIN_FLAT", nlist: int = 1024,
                 nprobe: int = 16, consistency: str = "Session", token: str | None = None,
                 database: str | None = None, model: dict | None = None, timeout_s: float = 10.0,
                 **_):
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:
            raise ValueError("index kind 'milvus' needs pymilvus: pip install 'crossbit[milvus]'"
                             ) from exc
        if bits % 8 or bits <= 0:
            raise ValueError(f"bits must be a positive multiple of 8, got {bits}")
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {', '.join(INDEX_TYPES)}")
        if consistency not in CONSISTENCY:
            raise ValueError(f"consistency must be one of {', '.join(CONSISTENCY)}, "
                             f"got {consistency!r}")
        self.directory = Path(directory)
        self.bits = bits
        if uri is None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.uri = uri or str(self.directory / "milvus.db")
        self.collection = collection or "crossbit_" + "".join(
            c if c.isalnum() else "_" for c in self.directory.name)
        self.allocator = self.collection + "_ids"
        self.index_type, self.nlist, self.nprobe = index_type, nlist, nprobe
        self.consistency, self.timeout_s = consistency, timeout_s
        self.requested_kind = "milvus"
        self._lock = threading.Lock()  # this server's writes in turn (others race in Milvus)
        for name in ("pymilvus.decorators", "pymilvus.milvus_client.milvus_client",
                     "pymilvus.milvus_client._utils",
                     "pymilvus.orm.iterator"):
            # pymilvus logs every failed call at ERROR with its whole traceback; this class
            # reports its own (MilvusUnavailable, one line) and retries the ones it can
            logging.getLogger(name).setLevel(logging.CRITICAL)
        # milvus-lite (a local .db file) starts its own server process on the first connect:
        # on a loaded machine that took over 10 s once in the tests, so it gets a minute
        connect_s = max(timeout_s, LITE_START_S) if self.uri.endswith(".db") else timeout_s
        # its own connection (alias): pymilvus shares one per URI, and closing any client
        # closes it
        kwargs = {"uri": self.uri, "token": token or "", "timeout": connect_s,
                  "alias": f"crossbit-{uuid.uuid4().hex}"}
        if database:
            kwargs["db_name"] = database
        try:
            self._client = MilvusClient(**kwargs)
        except Exception as exc:
            raise MilvusUnavailable(f"cannot reach Milvus at {self.uri} within {connect_s:.0f} s: "
                                    f"{message(exc)}") from None
        self.model = self._open_collection(model)
        self.opened_from = f"milvus collection {self.collection} at {self.uri}"

    # -- the collections ------------------------------------------------------------------------
    def _call(self, fn: Callable, *args, empty=None, **kwargs):
        """One Milvus call, retried (while Milvus is unreachable, or loads the collection again
        after a restart) until just before the caller's deadline; then MilvusUnavailable, so
        the caller hears UNAVAILABLE rather than its own deadline passing. ``empty``: what a
        query returns when pymilvus fails to parse an answer without rows."""
        left = call_context.remaining(self.timeout_s)
        budget = left - min(0.5, 0.2 * left)  # time to answer before the caller gives up
        deadline = time.monotonic() + budget
        back_off, last = 0.05, ""
        while True:
            left = deadline - time.monotonic()
            if left <= 0.01:
                raise MilvusUnavailable(f"Milvus at {self.uri} did not answer within "
                                        f"{max(budget, 0):.1f} s" + (f": {last}" if last else ""))
            try:
                # pymilvus's own retries ignore a float timeout (75 tries, minutes): ours instead
                return fn(*args, timeout=left, retry_times=0, **kwargs)
            except MilvusUnavailable:
                raise
            except Exception as exc:
                text = message(exc)
                if text.endswith(EMPTY_ANSWER) and empty is not None:
                    return empty
                if "not loaded" in text.lower() and fn is not self._client.load_collection:
                    log.warning("milvus: collection %s not loaded (Milvus restarted?); loading",
                                self.collection)
                    try:
                        self._client.load_collection(self.collection, timeout=left, retry_times=0)
                        continue
                    except Exception as again:
                        text = message(again)
                elif not connection_trouble(text):
                    raise MilvusUnavailable(f"Milvus refused the call: {text}") from None
                last = text
                time.sleep(min(back_off, max(0.0, deadline - time.monotonic())))
                back_off = min(2 * back_off, 1.0)

    def _read_level(self) -> str:
        return "Strong" if call_context.fresh() else self.consistency

    def _query(self, expr: str, fields: list[str], level: str, limit: int | None = None
               ) -> list[dict]:
        kwargs = {"limit": limit} if limit is not None else {}
        return list(self._call(self._client.query, self.collection, filter=expr,
                               output_fields=fields, consistency_level=level, empty=[], **kwargs))

    def _by_pks(self, pks: Sequence[str], fields: list[str], level: str = "Strong") -> list[dict]:
        out = []
        for chunk in pk_chunks(sorted(set(pks))):
            out += self._query(f"pk in {quoted(chunk)}", fields, level)
        return out

    def _by_ids(self, ids: Sequence[int], fields: list[str], level: str | None = None
                ) -> list[dict]:
        ids = sorted({int(i) for i in ids})
        out = []
        for chunk in chunks(ids, 5000):
            out += self._query(f"id in {list(chunk)}", fields, level or self._read_level())
        return out

    def _allocate(self, n: int) -> list[int]:
        """``n`` ids no other server is given: Milvus's global allocator, through auto ids."""
        out: list[int] = []
        for chunk in chunks(range(n), 10_000):
            answer = self._call(self._client.insert, self.allocator,
                                [{"v": b"\0"} for _ in chunk])
            ids = [int(i) for i in answer["ids"]]
            self._call(self._client.delete, self.allocator, ids=ids)
            out += ids
        return out

    # -- writes ---------------------------------------------------------------------------------
    def add_items(self, codes: np.ndarray, ids=None, keys=None, metadata=None, embeddings=None,
                  thumbnails=None, positions=None, previews=None) -> StoreWrite:
        """Per item, as :meth:`BinaryIndex.add_items`: an item with a stored key replaces it
        (keeping its id unless one is given), one with a stored id replaces that item;
        repeats of a key or id within the call are refused alone. Previews are not kept
        (the thumbnail stands in for them)."""
        codes, ids, keys, metas, embeddings, thumbnails, _ = check_items(
            codes, self.bits, ids, keys, metadata, embeddings, thumbnails, previews)
        n = len(codes)
        ids = ids if ids is not None else [None] * n
        if embeddings is not None and embeddings.shape[1] > MAX_EMBEDDING_DIM:
            raise ValueError(f"embeddings wider than {MAX_EMBEDDING_DIM} do not fit a Milvus "
                             "array field")
        pos = list(range(n)) if positions is None else list(positions)
        refused = repeated_items(keys, ids, pos)
        for i in range(n):
            if i in refused:
                continue
            if keys[i] is not None and len(keys[i].encode()) > MAX_KEY_BYTES:
                refused[i] = f"key is over {MAX_KEY_BYTES} bytes (the milvus kind's limit)"
            elif len(metas[i].encode()) > MAX_TEXT:
                refused[i] = (f"metadata (with a text item's text) is over {MAX_TEXT} bytes as "
                              "JSON (the milvus kind's limit)")
        live = [i for i in range(n) if i not in refused]
        out = np.full(n, -1, np.int64)
        outcomes = ["refused"] * n
        replaced: list[int] = []
        if not live:
            return StoreWrite(out, replaced, refused, outcomes)
        with self._lock:
            keyed = [i for i in live if keys[i] is not None]
            stored = {r["pk"]: r for r in self._by_pks(
                [key_pk(keys[i]) for i in keyed], ["pk", "id", "code", "metadata", "embedding"])}
            given = sorted({ids[i] for i in live if ids[i] is not None})
            holding: dict[str, int] = {pk: int(r["id"]) for pk, r in stored.items()}
            for r in self._by_ids(given, ["pk", "id"], "Strong") if given else []:
                holding[r["pk"]] = int(r["id"])
            holders: dict[int, set[str]] = {}  # id -> pks of the rows holding it, as the call goes
            for pk, item_id in holding.items():
                holders.setdefault(item_id, set()).add(pk)
            # the store's rule, item by item: later items see what earlier ones did; a new
            # item gets a placeholder (-1, -2...) until Milvus's allocator gives the real ids
            claimed: dict[int, int] = {}
            plan, stale, placeholders = [], set(), 0
            for i in live:
                pk = key_pk(keys[i]) if keys[i] is not None else None
                old = holding.get(pk) if pk is not None else None
                if ids[i] is not None:
                    item_id = ids[i]
                elif old is not None:
                    item_id = old
                else:
                    placeholders += 1
                    item_id = -placeholders
                pk = pk or id_pk(item_id)
                why = takes_claimed(claimed, old, item_id, keys[i], pos)
                if why:
                    refused[i] = why
                    continue
                claimed[item_id] = i
                row = stored.get(pk)
                emb = [] if embeddings is None else embeddings[i].tolist()
                if old == item_id and row is not None and int(row["id"]) == item_id and \
                        code_bytes(row["code"]) == codes[i].tobytes() and \
                        row["metadata"] == metas[i] and same_vector(row["embedding"], emb):
                    out[i], outcomes[i] = item_id, "unchanged"
                    continue
                held = holders.get(item_id, set())
                for other in held - {pk}:  # the id's present item is replaced: its row goes
                    stale.add(other)
                    holding.pop(other, None)
                if old is not None and old != item_id:
                    replaced.append(old)
                    holders[old].discard(pk)
                if held:
                    replaced.append(item_id)
                outcomes[i] = "replaced" if old is not None or held else "added"
                holders[item_id] = {pk}
                holding[pk] = item_id
                plan.append((i, pk, item_id, emb))
            new_ids = self._allocate(placeholders)
            rows, now = [], time.time()
            for i, pk, item_id, emb in plan:
                if item_id < 0:
                    item_id = new_ids[-item_id - 1]
                    pk = pk if keys[i] is not None else id_pk(item_id)
                out[i] = item_id
                thumb = None if thumbnails is None else thumbnails[i]
                rows.append({"pk": pk, "id": item_id, "code": codes[i].tobytes(),
                             "key": keys[i] or "", "metadata": metas[i], "embedding": emb,
                             "thumbnail": b64(thumb), "added": now})
            if stale:
                self._delete_pks(sorted(stale))
            for chunk in chunks(rows, 2000):
                self._call(self._client.upsert, self.collection, list(chunk))
        return StoreWrite(out, replaced, refused, outcomes)

    def _delete_pks(self, pks: Sequence[str]) -> None:
        for chunk in pk_chunks(pks):
            self._call(self._client.delete, self.collection, filter=f"pk in {quoted(chunk)}")

    def remove(self, ids: Sequence[int]) -> int:
        """Delete by id; KeyError naming unknown ids (nothing deleted then)."""
        ids = sorted({int(i) for i in np.asarray(ids).ravel()})
        if not ids:
            return 0
        with self._lock:
            rows = self._by_ids(ids, ["pk", "id"], "Strong")
            present = {int(r["id"]) for r in rows}
            missing = [i for i in ids if i not in present]
            if missing:
                raise KeyError(f"unknown ids: {missing[:20]}")
            self._delete_pks([r["pk"] for r in rows])
        return len(ids)

    def ids_for_keys(self, keys: Sequence[str]) -> dict[str, int]:
        """Stored keys' ids (Strong: what any server has acknowledged)."""
        keys = [k for k in keys if k and len(k.encode()) <= MAX_KEY_BYTES]
        if not keys:
            return {}
        by_pk = {key_pk(k): k for k in keys}
        return {by_pk[r["pk"]]: int(r["id"]) for r in self._by_pks(list(by_pk), ["pk", "id"])}

    # -- reads ----------------------------------------------------------------------------------
    @property
    def max_k(self) -> int:
        return min(MILVUS_MAX_K, MAX_K)

    def _search(self, codes: np.ndarray, k: int, params: dict) -> Results:
        answer = self._call(self._client.search, self.collection,
                            data=[c.tobytes() for c in codes], anns_field="code", limit=k,
                            search_params={"metric_type": "HAMMING", "params": params},
                            output_fields=["id"], consistency_level=self._read_level())
        ids = np.full((len(codes), k), -1, np.int64)
        distances = np.full((len(codes), k), self.bits + 1, np.int32)
        for q, hits in enumerate(answer):
            rows = sorted((int(round(h["distance"])), int(h["entity"]["id"])) for h in hits)
            for j, (d, i) in enumerate(rows[:k]):
                ids[q, j], distances[q, j] = i, d
        return Results(ids, distances)

    def search(self, codes: np.ndarray, k: int, nprobe: int | None = None) -> Results:
        codes = check_codes(codes, self.bits, "query codes")
        k = self.check_k(k)
        params = {"nprobe": int(nprobe or self.nprobe)} if self.index_type == "BIN_IVF_FLAT" \
            else {}
        return self._search(codes, k, params)

    def range_search(self, codes: np.ndarray, radius: int):
        """Items within ``radius`` (Milvus range search; at most 16,384 per query, its topk
        limit, nearest first)."""
        codes = check_codes(codes, self.bits, "query codes")
        radius = check_radius(radius, self.bits)
        params = {"nprobe": self.nlist} if self.index_type == "BIN_IVF_FLAT" else {}
        res = self._search(codes, MILVUS_MAX_K, dict(params, radius=int(radius) + 1,
                                                     range_filter=-1))
        return [(i[(i >= 0) & (d <= radius)], d[(i >= 0) & (d <= radius)])
                for i, d in zip(res.ids, res.distances)]

    def items(self, ids: Sequence[int], max_bytes: int | None = None) -> dict[int, Item]:
        out, total = {}, 0
        for r in self._by_ids(ids, ["id", "key", "metadata", "added"]):
            size = len(r["key"] or "") + len(r["metadata"] or "")
            total += size
            if max_bytes is not None and total > max_bytes:
                raise StoreLimit(f"the hits' metadata is over {max_bytes} bytes")
            out[int(r["id"])] = Item(int(r["id"]), r["key"] or None,
                                     json.loads(r["metadata"] or "{}"), r["added"], size)
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
        return np.array([r["id"] for r in rows], np.int64), \
            np.frombuffer(b"".join(code_bytes(r["code"]) for r in rows),
                          np.uint8).reshape(len(rows), -1)

    def embeddings(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        return {int(r["id"]): np.asarray(r["embedding"], np.float32)
                for r in self._by_ids(ids, ["id", "embedding"]) if len(r["embedding"])}

    def _all_ids(self) -> Iterator[int]:
        iterator = self._call(self._client.query_iterator, self.collection, batch_size=10_000,
                              filter="id >= 0", output_fields=["id"],
                              consistency_level=self._read_level(), empty=False)
        if iterator is False:  # the collection is empty
            return
        try:
            while True:
                try:
                    batch = iterator.next()
                except Exception as exc:
                    if message(exc).endswith(EMPTY_ANSWER):
                        return
                    raise MilvusUnavailable(f"Milvus at {self.uri}: {message(exc)}") from None
                if not batch:
                    return
                yield from (int(r["id"]) for r in batch)
        finally:
            iterator.close()

    def page(self, offset: int, limit: int, newest_first: bool = False) -> list[Item]:
        """Items in id order (assigned ids grow with time, so newest first is highest first).

        Reads every id once per page: fine for browsing, not for millions per second.
        """
        pick = heapq.nlargest if newest_first else heapq.nsmallest
        wanted = pick(offset + limit, self._all_ids())[offset:]
        found = self.items(wanted)
        return [found[i] for i in wanted if i in found]

    def __len__(self) -> int:
        rows = self._query("", ["count(*)"], "Strong")
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
