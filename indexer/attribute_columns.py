"""One column of the attribute index: (value, slot) entries sorted by value, with compressed bitmaps
(pyroaring) of value-aligned buckets in a segment tree, so that an equality, a range or a prefix
becomes a union of a few stored bitmaps; recent writes sit in a small sorted delta until merged."""

from __future__ import annotations

import array

import numpy as np
from pyroaring import BitMap, FrozenBitMap

BUCKET = 4096  # entries per bucket of the sorted order (a value with BUCKET / 4 or more: its own)
MERGE_MIN = 8192  # the delta and the removed entries are merged in past this many...
MERGE_SHARE = 16  # ...or past 1 / MERGE_SHARE of the column's entries, whichever is more
FAST_FROM = 4096  # slots from which a bitmap is built by numba (bench/filter_bench.py)
PREFIX_EVERY = 16  # buckets between two prefix bitmaps (a wide range is their difference)
EMPTY = FrozenBitMap()


def bitmap(slots: np.ndarray) -> BitMap:
    """A bitmap of uint32 slots (any order, repeats allowed): a few through pyroaring's array
    path, many through numba's serialization (about 6x faster at 10^5 slots here)."""
    if not len(slots):
        return BitMap()
    if len(slots) >= FAST_FROM:
        from crossbit.indexer.hamming_filtered import portable_bitmap

        raw = portable_bitmap(slots)
        if raw is not None:
            return BitMap.deserialize(raw)
    return BitMap(array.array("I", np.sort(slots.astype(np.uint32, copy=False)).tobytes()))


def union(parts: list, within=None) -> BitMap | FrozenBitMap:
    """The union of bitmaps (only what lies ``within`` one, when given: cheap when it is small,
    the union of the large parts is never made)."""
    if within is not None:
        parts = [p & within for p in parts if p]
    parts = [p for p in parts if p]
    if not parts:
        return EMPTY
    if len(parts) == 1:
        return parts[0]
    return BitMap.union(*parts)


