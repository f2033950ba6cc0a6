"""The attribute index after a SIGKILL and after a lost WAL: whatever the store holds when it opens
again, every filter answers as a brute force over the store's rows says."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossbit.indexer import open_index
from crossbit.indexer.attributes import metadata_of
from crossbit.indexer.filters import parse

from helpers import record

WRITER = Path(__file__).with_name("filter_crash_writer.py")
KILLS = 6 if os.environ.get("CROSSBIT_RELIABILITY_ROUNDS") else 3
FILTERS = ['album == "2022"', "year < 2000", "year >= 2010 and ok == true", 'tags contains "t1"',
           "not exists album", "price > 50.25 or exists u", 'key like "s1-b1%"', "u >= 3",
           'album in ["2020", "2024"] and not tags contains "t2"']


def check_against_store(index) -> None:
    rows = [r for chunk in index.store.iter_rows() for r in zip(*chunk)]
    assert index.verify() == ""
    for expr in FILTERS:
        flt = parse(expr)
        want = sorted(i for i, key, _, meta in rows if flt.matches(i, key, metadata_of(meta)))
        assert index.select(flt).tolist() == want, expr
        assert index.count(flt) == len(want)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_sigkill_leaves_the_attribute_index_in_step(tmp_path, kind):
    rng = random.Random(kind)
    opened = []
    for round_no in range(KILLS):
        proc = subprocess.Popen([sys.executable, str(WRITER), str(tmp_path), kind, str(round_no),
                                 "run"], stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with open_index(tmp_path, 64, kind, snapshot_interval=0, train_size=300) as index:
            assert index.store.count() > 0, "the writer never got going"
            opened.append(index.stats()["attribute_index"]["opened_from"])
            check_against_store(index)
    assert any(o.startswith("loaded") for o in opened), opened  # the saved copy was used
    record("filter_sigkill", kind=kind, kills=KILLS, opened=opened)


def test_lost_wal_rebuilds_the_attribute_index(tmp_path):
    subprocess.run([sys.executable, str(WRITER), str(tmp_path), "flat", "7", "lose-wal"],
                   stderr=subprocess.DEVNULL)
    wal = tmp_path / "store.sqlite3-wal"
    assert wal.exists() and wal.stat().st_size > 0, "no WAL to lose: the test would not test"
    wal.unlink()
    (tmp_path / "store.sqlite3-shm").unlink(missing_ok=True)
    with open_index(tmp_path, 64, "flat", snapshot_interval=0) as index:
        assert index.stats()["attribute_index"]["opened_from"].startswith("rebuilt")
        check_against_store(index)
