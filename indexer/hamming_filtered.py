"""crossbit's exact Hamming scan restricted to a set of slots given as a serialized roaring bitmap: dense
chunks are scanned block by block with the set's bits as a mask, sparse ones only at their slots,
runs as plain ranges. Numba-compiled like ``hamming``; a numpy fallback gives the same answers."""

from __future__ import annotations

import numpy as np

from crossbit.indexer.hamming import BLOCK, HAVE_NUMBA, NO_DISTANCE

# How a chunk of 65,536 slots is searched follows roaring's own container choice: a bitset
# container (over 4,096 slots of the chunk in the set) as a masked block scan, an array
# container slot by slot (gathered: at 3% of 1M items 0.6x the unfiltered scan, where the
# masked scan took 1.4x), a run container as plain ranges (bench/filter_bench.py).

if HAVE_NUMBA:
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic

    from crossbit.indexer.hamming import _popcount, _scan

    @intrinsic
    def _trailing_zeros(typingctx, x):
        """LLVM's cttz: one TZCNT instruction on x86-64 (x is never 0 here)."""
        def codegen(context, builder, signature, args):
            return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))
        return types.uint64(types.uint64), codegen

    @njit(cache=True, nogil=True)
    def _u16(buf, p):  # pragma: no cover - compiled
        return np.int64(buf[p]) | (np.int64(buf[p + 1]) << 8)

    @njit(cache=True, nogil=True)
    def _u32(buf, p):  # pragma: no cover - compiled
        return _u16(buf, p) | (_u16(buf, p + 2) << 16)

    @njit(cache=True, nogil=True)
    def _containers(buf):  # pragma: no cover - compiled
        """(keys, kinds (0 array, 1 bitset, 2 run), cardinalities, data offsets) of a roaring
        bitmap in the portable serialization (RoaringFormatSpec)."""
        cookie = _u32(buf, 0)
        if cookie == 12346:
            size = _u32(buf, 4)
            flags, header = -1, 8
            data = header + 8 * size
        else:
            size = (cookie >> 16) + 1
            flags = 4
            header = flags + (size + 7) // 8
            data = header + 4 * size + (4 * size if size >= 4 else 0)
        keys = np.empty(size, np.int64)
        kinds = np.empty(size, np.int64)
        cards = np.empty(size, np.int64)
        offs = np.empty(size, np.int64)
        pos = data
        for c in range(size):
            keys[c] = _u16(buf, header + 4 * c)
            cards[c] = _u16(buf, header + 4 * c + 2) + 1
            offs[c] = pos
            if flags >= 0 and (buf[flags + c // 8] >> (c % 8)) & 1:
                kinds[c] = 2
                pos += 2 + 4 * _u16(buf, pos)
            elif cards[c] > 4096:
                kinds[c] = 1
                pos += 8192
            else:
                kinds[c] = 0
                pos += 2 * cards[c]
        return keys, kinds, cards, offs

    @njit(cache=True, nogil=True, boundscheck=False)
    def _masked(q, db, base, n, bits, at, out_d, out_i):  # pragma: no cover - compiled
        """The top-k merge of one chunk's slots that are set in ``bits[at:at + 8192]`` (a bitset
        container's bytes), block by block: every distance of a block (the vectorized loop)
        and their minimum, as the unfiltered scan; a slot's bit is asked only when its
        distance would enter the top k."""
        nq, w = q.shape
        k = out_d.shape[1]
        dist = np.empty(BLOCK, np.int32)  # local: LLVM sees it alias nothing, and vectorizes
        end = at + 8192
        for b0 in range(0, 65536, BLOCK):
            start = base + b0
            if start >= n:
                return
            m = min(BLOCK, n - start)
            for qi in range(nq):
                seg = db[0, start:start + m]
                x = q[qi, 0]
                for jj in range(m):
                    dist[jj] = np.int32(_popcount(x ^ seg[jj]))
                for t in range(1, w):
                    seg = db[t, start:start + m]
                    x = q[qi, t]
                    for jj in range(m):
                        dist[jj] += np.int32(_popcount(x ^ seg[jj]))
                worst = out_d[qi, k - 1]
                lo = worst
                for jj in range(m):
                    lo = min(lo, dist[jj])
                if lo >= worst:  # not even the block's nearest code enters: the set is moot
                    continue
                # some code of the block would enter: the slots both in the set and nearer than
                # the k-th, 64 at a time as bits (a vectorized compare), walked one by one
                for i in range(BLOCK // 64):
                    near = np.uint64(0)
                    for b in range(64):
                        near |= np.uint64(dist[i * 64 + b] < worst) << np.uint64(b)
                    if near == 0:
                        continue
                    p = at + (b0 >> 3) + 8 * i
                    word = np.uint64(0)
                    for b in range(8):
                        if p + b < end:
                            word |= np.uint64(bits[p + b]) << np.uint64(8 * b)
                    near &= word
                    while near:
                        jj = i * 64 + np.int64(_trailing_zeros(near))
                        near &= near - np.uint64(1)
                        d = dist[jj]
                        if jj >= m or d >= worst:
                            continue
                        pos = k - 1
                        while pos > 0 and out_d[qi, pos - 1] > d:
                            out_d[qi, pos] = out_d[qi, pos - 1]
                            out_i[qi, pos] = out_i[qi, pos - 1]
                            pos -= 1
                        out_d[qi, pos] = d
                        out_i[qi, pos] = start + jj
                        worst = out_d[qi, k - 1]

    @njit(cache=True, nogil=True, boundscheck=False)
    def _gathered(q, db, base, n, buf, card, off, out_d, out_i):  # pragma: no cover - compiled
        """The top-k merge of a sparse chunk's slots, their codes read one slot at a time:
        distances of up to BLOCK slots first (independent loads), then their minimum, then
        the insertions."""
        nq, w = q.shape
        k = out_d.shape[1]
        dist = np.empty(BLOCK, np.int32)
        where = np.empty(BLOCK, np.int64)
        for j0 in range(0, card, BLOCK):
            m = 0
            for j in range(j0, min(card, j0 + BLOCK)):
                slot = base + _u16(buf, off + 2 * j)
                if slot >= n:
                    break
                where[m] = slot
                m += 1
            for qi in range(nq):
                for jj in range(m):
                    dist[jj] = np.int32(_popcount(q[qi, 0] ^ db[0, where[jj]]))
                for t in range(1, w):
                    for jj in range(m):
                        dist[jj] += np.int32(_popcount(q[qi, t] ^ db[t, where[jj]]))
                worst = out_d[qi, k - 1]
                lo = worst
                for jj in range(m):
                    lo = min(lo, dist[jj])
                if lo >= worst:
                    continue
                for jj in range(m):
                    d = dist[jj]
                    if d >= worst:
                        continue
                    pos = k - 1
                    while pos > 0 and out_d[qi, pos - 1] > d:
                        out_d[qi, pos] = out_d[qi, pos - 1]
                        out_i[qi, pos] = out_i[qi, pos - 1]
                        pos -= 1
                    out_d[qi, pos] = d
                    out_i[qi, pos] = where[jj]
                    worst = out_d[qi, k - 1]

    @njit(cache=True, nogil=True, boundscheck=False)
    def _subset(q, db, n, buf, out_d, out_i):  # pragma: no cover - compiled
        """Top-k of the slots of a serialized roaring bitmap, merged into out_d / out_i."""
        keys, kinds, cards, offs = _containers(buf)
        for c in range(len(keys)):
            base = keys[c] << 16
            if base >= n:
                break
            if kinds[c] == 2:
                for r in range(_u16(buf, offs[c])):
                    s0 = base + _u16(buf, offs[c] + 2 + 4 * r)
                    s1 = min(s0 + _u16(buf, offs[c] + 4 + 4 * r) + 1, n)
                    if s0 < s1:
                        _scan(q, db, s0, s1, out_d, out_i)
            elif kinds[c] == 1:
                _masked(q, db, base, n, buf, offs[c], out_d, out_i)
            else:
                _gathered(q, db, base, n, buf, cards[c], offs[c], out_d, out_i)

    @njit(cache=True, nogil=True)
    def _bits(buf, words):  # pragma: no cover - compiled
        """The bitmap as dense words of bits (slot s: bit s % 64 of word s // 64)."""
        keys, kinds, cards, offs = _containers(buf)
        out = np.zeros(words, np.uint64)
        raw = out.view(np.uint8)
        for c in range(len(keys)):
            base = keys[c] << 16
            if kinds[c] == 2:
                for r in range(_u16(buf, offs[c])):
                    s0 = base + _u16(buf, offs[c] + 2 + 4 * r)
                    for s in range(s0, min(s0 + _u16(buf, offs[c] + 4 + 4 * r) + 1, 64 * words)):
                        out[s >> 6] |= np.uint64(1) << np.uint64(s & 63)
            elif kinds[c] == 1:
                first = base >> 3
                for i in range(min(8192, len(raw) - first)):
                    raw[first + i] = buf[offs[c] + i]
            else:
                for j in range(cards[c]):
                    s = base + _u16(buf, offs[c] + 2 * j)
                    if s < 64 * words:
                        out[s >> 6] |= np.uint64(1) << np.uint64(s & 63)
        return out


if HAVE_NUMBA:
    @njit(cache=True, nogil=True, boundscheck=False)
    def _portable(slots, first, top):  # pragma: no cover - compiled
        """Slots (uint32, any order, repeats allowed) as a roaring bitmap in the portable
        serialization, without runs: through a dense array of bits over chunks first..top."""
        base = first << 10  # in words
        nwords = (top >> 6) + 1 - base
        words = np.zeros(nwords, np.uint64)
        for s in slots:
            words[(s >> 6) - base] |= np.uint64(1) << np.uint64(s & 63)
        nchunks = (nwords + 1023) >> 10
        cards = np.zeros(nchunks, np.int64)
        for w in range(nwords):
            cards[w >> 10] += np.int64(_popcount(words[w]))
        size, total = 0, 8
        for c in range(nchunks):
            if cards[c]:
                size += 1
                total += 8 + (8192 if cards[c] > 4096 else 2 * cards[c])
        out = np.zeros(total, np.uint8)
        o16 = out.view(np.uint16)  # every field and container starts at an even byte
        o16[0], o16[1], o16[2], o16[3] = 12346, 0, size & 0xFFFF, size >> 16
        head, offs, pos = 4, 4 + 2 * size, 8 + 8 * size
        for c in range(nchunks):
            card = cards[c]
            if not card:
                continue
            o16[head], o16[head + 1] = first + c, card - 1
            o16[offs], o16[offs + 1] = pos & 0xFFFF, pos >> 16
            head, offs, p = head + 2, offs + 2, pos >> 1
            for w in range(c * 1024, min(nwords, c * 1024 + 1024)):
                x = words[w]
                if card > 4096:
                    for q in range(4):
                        o16[p + 4 * (w - c * 1024) + q] = (x >> np.uint64(16 * q)) & np.uint64(0xFFFF)
                    continue
                while x:
                    o16[p] = ((w - c * 1024) << 6) + np.int64(_trailing_zeros(x))
                    p += 1
                    x &= x - np.uint64(1)
            pos += 8192 if card > 4096 else 2 * card
        return out


def portable_bitmap(slots: np.ndarray) -> bytes | None:
    """A roaring bitmap of uint32 slots in its portable serialization (for
    ``BitMap.deserialize``), or None where numba is absent."""
    if not HAVE_NUMBA or not len(slots):
        return None
    slots = np.ascontiguousarray(slots, np.uint32)
    return _portable(slots, int(slots.min()) >> 16, int(slots.max())).tobytes()


def top_k_in(queries: np.ndarray, db: np.ndarray, n: int, slots, k: int,
             serialized: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest codes of ``db[:, :n]`` among ``slots`` for each query.

    Args:
        queries: uint64 words (nq, w) (see :func:`crossbit.indexer.hamming.words`).
        db: codes word-major, uint64 (w, >= n).
        n: slots in use.
        slots: a pyroaring bitmap of the slots to search.
        k: neighbours per query.
        serialized: ``slots.serialize()``, when the caller has it already.

    Returns:
        int64 slots (nq, k), -1 past the set's size, and int32 distances (NO_DISTANCE there),
        nearest first.
    """
    nq = len(queries)
    out_d = np.full((nq, k), NO_DISTANCE, np.int32)
    out_i = np.full((nq, k), -1, np.int64)
    if not slots:
        return out_i, out_d
    if HAVE_NUMBA:
        buf = np.frombuffer(serialized or slots.serialize(), np.uint8)
        _subset(np.ascontiguousarray(queries), db, n, buf, out_d, out_i)
        return out_i, out_d
    picked = np.frombuffer(slots.to_array(), np.uint32).astype(np.int64)
    d = np.bitwise_count(queries[:, None, :] ^ db[:, picked].T[None]).sum(axis=2).astype(np.int32)
    order = np.lexsort((np.broadcast_to(picked, d.shape), d), axis=1)[:, :k]
    width = order.shape[1]
    out_i[:, :width] = picked[order]
    out_d[:, :width] = np.take_along_axis(d, order, axis=1)
    return out_i, out_d


def distances_in(query: np.ndarray, db: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """int32 distances of one query (uint64 words) to the codes at ``slots``."""
    return np.bitwise_count(db[:, slots].T ^ query[None, :]).sum(axis=1).astype(np.int32)


def member_bits(slots, n: int) -> np.ndarray:
    """A bitmap of slots as dense uint64 words covering slots 0..n-1 (a membership test:
    ``(bits[s >> 6] >> (s & 63)) & 1``)."""
    words = (n + 63) // 64
    if HAVE_NUMBA and slots:
        return _bits(np.frombuffer(slots.serialize(), np.uint8), words)
    out = np.zeros(words, np.uint64)
    picked = np.frombuffer(slots.to_array(), np.uint32).astype(np.int64) if slots else \
        np.zeros(0, np.int64)
    picked = picked[picked < n]
    np.bitwise_or.at(out, picked >> 6, np.left_shift(np.uint64(1), (picked & 63).astype(np.uint64)))
    return out


def is_member(bits: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Which of ``slots`` (int64, -1 allowed: never) the dense ``bits`` hold."""
    slots = np.asarray(slots, np.int64)
    ok = (slots >= 0) & (slots < 64 * len(bits))
    out = np.zeros(slots.shape, bool)
    s = slots[ok]
    out[ok] = ((bits[s >> 6] >> (s & 63).astype(np.uint64)) & np.uint64(1)).astype(bool)
    return out
