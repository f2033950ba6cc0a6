"""The milvus kind's reads: searches, hash lookups, stored items, pages and counts (mixed into
``MilvusIndex``, whose ``_call``, ``_query``, ``_by_ids``, ``_read_level`` and ``_client`` they use)."""

from __future__ import annotations

import base64
import heapq
import json
from collections.abc import Iterator, Sequence

import numpy as np

from crossbit.indexer.filters import Filter
from crossbit.indexer.interface import MAX_K, Results, check_codes, check_radius
from crossbit.indexer.items import Item, StoreLimit
from crossbit.indexer.milvus_filters import to_milvus
from crossbit.indexer.milvus_rows import MilvusUnavailable, code_bytes, message

MILVUS_MAX_K = 16384  # Milvus's topk limit
MAX_ID = 2**63 - 1
SCROLL_ROWS = 16384  # ids read by one query of a scroll (Milvus's query window)
# pymilvus 2.5 fails to parse a query answer without rows when it asks for an ARRAY field
# (milvus-lite answers that way whatever the fields): it means no rows
EMPTY_ANSWER = "Unsupported data type: 0"


class MilvusReads:
    """Reads of one Milvus collection of crossbit rows."""

    @property
    def max_k(self) -> int:
        return min(MILVUS_MAX_K, MAX_K)

    def _expr(self, flt) -> str:
        """The Milvus expression of a filter ("" for none)."""
        if flt is None:
            return ""
        if not isinstance(flt, Filter):
            raise TypeError(f"filter must be a crossbit.indexer.filters.Filter (parse the "
                            f"expression first), got {type(flt).__name__}")
        return to_milvus(flt, lite=self.uri.endswith(".db"))

    def _search(self, codes: np.ndarray, k: int, params: dict, expr: str = "") -> Results:
        answer = self._call(self._client.search, self.collection,
                            data=[c.tobytes() for c in codes], anns_field="code", limit=k,
                            search_params={"metric_type": "HAMMING", "params": params},
                            output_fields=["id"], consistency_level=self._read_level(),
                            filter=expr, empty=[[] for _ in codes])
        ids = np.full((len(codes), k), -1, np.int64)
        distances = np.full((len(codes), k), self.bits + 1, np.int32)
        for q, hits in enumerate(answer):
            rows = sorted((int(round(h["distance"])), int(h["entity"]["id"])) for h in hits)
            for j, (d, i) in enumerate(rows[:k]):
                ids[q, j], distances[q, j] = i, d
        return Results(ids, distances)

    def search(self, codes: np.ndarray, k: int, nprobe: int | None = None,
               filter: Filter | None = None) -> Results:
        """The k nearest (matching) items: Milvus evaluates the filter; with BIN_IVF_FLAT a query
        left short of min(k, matches) is searched again over every list."""
        codes = check_codes(codes, self.bits, "query codes")
        k = self.check_k(k)
        expr = self._expr(filter)
        ivf = self.index_type == "BIN_IVF_FLAT"
        res = self._search(codes, k, {"nprobe": int(nprobe or self.nprobe)} if ivf else {}, expr)
        if ivf and expr:
            found = (res.ids >= 0).sum(axis=1)
            if (found < k).any():
                short = np.flatnonzero(found < min(k, self.count(filter)))
                if len(short):
                    again = self._search(codes[short], k, {"nprobe": self.nlist}, expr)
                    res.ids[short], res.distances[short] = again.ids, again.distances
        return res

    def range_search(self, codes: np.ndarray, radius: int, filter: Filter | None = None):
        """Items within ``radius`` (Milvus range search; at most 16,384 per query, its topk
        limit, nearest first)."""
        codes = check_codes(codes, self.bits, "query codes")
        radius = check_radius(radius, self.bits)
        params = {"nprobe": self.nlist} if self.index_type == "BIN_IVF_FLAT" else {}
        res = self._search(codes, MILVUS_MAX_K, dict(params, radius=int(radius) + 1,
                                                     range_filter=-1), self._expr(filter))
        return [(i[(i >= 0) & (d <= radius)], d[(i >= 0) & (d <= radius)])
                for i, d in zip(res.ids, res.distances)]

    def count(self, filter: Filter | None = None) -> int:
        """How many items match (Strong: every acknowledged write)."""
        rows = self._query(self._expr(filter), ["count(*)"], "Strong")
        return int(rows[0]["count(*)"]) if rows else 0

    def select(self, filter: Filter, limit: int | None = None) -> np.ndarray:
        """The ids of the matching items, ascending (read through a query iterator, Strong)."""
        if filter is None:
            raise TypeError("select needs a filter")
        ids = np.fromiter(self._all_ids(self._expr(filter), "Strong"), np.int64)
        ids.sort()
        return ids if limit is None else ids[:max(0, int(limit))]

    def scroll(self, after: int | None, limit: int, filter: Filter | None = None) -> list[Item]:
        """Matching items with id > ``after`` in id order, at most ``limit``.

        Milvus has no ORDER BY: each page reads the ids in a window of the id range and keeps
        the lowest; the window adapts to what the last ones held (ids spread over 63 bits on
        this kind), so a page costs a few queries wherever the scroll stands.
        """
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        expr = self._expr(filter)
        lo = -1 if after is None else int(after)
        width = getattr(self, "_scroll_width", None) or max(1, MAX_ID // max(1, len(self)) * limit)
        got: list[int] = []
        while len(got) < limit and lo < MAX_ID:
            hi = min(MAX_ID, lo + width)
            rows = self._query(f"id > {lo} and id <= {hi}" + (f" and ({expr})" if expr else ""),
                               ["id"], self._read_level(), limit=SCROLL_ROWS)
            if len(rows) >= SCROLL_ROWS and width > 1:  # too wide to read whole: narrow it
                width = max(1, width // 8)
                continue
            got += [int(r["id"]) for r in rows]
            lo = hi
            if len(rows) < limit // 2:
                width = min(MAX_ID, width * 4)
        self._scroll_width = width
        wanted = sorted(got)[:limit]
        found = self.items(wanted)
        return [found[i] for i in wanted if i in found]

    def items(self, ids: Sequence[int], max_bytes: int | None = None) -> dict[int, Item]:
        out, total = {}, 0
        for r in self._by_ids(ids, ["id", "key", "metadata", "added"]):
            meta = r["metadata"] or {}
            size = len(r["key"] or "") + len(json.dumps(meta))
            total += size
            if max_bytes is not None and total > max_bytes:
                raise StoreLimit(f"the hits' metadata is over {max_bytes} bytes")
            out[int(r["id"])] = Item(int(r["id"]), r["key"] or None, meta, r["added"], size)
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

    def _all_ids(self, expr: str = "", level: str | None = None) -> Iterator[int]:
        iterator = self._call(self._client.query_iterator, self.collection, batch_size=10_000,
                              filter=f"id >= 0 and ({expr})" if expr else "id >= 0",
                              output_fields=["id"], consistency_level=level or self._read_level(),
                              empty=False)
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
                "opened_from": self.opened_from, "directory": str(self.directory),
                "attribute_index": {"evaluated_by": "milvus"}}
