"""A column of few distinct values (a category, a year, a bool, tags): one compressed bitmap of slots
per value, the plain inverted index; past ``MAX_DISTINCT`` values the attribute index moves its
entries to a sorted ``Column``."""

from __future__ import annotations

import numpy as np
from pyroaring import BitMap

from crossbit.indexer.attribute_columns import EMPTY, Column, bitmap, bitmap_bytes, successor, union

MAX_DISTINCT = 256  # distinct values a Values column holds before it becomes a sorted Column


class Values:
    """value -> bitmap of the slots holding it, for one field and one type."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.maps: dict = {}
        self.every = BitMap()
        self._sorted = None  # the distinct values, sorted (made when a range asks for it)

    def __len__(self) -> int:
        return len(self.every)

    def distinct(self) -> int:
        return len(self.maps)

    # -- writes -------------------------------------------------------------------------------
    def add(self, slots: np.ndarray, vals: np.ndarray) -> None:
        if not len(slots):
            return
        slots = np.asarray(slots, np.uint32)
        if self.dtype.kind == "O":
            groups: dict = {}
            for n, value in enumerate(vals.tolist() if isinstance(vals, np.ndarray) else vals):
                groups.setdefault(value, []).append(n)
            pairs = [(v, slots[np.array(ns)]) for v, ns in groups.items()]
        else:
            vals = np.asarray(vals, self.dtype)
            distinct, inverse = np.unique(vals, return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            bounds = np.searchsorted(inverse[order], np.arange(len(distinct) + 1))
            pairs = [(v, slots[order[bounds[i]:bounds[i + 1]]])
                     for i, v in enumerate(distinct.tolist())]
        for value, picked in pairs:
            found = self.maps.get(value)
            if found is None:
                self.maps[value] = bitmap(picked)
                self._sorted = None
            else:
                found |= bitmap(picked)
            self.every |= bitmap(picked)

    def remove(self, slots: BitMap) -> None:
        gone = slots & self.every
        if not gone:
            return
        self.every -= gone
        for value in list(self.maps):
            found = self.maps[value]
            if found.intersect(gone):
                found -= gone
                if not found:
                    del self.maps[value]
                    self._sorted = None

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, slots) of every entry, sorted by value."""
        vals, slots = [], []
        for value in self._order()[1]:
            found = np.frombuffer(self.maps[value].to_array(), np.uint32)
            vals.append(np.full(len(found), value, self.dtype) if self.dtype.kind != "O" else
                        np.array([value] * len(found), object))
            slots.append(found)
        if not vals:
            return np.empty(0, self.dtype), np.empty(0, np.uint32)
        return np.concatenate(vals), np.concatenate(slots)

    def as_column(self) -> Column:
        column = Column(self.dtype)
        column.load(*self.entries(), presorted=True)
        return column

    # -- reads --------------------------------------------------------------------------------
    def _order(self) -> tuple[np.ndarray, list]:
        """The distinct values sorted (NaN last), as an array to search and as the dict's keys."""
        if self._sorted is None:
            keys = sorted(self.maps, key=lambda v: (v != v, v))  # NaN (v != v) last
            self._sorted = (np.array(keys, self.dtype), keys)
        return self._sorted

    def equal(self, value, within=None):
        found = self.maps.get(value, EMPTY)
        return found if within is None else found & within

    def count(self, value) -> int:
        return len(self.maps.get(value, EMPTY))

    def range(self, lo=None, lo_incl: bool = True, hi=None, hi_incl: bool = True, within=None):
        order, keys = self._order()
        end = len(order)
        if self.dtype.kind == "f":
            end = int(np.searchsorted(order, np.nan))  # NaN is in no range
        a = 0 if lo is None else int(np.searchsorted(order, lo, side="left" if lo_incl else "right"))
        b = end if hi is None else min(end, int(np.searchsorted(order, hi, side="right" if hi_incl
                                                                 else "left")))
        if b - a == len(keys):
            return self.every
        return union([self.maps[v] for v in keys[a:b]], within)

    def prefix(self, text: str, within=None):
        return self.range(text, True, successor(text), False, within) if text else self.every

    def nbytes(self) -> int:
        total = sum(bitmap_bytes(m) for m in self.maps.values()) + bitmap_bytes(self.every)
        if self.dtype.kind == "O":
            total += sum(len(v) + 49 for v in self.maps)
        return total + 100 * len(self.maps)