def successor(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (None: no such bound)."""
    chars = list(prefix)
    while chars:
        if ord(chars[-1]) < 0x10FFFF:
            chars[-1] = chr(ord(chars[-1]) + 1)
            return "".join(chars)
        chars.pop()
    return None


class Column:
    """(value, slot) entries of one type, for one field (several per slot for a list's strings).

    The main part is sorted by value, cut into buckets (a value with many entries fills buckets
    of its own, so its equality is one stored bitmap) under a segment tree of bitmaps: a range
    of values is a run of the sorted order, answered by O(log buckets) stored bitmaps plus
    the partial buckets at its ends. Writes go to a small sorted delta (added entries) and a
    bitmap of slots whose main entries are gone, merged into the main part past a size.
    Readers never see a half-made change: the index's write lock covers every mutation.
    """

    def __init__(self, dtype, tree: bool = True):
        self.dtype = np.dtype(dtype)
        self.with_tree = tree  # False: no bucket bitmaps (the id column: lookups, rare ranges)
        self.vals = np.empty(0, self.dtype)
        self.slots = np.empty(0, np.uint32)
        self.cuts = np.zeros(1, np.int64)
        self.size = 1
        self.tree: list = [EMPTY, EMPTY]
        self.main = BitMap()  # slots with entries in the main part
        self.dead = BitMap()  # ...of which these are gone
        self.dvals = np.empty(0, self.dtype)  # the delta, sorted by value
        self.dslots = np.empty(0, np.uint32)
        self.every = BitMap()  # slots with at least one live entry
        self.finite = len(self.vals)  # entries before the first NaN (floats sort NaN last)
        self._main_bytes = 0
        self.prefix_at, self.prefixes = np.zeros(0, np.int64), []

    def __len__(self) -> int:
        return len(self.vals) + len(self.dvals)

    # -- writes -------------------------------------------------------------------------------
    def add(self, slots: np.ndarray, vals: np.ndarray) -> None:
        """Add entries (their slots must hold no live entries here: remove them first)."""
        if not len(slots):
            return
        vals = np.asarray(vals, self.dtype)
        order = np.argsort(vals, kind="stable")
        vals, slots = vals[order], np.asarray(slots, np.uint32)[order]
        at = np.searchsorted(self.dvals, vals, side="right")
        self.dvals = np.insert(self.dvals, at, vals)
        self.dslots = np.insert(self.dslots, at, slots)
        self.every |= bitmap(slots)
        self._maybe_merge()

    def remove(self, slots: BitMap) -> None:
        """Drop every entry of these slots."""
        gone = slots & self.every
        if not gone:
            return
        self.every -= gone
        self.dead |= gone & self.main
        if len(self.dslots):
            keep = ~np.isin(self.dslots, np.frombuffer(gone.to_array(), np.uint32))
            self.dvals, self.dslots = self.dvals[keep], self.dslots[keep]
        self._maybe_merge()

    def _maybe_merge(self) -> None:
        if len(self.dvals) + len(self.dead) > max(MERGE_MIN, len(self.vals) // MERGE_SHARE):
            self.merge()

    def merge(self) -> None:
        """Fold the delta and the removals into the sorted main part; rebuild the buckets."""
        vals, slots = self.vals, self.slots
        if self.dead:
            dead = np.frombuffer(self.dead.to_array(), np.uint32)
            gone = np.zeros(int(dead.max()) + 1, bool)
            gone[dead] = True
            keep = np.ones(len(slots), bool)
            low = slots < len(gone)
            keep[low] = ~gone[slots[low]]
            vals, slots = vals[keep], slots[keep]
        if len(self.dvals):
            at = np.searchsorted(vals, self.dvals, side="right")
            vals, slots = np.insert(vals, at, self.dvals), np.insert(slots, at, self.dslots)
        self.load(vals, slots)

    def load(self, vals: np.ndarray, slots: np.ndarray, presorted: bool = True) -> None:
        """Make these entries the whole column (sorted by value unless ``presorted`` is False)."""
        vals, slots = np.asarray(vals, self.dtype), np.asarray(slots, np.uint32)
        if not presorted and self.dtype.kind == "O":  # strings: group first (few distinct, often)
            groups: dict = {}
            for n, value in enumerate(vals.tolist()):
                groups.setdefault(value, []).append(n)
            order = np.fromiter((n for v in sorted(groups) for n in groups[v]), np.int64, len(vals))
            vals, slots = vals[order], slots[order]
        elif not presorted:
            order = np.argsort(vals, kind="stable")
            vals, slots = vals[order], slots[order]
        self.vals, self.slots = vals, slots
        self.dvals, self.dslots = np.empty(0, self.dtype), np.empty(0, np.uint32)
        self.dead = BitMap()
        self.main = bitmap(slots)
        self.every = BitMap(self.main)
        self.finite = int(np.searchsorted(vals, np.nan)) if self.dtype.kind == "f" else len(vals)
        self._build()

    def _build(self) -> None:
        n = len(self.vals)
        self.prefix_at, self.prefixes = np.zeros(0, np.int64), []
        if n == 0 or not self.with_tree:
            self.cuts, self.size, self.tree = np.zeros(1, np.int64), 1, [EMPTY, EMPTY]
            self._main_bytes = self.vals.nbytes + self.slots.nbytes + bitmap_bytes(self.main)
            return
        change = np.flatnonzero(self.vals[1:] != self.vals[:-1]) + 1
        starts = np.concatenate([[0], change]).astype(np.int64)
        lengths = np.diff(np.append(starts, n))
        big = lengths >= BUCKET // 4
        regular = np.arange(BUCKET, n, BUCKET, dtype=np.int64)
        run = np.searchsorted(starts, regular, side="right") - 1
        regular = regular[~big[run] | (starts[run] == regular)]
        self.cuts = np.unique(np.concatenate([[0, n], starts[big], starts[big] + lengths[big],
                                              regular]))
        buckets = len(self.cuts) - 1
        self.size = 1 << max(0, (buckets - 1).bit_length())
        tree = [EMPTY] * (2 * self.size)
        for b in range(buckets):
            tree[self.size + b] = FrozenBitMap(bitmap(self.slots[self.cuts[b]:self.cuts[b + 1]]))
        for node in range(self.size - 1, 0, -1):
            left, right = tree[2 * node], tree[2 * node + 1]
            tree[node] = left | right if right else left
        self.tree = tree
        # the slots of entries 0..at[i]-1, every PREFIX_EVERY buckets: a range over many buckets
        # is P[j] - P[i] (one pass over two bitmaps) and two short runs; only where a slot has
        # one entry (a list's strings would be taken out with their neighbours')
        self.prefix_at, self.prefixes = np.zeros(0, np.int64), []
        if len(self.main) == n and buckets > 2 * PREFIX_EVERY:
            self.prefix_at = self.cuts[::PREFIX_EVERY].copy()
            acc = BitMap()
            for i, at in enumerate(self.prefix_at):
                if i:
                    acc |= bitmap(self.slots[self.prefix_at[i - 1]:at])
                self.prefixes.append(FrozenBitMap(acc))
        self._main_bytes = self.vals.nbytes + self.slots.nbytes + bitmap_bytes(self.main) + \
            sum(bitmap_bytes(t) for t in tree if t) + sum(bitmap_bytes(p) for p in self.prefixes)
        if self.dtype.kind == "O":  # each distinct string once (equal values share one object)
            self._main_bytes += sum(len(v) + 49 for v in set(self.vals.tolist()))

    # -- reads --------------------------------------------------------------------------------
    def _main_run(self, a: int, b: int, within=None):
        """The slots of main entries a..b-1 (sorted positions), removals not yet taken out."""
        if a >= b:
            return EMPTY
        if len(self.prefix_at):
            i = int(np.searchsorted(self.prefix_at, a, side="left"))
            j = int(np.searchsorted(self.prefix_at, b, side="right")) - 1
            if i < j:
                inner, outer = self.prefixes[j], self.prefixes[i]
                mid = (within & inner) - outer if within is not None else inner - outer
                return union([mid, self._tree_run(a, int(self.prefix_at[i]), within),
                              self._tree_run(int(self.prefix_at[j]), b, within)])
        return self._tree_run(a, b, within)

    def _tree_run(self, a: int, b: int, within=None):
        if a >= b:
            return EMPTY
        if not self.with_tree:
            return bitmap(self.slots[a:b])
        cuts = self.cuts
        first = int(np.searchsorted(cuts, a, side="left"))
        last = int(np.searchsorted(cuts, b, side="right")) - 1
        if first >= last:
            return bitmap(self.slots[a:b])
        parts = []
        lo, hi = first + self.size, last + self.size
        while lo < hi:
            if lo & 1:
                parts.append(self.tree[lo])
                lo += 1
            if hi & 1:
                hi -= 1
                parts.append(self.tree[hi])
            lo >>= 1
            hi >>= 1
        if a < cuts[first]:
            parts.append(bitmap(self.slots[a:cuts[first]]))
        if cuts[last] < b:
            parts.append(bitmap(self.slots[cuts[last]:b]))
        return union(parts, within)

    def _between(self, vals: np.ndarray, lo, lo_incl: bool, hi, hi_incl: bool, end: int):
        a = 0 if lo is None else int(np.searchsorted(vals, lo, side="left" if lo_incl else "right"))
        b = end if hi is None else int(np.searchsorted(vals, hi, side="right" if hi_incl else "left"))
        return a, min(b, end)

    def range(self, lo=None, lo_incl: bool = True, hi=None, hi_incl: bool = True, within=None):
        """Slots with an entry between ``lo`` and ``hi`` (None: unbounded; NaN is in no range);
        with ``within``, only those in it (not necessarily all of them: the caller intersects)."""
        a, b = self._between(self.vals, lo, lo_incl, hi, hi_incl, self.finite)
        found = self._main_run(a, b, within)
        if self.dead and found:
            found = found - self.dead
        if len(self.dvals):
            end = len(self.dvals)
            if self.dtype.kind == "f":
                end = int(np.searchsorted(self.dvals, np.nan))
            da, db = self._between(self.dvals, lo, lo_incl, hi, hi_incl, end)
            if da < db:
                found = union([found, bitmap(self.dslots[da:db])])
        return found

    def equal(self, value, within=None):
        return self.range(value, True, value, True, within)

    def prefix(self, text: str, within=None):
        """Slots with a string entry starting with ``text``."""
        return self.range(text, True, successor(text), False, within) if text else self.every

    def count(self, value) -> int:
        """Entries equal to ``value`` (an estimate: removals not taken out)."""
        return int(np.searchsorted(self.vals, value, side="right") -
                   np.searchsorted(self.vals, value, side="left"))

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """For a column of unique values (ids): the slot of each value, -1 where absent."""
        values = np.asarray(values, self.dtype)
        out = np.full(len(values), -1, np.int64)
        for vals, slots, dead in ((self.vals, self.slots, self.dead), (self.dvals, self.dslots, None)):
            if not len(vals):
                continue
            at = np.searchsorted(vals, values)
            ok = at < len(vals)
            ok[ok] = vals[at[ok]] == values[ok]
            found = slots[at[ok]].astype(np.int64)
            if dead:
                alive = ~np.isin(found, np.frombuffer(dead.to_array(), np.uint32))
                idx = np.flatnonzero(ok)
                ok[idx[~alive]] = False
                found = found[alive]
            out[ok] = found
        return out

    def window(self, after, count: int):
        """The next ``count`` entries above ``after`` (None: from the first) in value order, as
        (values, slots, the last value read: where the next window starts, None at the end);
        entries of removed slots are read past, not returned."""
        parts = []
        for vals, slots in ((self.vals, self.slots), (self.dvals, self.dslots)):
            a = 0 if after is None else int(np.searchsorted(vals, after, side="right"))
            parts.append((vals[a:a + count], slots[a:a + count]))
        vals = np.concatenate([parts[0][0], parts[1][0]])
        slots = np.concatenate([parts[0][1], parts[1][1]])
        if not len(vals):
            return vals, slots, None
        order = np.argsort(vals, kind="stable")[:count]
        vals, slots = vals[order], slots[order]
        last = vals[-1]
        if self.dead:  # a removed slot's main entries are gone (its delta entries are not)
            gone = (order < len(parts[0][0])) & np.isin(slots, np.frombuffer(self.dead.to_array(),
                                                                            np.uint32))
            vals, slots = vals[~gone], slots[~gone]
        return vals, slots, last

    def nbytes(self) -> int:
        """Bytes held: the arrays, the strings and the bitmaps' containers (the main part's
        share is counted when it is built, the delta's now)."""
        total = self._main_bytes + self.dvals.nbytes + self.dslots.nbytes
        if self.dtype.kind == "O":
            total += sum(len(v) + 49 for v in self.dvals.tolist())
        return total + bitmap_bytes(self.dead) + bitmap_bytes(self.every)


def bitmap_bytes(bm) -> int:
    if not bm:
        return 0
    stats = bm.get_statistics()
    return (stats["n_bytes_array_containers"] + stats["n_bytes_bitset_containers"] +
            stats["n_bytes_run_containers"] + 16 * stats["n_containers"])
