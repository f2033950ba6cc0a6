"""Reads of the SQLite store: ids, codes, embeddings, items, thumbnails, pages, the change log.

Each thread reads through its own connection (``Store._reader``), which maps the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import numpy as np

from crossbit.indexer.items import DIGEST_P, DIGEST_Q, Item, StoreLimit


class StoreReads:
    """The read side of :class:`~crossbit.indexer.store.Store` (mixed into it: it uses the
    store's ``_reader``, ``_meta`` and ``bits``)."""

    def count(self) -> int:
        return self._reader.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def model_record(self) -> dict | None:
        """The fingerprint of the model whose codes this store holds (None: not recorded)."""
        row = self._reader.execute("SELECT value FROM meta WHERE name='model'").fetchone()
        return json.loads(row[0]) if row else None

    def all_ids(self) -> np.ndarray:
        """Every stored id, sorted (int64)."""
        rows = self._reader.execute("SELECT id FROM items ORDER BY id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def id_digest(self) -> tuple[int, int, int, int, int]:
        """(count, min, max, two sums of the ids modulo primes): a cheap checksum of the ids,
        computed in SQL; :func:`id_digest` gives the same for an array."""
        row = self._reader.execute(
            f"SELECT COUNT(*), COALESCE(MIN(id), -1), COALESCE(MAX(id), -1), "
            f"COALESCE(SUM(id % {DIGEST_P}), 0), COALESCE(SUM((id / {DIGEST_P}) % {DIGEST_Q}), 0) "
            "FROM items").fetchone()
        return tuple(int(v) for v in row)

    def integrity(self) -> str:
        """SQLite's own ``PRAGMA integrity_check`` answer ("ok" when the file is sound)."""
        # as bytes: a damaged page's text can be any bytes, which the answer (or the error
        # SQLite raises, which Python then fails to decode) may quote
        try:
            rows = self._reader.execute("SELECT CAST(integrity_check AS BLOB) "
                                        "FROM pragma_integrity_check").fetchall()
        except UnicodeDecodeError as exc:
            return f"damaged (SQLite's message quotes bytes that are not text: {exc.object[:80]!r})"
        return "; ".join(bytes(r[0]).decode("utf-8", errors="replace") for r in rows)

    def max_seq(self) -> int:
        """The store's high-water mark: the highest log sequence number ever given out (0 for
        none), kept by AUTOINCREMENT when old entries are compacted away."""
        row = self._reader.execute("SELECT seq FROM sqlite_sequence WHERE name='log'").fetchone()
        return int(row[0]) if row else 0

    def log_floor(self) -> int:
        """The first log sequence number still kept (max_seq + 1 when the log is empty):
        entries below it were compacted away."""
        row = self._reader.execute("SELECT MIN(seq) FROM log").fetchone()
        return int(row[0]) if row and row[0] is not None else self.max_seq() + 1

    def log_since(self, seq: int) -> list[tuple[int, int, int]]:
        return self._reader.execute("SELECT seq, op, id FROM log WHERE seq > ? ORDER BY seq",
                                    (seq,)).fetchall()

    def _where_in(self, columns: str, field: str, values: Sequence) -> Iterator[tuple]:
        """Rows of ``SELECT columns FROM items WHERE field IN (values)``, in chunks of 900
        (SQLite's limit on bound parameters)."""
        conn = self._reader
        for start in range(0, len(values), 900):
            chunk = list(values[start : start + 900])
            marks = ",".join("?" * len(chunk))
            yield from conn.execute(f"SELECT {columns} FROM items WHERE {field} IN ({marks})", chunk)

    def codes_for(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, their codes) for the given ids; missing ids are left out."""
        rows = list(self._where_in("id, code", "id", [int(i) for i in ids]))
        return as_arrays([r[0] for r in rows], [r[1] for r in rows], self.bits)

    def _iter_column(self, column: str, batch: int) -> Iterator[tuple[list[int], list]]:
        """(ids, values) of one column where it is not NULL, in id order, ``batch`` rows at a
        time (keyset paging: each page starts after the last id seen)."""
        conn = self._reader
        last = -(2**63)
        while True:
            rows = conn.execute(f"SELECT id, {column} FROM items WHERE id > ? AND {column} IS "
                                "NOT NULL ORDER BY id LIMIT ?", (last, batch)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [r[0] for r in rows], [r[1] for r in rows]

    def iter_codes(self, batch: int = 100_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids, codes) in id order, in chunks."""
        for ids, codes in self._iter_column("code", batch):
            yield as_arrays(ids, codes, self.bits)

    def iter_embeddings(self, batch: int = 100_000) -> Iterator[tuple[list[int], list[bytes]]]:
        """All (ids, float32 embedding blobs) of items that have one, in id order, in chunks."""
        return self._iter_column("embedding", batch)

    def iter_rows(self, batch: int = 50_000) -> Iterator[tuple[list, list, list, list]]:
        """(ids, keys, code blobs, metadata JSON) of every item in id order, in chunks; keys and
        metadata as UTF-8 bytes (a damaged one must not stop the others being read)."""
        conn = self._reader
        last = -(2**63)
        while True:
            rows = conn.execute("SELECT id, CAST(key AS BLOB), code, CAST(metadata AS BLOB) FROM "
                                "items WHERE id > ? ORDER BY id LIMIT ?", (last, batch)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [r[0] for r in rows], [None if r[1] is None else r[1].decode(errors="replace")
                                         for r in rows], [r[2] for r in rows], [r[3] for r in rows]

    def rows_for(self, ids: Sequence[int]) -> list[tuple]:
        """(id, key, code blob, metadata JSON) of the given ids that are stored, in id order."""
        return sorted(self._where_in("id, key, code, metadata", "id", [int(i) for i in ids]))

    def scroll(self, after: int | None, limit: int) -> list[Item]:
        """Items with id > ``after`` (all when None) in id order, at most ``limit``."""
        rows = self._reader.execute(
            "SELECT id, key, metadata, added FROM items WHERE id > ? ORDER BY id LIMIT ?",
            (-(2**63) if after is None else int(after), int(limit))).fetchall()
        return [Item(i, k, json.loads(m), a, len(m) + (len(k) if k else 0)) for i, k, m, a in rows]

    def ids_for_keys(self, keys: Sequence[str]) -> dict[str, int]:
        return dict(self._where_in("key, id", "key", list(keys)))

    def metadata_for_keys(self, keys: Sequence[str]) -> dict[str, str]:
        """The stored metadata (JSON text) of the stored keys among ``keys``."""
        return dict(self._where_in("key, metadata", "key", list(keys)))

    def items(self, ids: Sequence[int], max_bytes: int | None = None) -> dict[int, Item]:
        """Key, metadata and time added by id (unknown ids absent).

        Raises:
            StoreLimit: when the rows' keys and metadata add up to more than ``max_bytes``
                (checked row by row, so memory stays bounded by it).
        """
        out, total = {}, 0
        for item_id, key, meta, added in self._where_in("id, key, metadata, added", "id",
                                                        [int(i) for i in ids]):
            size = len(meta) + (len(key) if key else 0)
            total += size
            if max_bytes is not None and total > max_bytes:
                raise StoreLimit(f"the hits' keys and metadata are over {max_bytes} bytes")
            out[item_id] = Item(item_id, key, json.loads(meta), added, size)
        return out

    def embeddings(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        return {item_id: np.frombuffer(emb, dtype=np.float32)
                for item_id, emb in self._where_in("id, embedding", "id", [int(i) for i in ids])
                if emb is not None}

    def thumbnail(self, item_id: int) -> bytes | None:
        row = self._reader.execute("SELECT thumbnail FROM items WHERE id=?", (int(item_id),)).fetchone()
        if row is None:
            raise KeyError(f"unknown id {item_id}")
        return row[0]

    def preview(self, item_id: int) -> bytes | None:
        """The larger preview kept at add time (None without one); KeyError for an unknown id."""
        row = self._reader.execute("SELECT p.data, i.id FROM items i LEFT JOIN previews p "
                                   "ON p.id = i.id WHERE i.id=?", (int(item_id),)).fetchone()
        if row is None:
            raise KeyError(f"unknown id {item_id}")
        return row[0]

    def page(self, offset: int, limit: int, newest_first: bool = False) -> list[Item]:
        order = "DESC" if newest_first else "ASC"
        rows = self._reader.execute(
            f"SELECT id, key, metadata, added FROM items ORDER BY id {order} LIMIT ? OFFSET ?",
            (limit, offset)).fetchall()
        return [Item(i, k, json.loads(m), a) for i, k, m, a in rows]


def as_arrays(ids: list[int], codes: list[bytes], bits: int) -> tuple[np.ndarray, np.ndarray]:
    width = bits // 8
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0, width), np.uint8)
    return np.array(ids, dtype=np.int64), \
        np.frombuffer(b"".join(codes), dtype=np.uint8).reshape(len(ids), width)
