"""The ``milvus`` kind: the index interface on one Milvus collection, shared by any number of servers.

Each item is one row whose primary key is the item's id, so Milvus itself keeps ids unique
whoever writes them, and an add is an upsert: writing an id that is held replaces the item
holding it, on every server at once. A keyed item's id is a hash of its key (``key_id``),
so every server gives one key the same id and two servers adding it leave one row; an item
with neither key nor id gets an id from Milvus's own global allocator (the auto ids of a
small ``<collection>_ids`` collection), so servers never hand out one id twice without
talking to each other. The collection's description records the schema, the code length
and the model that made the codes. Durability is Milvus's: there is no SQLite store or
snapshot beside it. docs/milvus.md lists where the semantics differ from the FAISS kinds.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from crossbit.indexer import call_context
from crossbit.indexer.interface import Index, check_items
from crossbit.indexer.items import StoreWrite, repeated_items, takes_claimed
from crossbit.indexer.metadata_rule import check_metadata
from crossbit.indexer.milvus_reads import EMPTY_ANSWER, MilvusReads
from crossbit.indexer.milvus_rows import (
    MilvusUnavailable,
    b64,
    chunks,
    code_bytes,
    connection_trouble,
    key_id,
    message,
    same_vector,
)
from crossbit.indexer.milvus_schema import (
    ASSIGNED_FROM,
    MAX_EMBEDDING_DIM,
    MAX_KEY_BYTES,
    MAX_TEXT,
    CollectionSchema,
)

log = logging.getLogger(__name__)
DELETES_SETTLE_S = 5.0  # reads are Strong this long after a delete through this server

CONSISTENCY = ("Strong", "Session", "Bounded", "Eventually")
INDEX_TYPES = ("BIN_FLAT", "BIN_IVF_FLAT")
LITE_START_S = 60.0  # how long a milvus-lite database may take to start its server


class MilvusIndex(CollectionSchema, MilvusReads, Index):
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
        self._deleted_at = float("-inf")  # when this server last deleted (see _read_level)
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
        # Session reads right after this client's delete still saw the deleted rows (Milvus
        # 2.3.5; pymilvus records the delete's timestamp, the server does not hold the read
        # back for it), so reads are Strong for a while after this server deleted
        recent = time.monotonic() - self._deleted_at < DELETES_SETTLE_S
        return "Strong" if call_context.fresh() or (recent and self.consistency == "Session") \
            else self.consistency

    def _query(self, expr: str, fields: list[str], level: str, limit: int | None = None
               ) -> list[dict]:
        kwargs = {"limit": limit} if limit is not None else {}
        return list(self._call(self._client.query, self.collection, filter=expr,
                               output_fields=fields, consistency_level=level, empty=[], **kwargs))

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
        """Per item, as :meth:`BinaryIndex.add_items`, with the id as Milvus's primary key: a
        keyed item lives at its key's id (:func:`key_id`), an item with a caller id at that
        id, one with neither at an id from Milvus's allocator; writing an id that is held
        replaces the item holding it. A key with a caller id is refused alone (the key
        decides the id here); so are repeats of a key or id within the call. Previews are
        not kept (the thumbnail stands in for them)."""
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
            if keys[i] is not None and ids[i] is not None:
                refused[i] = (f"key {keys[i]!r} with id {ids[i]}: on the milvus kind a keyed item "
                              "takes its key's id (so that every server gives a key the same id "
                              "without asking the others); send the key or the id, not both")
            elif ids[i] is not None and ids[i] >= ASSIGNED_FROM:
                refused[i] = (f"id {ids[i]}: on the milvus kind caller ids are below 2**58 "
                              f"({ASSIGNED_FROM}); ids from there up are Milvus's allocator's, "
                              "given to items with neither key nor id")
            elif keys[i] is not None and len(keys[i].encode()) > MAX_KEY_BYTES:
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
        target = {i: key_id(keys[i]) if keys[i] is not None else ids[i] for i in live}
        with self._lock:
            # the allocator's ids are read with the rest: one that a key's hash happens to hold
            # (about 2**-63 per pair) is skipped, never overwritten
            need = sum(t is None for t in target.values())
            fresh = self._allocate(need)
            wanted = sorted({t for t in target.values() if t is not None} | set(fresh))
            fields = ["id", "key", "code", "metadata", "embedding"]
            stored = {int(r["id"]): r for r in self._by_ids(wanted, fields, "Strong")}
            while any(f in stored for f in fresh):
                fresh = [f for f in fresh if f not in stored]
                more = self._allocate(need - len(fresh))
                stored.update({int(r["id"]): r for r in self._by_ids(more, fields, "Strong")})
                fresh += more
            new_ids = iter(fresh)
            claimed: dict[int, int] = {}
            rows, now = [], time.time()
            for i in live:
                item_id = target[i] if target[i] is not None else next(new_ids)
                row = stored.get(item_id)
                old = item_id if keys[i] is not None and row is not None and \
                    row["key"] == keys[i] else None
                why = takes_claimed(claimed, old, item_id, keys[i], pos)
                if why:
                    refused[i] = why
                    continue
                claimed[item_id] = i
                out[i] = item_id
                emb = [] if embeddings is None else embeddings[i].tolist()
                meta = json.loads(metas[i])
                if old is not None:  # a re-add keeps the stored fields it does not send
                    meta = {**(row["metadata"] or {}), **meta}
                if old is not None and code_bytes(row["code"]) == codes[i].tobytes() and \
                        row["metadata"] == meta and same_vector(row["embedding"], emb):
                    outcomes[i] = "unchanged"
                    continue
                if row is not None:
                    replaced.append(item_id)
                outcomes[i] = "replaced" if row is not None else "added"
                thumb = None if thumbnails is None else thumbnails[i]
                rows.append({"id": item_id, "code": codes[i].tobytes(), "key": keys[i] or "",
                             "metadata": meta, "embedding": emb, "thumbnail": b64(thumb),
                             "added": now})
            for chunk in chunks(rows, 2000):
                self._call(self._client.upsert, self.collection, list(chunk))
        return StoreWrite(out, replaced, refused, outcomes)

    def remove(self, ids: Sequence[int]) -> int:
        """Delete by id; KeyError naming unknown ids (nothing deleted then)."""
        ids = sorted({int(i) for i in np.asarray(ids).ravel()})
        if not ids:
            return 0
        with self._lock:
            present = {int(r["id"]) for r in self._by_ids(ids, ["id"], "Strong")}
            missing = [i for i in ids if i not in present]
            if missing:
                raise KeyError(f"unknown ids: {missing[:20]}")
            for chunk in chunks(ids, 5000):
                self._call(self._client.delete, self.collection, ids=list(chunk))
                self._deleted_at = time.monotonic()
        return len(ids)

    def update_metadata(self, ids: Sequence[int], set_fields: dict | None = None,
                        remove_fields: Sequence[str] = (), replace: bool = False) -> int:
        """As :meth:`BinaryIndex.update_metadata`: the rows are read (Strong) and upserted again
        with the new metadata, everything else as it was; unknown ids are skipped."""
        fields = check_metadata(set_fields)
        if isinstance(remove_fields, str):
            raise TypeError("remove_fields is a list of field names, not one string")
        dropped = [str(f) for f in remove_fields]
        changed = []
        with self._lock:
            for row in self._by_ids([int(i) for i in np.asarray(ids).ravel()],
                                    ["id", "code", "key", "metadata", "embedding", "thumbnail",
                                     "added"], "Strong"):
                meta = {} if replace else dict(row["metadata"] or {})
                meta.update(fields)
                for name in dropped:
                    meta.pop(name, None)
                if json.dumps(meta) == json.dumps(row["metadata"] or {}):
                    continue
                changed.append({"id": int(row["id"]), "code": code_bytes(row["code"]),
                                "key": row["key"], "metadata": meta,
                                "embedding": list(row["embedding"]), "thumbnail": row["thumbnail"],
                                "added": row["added"]})
            for chunk in chunks(changed, 2000):
                self._call(self._client.upsert, self.collection, list(chunk))
        return len(changed)

    def ids_for_keys(self, keys: Sequence[str]) -> dict[str, int]:
        """Stored keys' ids (Strong: what any server has acknowledged)."""
        by_id = {key_id(k): k for k in keys if k and len(k.encode()) <= MAX_KEY_BYTES}
        if not by_id:
            return {}
        return {by_id[int(r["id"])]: int(r["id"]) for r in self._by_ids(list(by_id), ["id", "key"],
                                                                        "Strong")
                if r["key"] == by_id[int(r["id"])]}

    def drop(self) -> None:
        """Remove this index's collection and its id allocator from Milvus (every item goes)."""
        for name in (self.collection, self.allocator):
            if self._call(self._client.has_collection, name):
                self._call(self._client.drop_collection, name)

    def snapshot(self) -> bool:
        """Nothing to do: Milvus persists by itself (flush happens on its own schedule)."""
        return True

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing a lost connection is not worth failing shutdown over
            log.debug("milvus close failed", exc_info=True)
