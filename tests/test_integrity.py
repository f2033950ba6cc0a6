"""A damaged store is never served silently (SQLite's integrity_check at open, generated damage), and a
rebuilt index is written at once, so ``crossbit check`` beside the server finds nothing to report."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from crossbit.indexer import open_index
from crossbit.indexer.check import check_index
from crossbit.indexer.items import StoreError
from crossbit.indexer.snapshot import SNAPSHOT

from helpers import record

EXAMPLES = int(os.environ.get("CROSSBIT_FUZZ_EXAMPLES", "0")) or 25


def filled(folder, n=400):
    rng = np.random.default_rng(0)
    with open_index(folder, 64, "flat", snapshot_interval=0) as index:
        index.add(rng.integers(0, 256, (n, 8), dtype=np.uint8), keys=[f"k{i}" for i in range(n)],
                  metadata=[{"n": str(i), "pad": "x" * 200} for i in range(n)],
                  embeddings=rng.normal(size=(n, 16)).astype(np.float32))
    conn = sqlite3.connect(folder / "store.sqlite3")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file
    conn.close()


def integrity(path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT CAST(integrity_check AS BLOB) FROM pragma_integrity_check")
        return "; ".join(bytes(r[0]).decode("utf-8", errors="replace") for r in rows)
    except sqlite3.DatabaseError as exc:
        return f"unreadable: {exc}"
    except UnicodeDecodeError as exc:  # SQLite's error quoted a damaged page's bytes
        return f"damaged: {exc.object[:80]!r}"
    finally:
        conn.close()


def test_damaged_store_is_refused_with_what_to_run(tmp_path):
    folder = tmp_path / "idx"
    filled(folder)
    path = folder / "store.sqlite3"
    data = bytearray(path.read_bytes())
    start = len(data) // 2 // 4096 * 4096 + 8  # 50 bytes of one page's cell pointers
    for i in range(50):
        data[start + i] ^= 0x5A
    path.write_bytes(bytes(data))
    assert integrity(path) != "ok"
    with pytest.raises(StoreError, match="damaged.*crossbit check"):
        open_index(folder, 64, "flat", snapshot_interval=0)


@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck), phases=[Phase.generate])
@given(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1,
                max_size=50))
def test_generated_damage_is_never_served_silently(tmp_path_factory, flips):
    """Flip bytes anywhere in the file: whenever SQLite's own integrity_check (what crossbit
    check runs) sees damage, the index refuses to open; when it opens, the pages are sound."""
    damage_case(tmp_path_factory.mktemp("damage") / "idx", flips)


def test_damage_whose_report_quotes_bytes_that_are_not_utf8(tmp_path):
    """A case CI generated: integrity_check's answer quoted a damaged page's bytes (not UTF-8),
    which failed to decode instead of being reported."""
    damage_case(tmp_path / "idx", [(0.224, 43), (0.24212290908937908, 217),
                                   (0.556899883900073, 43), (0.3888431127834751, 59),
                                   (0.224, 60), (0.04799103602956812, 190),
                                   (0.1762366715738628, 222), (0.28561972219298637, 177),
                                   (0.9999999999999999, 104)])


def damage_case(folder, flips) -> None:
    filled(folder, n=120)
    path = folder / "store.sqlite3"
    data = bytearray(path.read_bytes())
    for where, xor in flips:
        data[100 + int(where * (len(data) - 100))] ^= xor  # past the file header
    path.write_bytes(bytes(data))
    verdict = integrity(path)
    try:
        index = open_index(folder, 64, "flat", snapshot_interval=0)
    except (StoreError, sqlite3.DatabaseError, ValueError) as exc:
        assert verdict != "ok" or "not a readable" in str(exc), exc
        return
    with index:
        assert verdict == "ok", f"served a store whose integrity_check says: {verdict[:200]}"
        assert index.stats()["integrity"]["integrity_check"] == "ok"


def test_a_rebuilt_index_is_written_at_once(tmp_path):
    folder = tmp_path / "idx"
    filled(folder, n=200)
    (folder / SNAPSHOT).write_bytes(b"garbage")  # the snapshot cannot be trusted: rebuilt
    with open_index(folder, 64, "flat", snapshot_interval=0) as index:
        assert index.opened_from.startswith("rebuilt")
        report = check_index(folder)  # beside the open index, as beside a running server
        assert report.ok, report.lines()
        assert report.snapshot_items == len(index) == 200
    record("rebuilt_index_written", items=200)
