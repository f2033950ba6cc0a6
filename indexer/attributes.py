"""The attribute index of the FAISS kinds: every item's id, key, metadata and code by slot, in memory,
so that a filter becomes a compressed bitmap of slots and the filtered scan reads only those codes.

A slot is an item's place here (slots of removed items are given to new ones); the bitmaps are
of slots, the codes are kept word-major by slot for crossbit's kernel (``hamming_filtered``).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

import numpy as np
from pyroaring import BitMap

from crossbit.indexer.attribute_columns import Column, bitmap, bitmap_bytes
from crossbit.indexer.attribute_eval import evaluate
from crossbit.indexer.attribute_values import MAX_DISTINCT, Values
from crossbit.indexer.filter_nodes import Node
from crossbit.indexer.filters import Filter
from crossbit.indexer.hamming import words

EXACT_FLOAT = 2**53  # integers up to this size are exact as float64
INT64_MAX = 2**63 - 1
CACHE = 64  # evaluated filters kept (per write version)
PACK_MAX = 65_536  # a cached filter with at most this many matches gets its codes packed...
PACKED = 16  # ...for at most this many filters at once


class FieldColumns:
    """One metadata field: which slots have it, and its values by type (each a :class:`Values`
    while it has few distinct values, a sorted :class:`Column` past that)."""

    TYPES = (("str", object), ("num", np.float64), ("big", np.int64), ("bool", np.int64),
             ("tag", object))

    def __init__(self):
        self.present = BitMap()
        self.str = Values(object)
        self.num = Values(np.float64)  # floats, and ints exact as floats
        self.big = Values(np.int64)  # ints past 2**53 (exact as int64)
        self.bool = Values(np.int64)  # 0 / 1
        self.tag = Values(object)  # the strings of list values, one entry each
        self.odd: dict[int, object] = {}  # slot -> an int past int64 (old stores): tested in Python

    def columns(self) -> tuple:
        return (self.str, self.num, self.big, self.bool, self.tag)

    def put(self, kind: str, slots: np.ndarray, vals: np.ndarray) -> None:
        """Add entries of one type: to its :class:`Values` while it keeps few distinct values,
        else to a sorted :class:`Column` (made here, at once when the values come many)."""
        column = getattr(self, kind)
        if isinstance(column, Values):
            distinct = len(set(vals.tolist())) if vals.dtype.kind == "O" else len(np.unique(vals))
            if column.distinct() + distinct > MAX_DISTINCT:  # a sorted column from the start
                if not len(column):
                    column = Column(vals.dtype)
                    column.load(vals, slots, presorted=False)
                    setattr(self, kind, column)
                    return
                column = column.as_column()
                setattr(self, kind, column)
        column.add(slots, vals)
        if isinstance(column, Values) and column.distinct() > MAX_DISTINCT:
            setattr(self, kind, column.as_column())


class AttributeIndex:
    """Ids, keys, metadata and codes of every item by slot, kept in step with the store.

    Every method that changes it runs under the owning index's write lock; ``select_slots``
    and the reads run under its read lock.
    """

    def __init__(self, bits: int):
        self.bits = bits
        self.words = -(-bits // 64)
        self.n = 0  # slots handed out (live or free)
        self.ids = np.full(1024, -1, np.int64)
        self.codes = np.zeros((self.words, 1024), np.uint64)
        self.live = BitMap()
        self.free = BitMap()
        self.id_col = Column(np.int64, tree=False)
        self.key_col = Column(object)
        self.fields: dict[str, FieldColumns] = {}
        self.version = 0
        self._cache: OrderedDict = OrderedDict()
        self._cache_lock = threading.Lock()
        self._extras: dict = {}  # filter text -> what is kept beside its cached bitmap

    def __len__(self) -> int:
        return len(self.live)

    # -- writes -------------------------------------------------------------------------------
    def _take_slots(self, n: int) -> np.ndarray:
        reuse = min(n, len(self.free))
        slots = np.empty(n, np.int64)
        if reuse:
            got = np.frombuffer(self.free.to_array(), np.uint32)[:reuse].astype(np.int64)
            self.free -= bitmap(got)
            slots[:reuse] = got
        fresh = n - reuse
        if fresh:
            need = self.n + fresh
            if need > len(self.ids):
                cap = max(need, 2 * len(self.ids))
                ids = np.full(cap, -1, np.int64)
                ids[: self.n] = self.ids[: self.n]
                codes = np.zeros((self.words, cap), np.uint64)
                codes[:, : self.n] = self.codes[:, : self.n]
                self.ids, self.codes = ids, codes
            slots[reuse:] = np.arange(self.n, need)
            self.n = need
        return slots

    def add(self, ids: np.ndarray, keys: list, metadata: list[dict], codes: np.ndarray) -> None:
        """Index new items (ids not held: remove replaced ones first).

        Args:
            ids: int64 ids.
            keys: a key or None per item.
            metadata: each item's metadata as stored (JSON types).
            codes: packed uint8 codes (n, bits / 8).
        """
        ids = np.asarray(ids, np.int64)
        if not len(ids):
            return
        slots = self._take_slots(len(ids))
        self.ids[slots] = ids
        self.codes[:, slots] = words(codes).T
        self.live |= bitmap(slots)
        self.id_col.add(slots, ids)
        keyed = [(s, k) for s, k in zip(slots.tolist(), keys) if k]
        if keyed:
            self.key_col.add(np.array([s for s, _ in keyed]), np.array([k for _, k in keyed],
                                                                         object))
        self._add_metadata(slots, metadata)
        self._changed()

    def load(self, chunks) -> None:
        """Build an empty index from stored rows at once: (ids, keys, code blobs, metadata JSON)
        chunks in id order (``Store.iter_rows``)."""
        groups: dict[str, dict[str, list]] = {}
        all_ids, keyed_slots, keyed = [], [], []
        for ids, keys, blobs, metas in chunks:
            slots = self._take_slots(len(ids))
            self.ids[slots] = ids
            width = self.bits // 8
            if any(len(b) != width for b in blobs):  # damage SQLite's check let through
                blobs = [bytes(b[:width]).ljust(width, b"\0") for b in blobs]
            codes = np.frombuffer(b"".join(blobs), np.uint8).reshape(len(ids), width)
            self.codes[:, slots] = words(codes).T
            all_ids.append(np.asarray(ids, np.int64))
            for slot, key in zip(slots.tolist(), keys):
                if key:
                    keyed_slots.append(slot)
                    keyed.append(key)
            _group(groups, slots, [metadata_of(m) for m in metas])
        if not self.n:
            return
        self.live = BitMap(range(self.n))
        self.id_col.load(np.concatenate(all_ids), np.arange(self.n), presorted=True)
        self.key_col.load(np.array(keyed, object), np.array(keyed_slots, np.uint32), presorted=False)
        self._apply(groups)
        self._changed()

    def _add_metadata(self, slots: np.ndarray, metadata: list[dict]) -> None:
        groups: dict[str, dict[str, list]] = {}
        _group(groups, slots, metadata)
        self._apply(groups)

    def _apply(self, groups: dict) -> None:
        for name, group in groups.items():
            field = self.fields.get(name)
            if field is None:
                field = self.fields[name] = FieldColumns()
            field.present |= bitmap(np.array(group["present"], np.uint32))
            for kind, dtype in FieldColumns.TYPES:
                slots, vals = group[kind + "_slots"], group[kind]
                if slots:
                    field.put(kind, np.array(slots, np.uint32), np.array(vals, dtype))
            for slot, value in zip(group["odd_slots"], group["odd"]):
                field.odd[slot] = value

    def remove(self, ids: np.ndarray) -> np.ndarray:
        """Forget items by id (unknown ids are skipped); returns the slots freed."""
        slots = self.id_col.lookup(np.asarray(ids, np.int64))
        slots = slots[slots >= 0]
        if not len(slots):
            return slots
        gone = bitmap(slots)
        self._drop_metadata(gone)
        self.id_col.remove(gone)
        self.key_col.remove(gone)
        self.live -= gone
        self.free |= gone
        self.ids[slots] = -1
        self._changed()
        return slots

    def _drop_metadata(self, gone: BitMap) -> None:
        for name in list(self.fields):
            field = self.fields[name]
            if not field.present.intersect(gone):
                continue
            field.present -= gone
            for column in field.columns():
                column.remove(gone)
            for slot in list(field.odd):
                if slot in gone:
                    del field.odd[slot]
            if not field.present:
                del self.fields[name]

    def set_metadata(self, ids: np.ndarray, metadata: list[dict]) -> None:
        """Replace the metadata of held items (codes and keys unchanged)."""
        slots = self.id_col.lookup(np.asarray(ids, np.int64))
        keep = slots >= 0
        slots = slots[keep]
        if not len(slots):
            return
        self._drop_metadata(bitmap(slots))
        self._add_metadata(slots, [m for m, k in zip(metadata, keep) if k])
        self._changed()

    def _changed(self) -> None:
        self.version += 1
        with self._cache_lock:
            self._cache.clear()
            self._extras = {}

    # -- reads --------------------------------------------------------------------------------
    def slots_of(self, ids: np.ndarray) -> np.ndarray:
        """The slot of each id (-1 where not held)."""
        return self.id_col.lookup(np.asarray(ids, np.int64))

    def select_slots(self, flt: Filter):
        """The slots of the items that match (a bitmap; cached per filter until the next write)."""
        with self._cache_lock:  # readers run together: the cache is theirs to share
            hit = self._cache.get(flt.text)
            if hit is not None:
                self._cache.move_to_end(flt.text)
                return hit
        found = self.evaluate(flt.root)
        with self._cache_lock:
            self._cache[flt.text] = found
            while len(self._cache) > CACHE:
                self._extras.pop(self._cache.popitem(last=False)[0], None)
        return found

    def _extra(self, found) -> dict | None:
        """What is kept beside a cached filter's bitmap (under the cache lock), or None."""
        for text, bm in self._cache.items():
            if bm is found:
                return self._extras.setdefault(text, {})
        return None

    def serialized(self, found) -> bytes:
        """``found.serialize()``, kept beside a cached filter's bitmap."""
        with self._cache_lock:
            extra = self._extra(found)
            if extra is not None and "raw" in extra:
                return extra["raw"]
        raw = found.serialize()
        with self._cache_lock:
            extra = self._extra(found)
            if extra is not None:
                extra["raw"] = raw
        return raw

    def packed(self, found):
        """(word-major codes, slots) of a cached filter's matches, made on its second use when
        they are at most PACK_MAX (the scan then reads them contiguously instead of gathering
        them); None otherwise."""
        if len(found) > PACK_MAX:
            return None
        with self._cache_lock:
            extra = self._extra(found)
            if extra is None:
                return None
            if "packed" in extra:
                return extra["packed"]
            extra["uses"] = extra.get("uses", 0) + 1
            if extra["uses"] < 2 or sum("packed" in e for e in self._extras.values()) >= PACKED:
                return None
        slots = np.frombuffer(found.to_array(), np.uint32).astype(np.int64)
        made = (np.ascontiguousarray(self.codes[:, slots]), slots)
        with self._cache_lock:
            extra = self._extra(found)
            if extra is not None:
                extra["packed"] = made
        return made

    def evaluate(self, node: Node):
        """A node's matching slots, uncached (:func:`~crossbit.indexer.attribute_eval.evaluate`)."""
        return evaluate(self, node)

    def stats(self) -> dict:
        """Fields, items and memory (bytes) of the attribute index, the codes' copy apart."""
        columns = [self.id_col, self.key_col] + [c for f in self.fields.values() for c in f.columns()]
        held = sum(c.nbytes() for c in columns) + self.ids.nbytes
        held += sum(bitmap_bytes(f.present) for f in self.fields.values())
        held += bitmap_bytes(self.live) + bitmap_bytes(self.free)
        return {"fields": len(self.fields), "items": len(self.live), "slots": self.n,
                "memory_bytes": int(held), "code_bytes": int(self.codes.nbytes)}


