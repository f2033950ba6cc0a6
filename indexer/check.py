"""``crossbit check``: compare an index folder's snapshot with its store, report and repair."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossbit.indexer import attribute_snapshot, open_index
from crossbit.indexer.attribute_check import attribute_differences
from crossbit.indexer.backends import make_backend
from crossbit.indexer.folder import ID_MARK, STORE, lock_directory
from crossbit.indexer.index_filtered import index_rows
from crossbit.indexer.items import StoreError
from crossbit.indexer.snapshot import SNAPSHOT, id_differences, read_snapshot, replay, store_behind
from crossbit.indexer.store import Store


@dataclass
class CheckReport:
    """What one index folder holds and where its parts disagree (``problems`` empty: sound)."""

    directory: str
    items: int = 0  # in the store
    snapshot_items: int | None = None  # in the snapshot, after replaying the store's log
    kind: str | None = None
    bits: int | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        head = (f"{self.directory}: {self.items} items in the store"
                + (f", {self.snapshot_items} in the snapshot" if self.snapshot_items is not None
                   else "") + (f" ({self.kind}, {self.bits} bits)" if self.kind else ""))
        out = [head + (": ok" if self.ok else "")]
        out += [f"  problem: {p}" for p in self.problems]
        out += [f"  note: {n}" for n in self.notes]
        if self.repaired:
            out.append("  repaired: the bad snapshot was removed; the index is rebuilt from the "
                       "store (done now for flat and hnsw, on the server's next start otherwise)")
        return out


def stored_bits(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM meta WHERE name='bits'").fetchone()
    finally:
        conn.close()
    if row is None:
        raise StoreError(f"{path} has no code length recorded: not a crossbit store")
    return int(row[0])


def check_index(directory: str | Path, repair: bool = False) -> CheckReport:
    """Check one index folder (``DATA/images`` or ``DATA/texts``).

    The invariant: the snapshot, with the store's change log replayed past it, holds exactly
    the store's ids, each once; no assigned id is at or past the id mark. With ``repair``, a
    snapshot that breaks it is rebuilt from the store (the store is the truth). Run repairs
    with the server stopped: a running server keeps its own copy and snapshots over it.
    """
    directory = Path(directory)
    report = CheckReport(str(directory))
    store_path = directory / STORE
    if not store_path.exists():
        report.problems.append(f"no store at {store_path}")
        return report
    try:
        report.bits = stored_bits(store_path)
        store = Store(store_path, report.bits, mark_path=directory / ID_MARK)
    except (sqlite3.DatabaseError, StoreError) as exc:
        report.problems.append(f"store unreadable: {exc}")
        return report
    try:
        integrity = store.integrity()
        if integrity != "ok":
            report.problems.append(f"SQLite integrity_check: {integrity}")
        stored = store.all_ids()
        report.items = len(stored)
        counter, mark = store.id_counter()
        if mark and mark < counter:
            report.problems.append(f"id mark {mark} is behind the store's id counter {counter}")
            if repair:
                store.raise_mark(counter)
        kind, snapshot_ok = _check_snapshot(directory, store, stored, report)
        _check_attributes(directory, store, report)
    finally:
        store.close()
    if repair and not report.ok and snapshot_ok is not None:
        # the store is the truth: without the snapshot, the next open rebuilds from it (and
        # not while a server holds the folder: it would write its own snapshot over it)
        with lock_directory(directory):
            (directory / SNAPSHOT).unlink(missing_ok=True)
            (directory / attribute_snapshot.ATTRIBUTES).unlink(missing_ok=True)
        if kind in ("flat", "hnsw"):
            with open_index(directory, report.bits, kind, snapshot_interval=0) as index:
                left = index.verify()
            if left:
                report.problems.append(f"after the rebuild: {left}")
        report.repaired = True
    return report


def _check_snapshot(directory: Path, store: Store, stored: np.ndarray,
                    report: CheckReport) -> tuple[str | None, bool | None]:
    """Compare the snapshot with the store; returns (its kind, whether it was readable)."""
    path = directory / SNAPSHOT
    if not path.exists():
        report.notes.append("no snapshot: the server rebuilds the index from the store on start")
        return None, None
    try:
        header, payload = read_snapshot(path)
        report.kind = header["kind"]
        backend = make_backend(header["kind"], header["bits"], {} if header["kind"] != "gpu"
                               else {"device": "cpu"})
        backend.load_bytes(payload, header["extra"])
    except Exception as exc:
        report.problems.append(f"snapshot unreadable ({exc}); the server rebuilds from the store")
        return None, False
    seq = int(header["seq"])
    behind = store_behind(store, seq)
    if behind:
        report.problems.append(behind)
    entries = replay(backend, store, seq)  # as the server does on start
    held = backend.all_ids()
    report.snapshot_items = len(held)
    if entries:
        report.notes.append(f"{entries} changes in the store's log after the snapshot "
                            "(replayed on start)")
    report.problems += id_differences(held, stored, "the snapshot")
    next_id = int(header.get("next_id", 0))
    counter, mark = store.id_counter()
    if next_id > max(counter, mark):
        report.problems.append(f"the snapshot saw ids up to {next_id}, past the store's counter "
                               f"{counter} and the id mark {mark}")
    return header["kind"], True


def _check_attributes(directory: Path, store: Store, report: CheckReport) -> None:
    """Compare the saved attribute index (the change log replayed, as on start) with the
    store's rows, field by field."""
    attrs, why = attribute_snapshot.load(directory, store, report.bits, index_rows)
    if attrs is None:
        report.notes.append(f"attribute index: {why}; the server rebuilds it from the store")
        return
    report.problems += attribute_differences(attrs, store)
