"""Filtered search, counts, selections, scrolling and metadata updates of the FAISS kinds (mixed into
``BinaryIndex``): a filter becomes a bitmap of slots in the attribute index, and the exact scan
reads only those slots' codes with crossbit's kernel; IVF and HNSW choose per query."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence

import numpy as np

from crossbit.indexer import attribute_snapshot
from crossbit.indexer.attributes import AttributeIndex, metadata_of
from crossbit.indexer.filters import Filter
from crossbit.indexer.hamming import top_k, words
from crossbit.indexer.hamming_filtered import distances_in, is_member, member_bits, top_k_in
from crossbit.indexer.items import Item
from crossbit.indexer.metadata_rule import check_metadata

log = logging.getLogger(__name__)

# IVF and HNSW choose per call from the filter's share of the items (bench/filter_bench.py,
# 1M clustered 64-bit codes, nlist 4096 / nprobe 16, HNSW M 16 / efSearch 64): under
# EXACT_BELOW the exact filtered scan is both exact and no slower than an approximate search
# that would keep recall@10 >= 0.95 (IVF needs 4x its probes and 2x over-fetch at a 50% filter
# for 0.99, and could not reach 0.95 at 10% even so); above it the approximate search fetches
# OVERFETCH x k / share candidates (IVF with NPROBE_BOOST x the probes) and keeps the matching
# ones, and any query left short of min(k, matches) gets the exact scan.
EXACT_BELOW = {"ivf": 0.3, "hnsw": 0.3}
OVERFETCH = {"ivf": 2.0, "hnsw": 4.0}
NPROBE_BOOST = 4


_PLAIN = (str, int, float)


def plain_metadata(meta) -> bool:
    """Whether a caller's metadata dict is exactly what its JSON reads back as (string keys;
    strings, bools, ints, floats, lists of strings), so that it can be indexed without
    parsing the JSON stored for it."""
    if meta is None or type(meta) is not dict:
        return meta is None
    for name, value in meta.items():
        if type(name) is not str:
            return False
        t = type(value)
        if t is list:
            if any(type(e) is not str for e in value):
                return False
        elif t not in _PLAIN and t is not bool:
            return False
    return True


def check_filter(flt) -> Filter | None:
    if flt is None or isinstance(flt, Filter):
        return flt
    raise TypeError(f"filter must be a crossbit.indexer.filters.Filter (parse the expression "
                    f"first), got {type(flt).__name__}")


class FilteredIndex:
    """The filter side of :class:`~crossbit.indexer.index.BinaryIndex`; it uses the index's
    ``store``, ``backend``, ``attributes``, ``_lock``, ``bits`` and ``directory``."""

    attributes: AttributeIndex

    # -- the attribute index ----------------------------------------------------------------------
    def _open_attributes(self) -> None:
        """The attribute index: its snapshot brought up to the store, or, when that cannot be
        trusted (missing, damaged, ahead of the store, its log gone), rebuilt from the store."""
        start = time.perf_counter()
        attributes, how = None, "rebuilt"
        if not self.opened_from.startswith("rebuilt"):  # else the store changed under the snapshots
            attributes, how = attribute_snapshot.load(self.directory, self.store, self.bits,
                                                      self._index_rows)
        if attributes is None:
            why = how
            attributes = AttributeIndex(self.bits)
            attributes.load(self.store.iter_rows())
            how = f"rebuilt from the store ({why})"
        self.attributes = attributes
        self.attributes_from = how
        log.info("index %s: attribute index of %d items, %d fields %s in %.2fs", self.directory,
                 len(attributes), len(attributes.fields), how, time.perf_counter() - start)

    def _index_rows(self, attrs: AttributeIndex, rows: list[tuple]) -> None:
        index_rows(attrs, rows)

    # -- searches -----------------------------------------------------------------------------
    def _filtered_search(self, codes: np.ndarray, k: int, nprobe, flt: Filter):
        """(ids, distances) of the k nearest matching items of each query (under the read lock)."""
        attrs = self.attributes
        found = attrs.select_slots(flt)
        matches, total = len(found), len(attrs)
        if matches and matches == total and self.backend.exact:  # the filter excludes nothing
            return self.backend.search(codes, k, nprobe)
        if not matches:
            return (np.full((len(codes), k), -1, np.int64),
                    np.full((len(codes), k), self.bits + 1, np.int32))
        kind = self.backend.kind
        if self.backend.exact or matches < EXACT_BELOW.get(kind, 1.0) * total:
            return self._exact_in(codes, k, found)
        share = matches / total
        fetch = int(min(getattr(self.backend, "max_k", 1 << 30), total,
                        max(k, math.ceil(OVERFETCH.get(kind, 3.0) * k / share))))
        if kind == "ivf":
            nprobe = NPROBE_BOOST * int(nprobe or self.backend.default_nprobe)
        ids, distances = self.backend.search(codes, fetch, nprobe)
        ids = np.asarray(ids, np.int64)
        slots = attrs.slots_of(ids.ravel())
        if len(slots) <= 4096:  # a few candidates: asked of the bitmap one by one
            keep = np.fromiter((s >= 0 and int(s) in found for s in slots.tolist()), bool,
                               len(slots)).reshape(ids.shape)
        else:
            keep = is_member(member_bits(found, attrs.n), slots).reshape(ids.shape)
        keep &= ids >= 0
        out_ids = np.full((len(codes), k), -1, np.int64)
        out_d = np.full((len(codes), k), self.bits + 1, np.int32)
        short = []
        for q in range(len(codes)):
            got = np.flatnonzero(keep[q])[:k]
            out_ids[q, :len(got)], out_d[q, :len(got)] = ids[q, got], distances[q, got]
            if len(got) < min(k, matches):
                short.append(q)
        if short:  # never short of min(k, matches): those queries get the exact scan
            ids2, d2 = self._exact_in(codes[short], k, found)
            out_ids[short], out_d[short] = ids2, d2
        return out_ids, out_d

    def _exact_in(self, codes: np.ndarray, k: int, found):
        attrs = self.attributes
        packed = attrs.packed(found)
        if packed is not None:  # a filter used again: its codes side by side, a plain scan
            held, slots = packed
            at, distances = top_k(words(codes), held, k, 1, len(slots))
            slots = np.where(at >= 0, slots[np.clip(at, 0, None)], -1)
        else:
            slots, distances = top_k_in(words(codes), attrs.codes, attrs.n, found, k,
                                        attrs.serialized(found))
        ids = np.where(slots >= 0, attrs.ids[np.clip(slots, 0, None)], -1)
        return ids, distances

    def _filtered_range(self, codes: np.ndarray, radius: int, flt: Filter):
        return self._range_in(codes, radius, self.attributes.select_slots(flt))

    def _complete(self, codes: np.ndarray, k: int, ids: np.ndarray, distances: np.ndarray):
        """An approximate kind's answer, with every query left short of min(k, items) answered
        by the exact scan instead (IVF lists left unprobed after deletes, HNSW graphs cut
        apart): never fewer hits than items, at any size."""
        ids = np.asarray(ids, np.int64)
        want = min(k, len(self.attributes))
        short = np.flatnonzero((ids >= 0).sum(1) < want)
        if len(short):
            ids, distances = ids.copy(), np.array(distances, copy=True)
            ids[short], distances[short] = self._exact_in(codes[short], k, self.attributes.live)
        return ids, distances

    def _range_in(self, codes: np.ndarray, radius: int, found):
        attrs = self.attributes
        slots = np.frombuffer(found.to_array(), np.uint32).astype(np.int64)
        out = []
        for query in words(codes):
            d = distances_in(query, attrs.codes, slots)
            hit = d <= radius
            ids, dist = attrs.ids[slots[hit]], d[hit]
            order = np.lexsort((ids, dist))
            out.append((ids[order], dist[order].astype(np.int32)))
        return out

    # -- counts, selections, scrolling --------------------------------------------------------------
    def count(self, filter: Filter | None = None) -> int:
        """How many items match (all items when ``filter`` is None)."""
        flt = check_filter(filter)
        with self._lock.read():
            return len(self.attributes) if flt is None else len(self.attributes.select_slots(flt))

    def select(self, filter: Filter, limit: int | None = None) -> np.ndarray:
        """The int64 ids of the matching items, ascending (the first ``limit`` of them)."""
        flt = check_filter(filter)
        if flt is None:
            raise TypeError("select needs a filter")
        with self._lock.read():
            attrs = self.attributes
            slots = np.frombuffer(attrs.select_slots(flt).to_array(), np.uint32)
            ids = np.sort(attrs.ids[slots])
        return ids if limit is None else ids[:max(0, int(limit))]

    def scroll(self, after: int | None, limit: int, filter: Filter | None = None) -> list[Item]:
        """Items with id > ``after`` (all when None) in ascending id order, at most ``limit``,
        matching ``filter``: keyset paging, so an item that exists for the whole scroll is
        seen exactly once whatever others write meanwhile."""
        flt = check_filter(filter)
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
            raise ValueError(f"limit must be a positive int, got {limit!r}")
        if flt is None:
            return self.store.scroll(after, int(limit))
        with self._lock.read():
            ids = self._ids_after(after, int(limit), flt)
            found = self.store.items(ids)
        return [found[i] for i in ids.tolist() if i in found]

    def _ids_after(self, after, limit: int, flt: Filter) -> np.ndarray:
        """The first ``limit`` matching ids above ``after``, read from the id column in id
        order, in windows sized by the filter's share (memory stays flat)."""
        attrs = self.attributes
        found = attrs.select_slots(flt)
        if not found:
            return np.zeros(0, np.int64)
        lo = None if after is None else int(after)
        if len(found) <= 4 * limit:  # few matches: sort them all
            ids = np.sort(attrs.ids[np.frombuffer(found.to_array(), np.uint32)])
            return ids[ids > lo][:limit] if lo is not None else ids[:limit]
        share = len(found) / max(1, len(attrs))
        window = int(min(1 << 20, max(4 * limit, 2 * limit / share)))
        bits = member_bits(found, attrs.n)
        out: list[np.ndarray] = []
        got = 0
        while got < limit and lo is not False:
            ids, slots, last = attrs.id_col.window(lo, window)
            keep = is_member(bits, slots.astype(np.int64))
            out.append(ids[keep])
            got += int(keep.sum())
            lo = False if last is None else int(last)
        ids = np.concatenate(out) if out else np.zeros(0, np.int64)
        return ids[:limit]

    # -- metadata updates ---------------------------------------------------------------------------
    def update_metadata(self, ids: Sequence[int], set_fields: dict | None = None,
                        remove_fields: Sequence[str] = (), replace: bool = False) -> int:
        """Change items' metadata, codes untouched: merge ``set_fields`` into it and drop
        ``remove_fields``, or make it ``set_fields`` alone when ``replace``.

        Args:
            ids: the items (unknown ids are skipped: the caller reports them).
            set_fields: fields to set, checked by :func:`check_metadata`.
            remove_fields: names of fields to remove.
            replace: replace the whole metadata with ``set_fields``.

        Returns:
            how many items changed.
        """
        self._check_open()
        fields = check_metadata(set_fields)
        if isinstance(remove_fields, str):
            raise TypeError("remove_fields is a list of field names, not one string")
        dropped = [str(f) for f in remove_fields]
        ids = np.unique(np.asarray(ids, np.int64).ravel())

        def change(stored: str) -> str:
            meta = {} if replace else metadata_of(stored)
            meta.update(fields)
            for name in dropped:
                meta.pop(name, None)
            return json.dumps(meta)

        with self._lock.write():
            changed = self.store.update_metadata(ids.tolist(), change)
            if changed:
                self.attributes.set_metadata(np.array(list(changed), np.int64),
                                             [json.loads(m) for m in changed.values()])
                self._changes += len(changed)
        return len(changed)

    def _attribute_stats(self) -> dict:
        return {**self.attributes.stats(), "opened_from": self.attributes_from}


def index_rows(attrs: AttributeIndex, rows: list[tuple]) -> None:
    """Put stored rows (id, key, code blob, metadata as JSON or as a plain dict) into an
    attribute index."""
    if not rows:
        return
    codes = np.frombuffer(b"".join(r[2] for r in rows), np.uint8).reshape(len(rows), -1)
    attrs.add(np.array([r[0] for r in rows], np.int64), [r[1] for r in rows],
              [r[3] if isinstance(r[3], dict) else metadata_of(r[3]) for r in rows], codes)