def _new_group() -> dict:
    group = {"present": []}
    for kind in ("str", "num", "big", "bool", "tag", "odd"):
        group[kind], group[kind + "_slots"] = [], []
    return group


def _group(groups: dict, slots: np.ndarray, metadata: list[dict]) -> None:
    """Sort each item's fields by name and type into ``groups`` (lists of slots and values);
    the hot loop of a rebuild, so types are asked of ``type`` first (JSON gives exact types)."""
    for slot, meta in zip(slots.tolist(), metadata):
        if not meta:
            continue
        for name, value in meta.items():
            group = groups.get(name)
            if group is None:
                group = groups[name] = _new_group()
            group["present"].append(slot)
            t = type(value)
            if t is str:
                kind = "str"
            elif t is float:
                kind = "num"
            elif t is bool:
                kind, value = "bool", int(value)
            elif t is int or (isinstance(value, int) and not isinstance(value, bool)):
                value = int(value)
                kind = "num" if -EXACT_FLOAT <= value <= EXACT_FLOAT else \
                    "big" if -INT64_MAX - 1 <= value <= INT64_MAX else "odd"
                if kind == "num":
                    value = float(value)
            elif isinstance(value, list):
                tags = [e for e in value if type(e) is str or isinstance(e, str)]
                group["tag"] += tags
                group["tag_slots"] += [slot] * len(tags)
                continue
            elif isinstance(value, float):
                kind, value = "num", float(value)
            elif isinstance(value, str):
                kind, value = "str", str(value)
            else:
                continue  # null, an object: present, and nothing else
            group[kind].append(value)
            group[kind + "_slots"].append(slot)


def metadata_of(text: str | bytes) -> dict:
    """Stored metadata JSON as a dict (an unreadable or non-object one as empty: the item is
    still served, and no filter on its fields matches it)."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
