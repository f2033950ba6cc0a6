"""The snapshot file (magic, JSON header, backend bytes, CRC), and opening a backend from it: loaded and
brought up to the store, or rebuilt from the store (the truth) when it cannot be trusted."""

from __future__ import annotations

import json
import logging
import os
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from crossbit.indexer.backends import Backend
from crossbit.indexer.items import id_digest
from crossbit.indexer.store import Store

log = logging.getLogger(__name__)

SNAPSHOT = "index.snapshot"
MAGIC = b"CROSSBIT-SNAPSHOT-1\n"


def write_snapshot(directory: Path, header: dict, payload: bytes, name: str = SNAPSHOT) -> None:
    """Write ``payload`` under ``header`` atomically to ``directory / name``: a temp file,
    fsync, rename, fsync of the folder. OSError when the disk refuses (the temp file is then
    removed)."""
    header = {**header, "size": len(payload), "crc32": zlib.crc32(payload)}
    path = directory / name
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + json.dumps(header).encode() + b"\n")
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def read_snapshot(path: Path) -> tuple[dict, bytes]:
    """(header, payload) of a snapshot file; ValueError when it is not whole."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError("bad magic")
    header_end = data.index(b"\n", len(MAGIC))
    header = json.loads(data[len(MAGIC) : header_end])
    payload = data[header_end + 1 :]
    if len(payload) != header["size"] or zlib.crc32(payload) != header["crc32"]:
        raise ValueError("checksum mismatch (truncated or corrupt)")
    return header, payload


def replay(backend: Backend, store: Store, seq: int) -> int:
    """Bring a backend loaded from a snapshot at ``seq`` up to the store: every id the log
    touched since leaves it and, if still stored, enters it again. Returns the entries seen."""
    entries = store.log_since(seq)
    # a metadata rewrite (op 3) leaves the code as it was: the backend has nothing to redo
    touched = np.unique(np.array([e[2] for e in entries if e[1] != 3], dtype=np.int64))
    if len(touched):
        present = touched[backend.contains(touched)]
        if len(present):
            backend.remove(present)
        ids, codes = store.codes_for(touched)
        if len(ids):
            backend.add(codes, ids)
    return len(entries)


def store_behind(store: Store, seq: int) -> str:
    """Why a store is older than a snapshot taken at ``seq``, or "" when it is not."""
    behind = seq - store.max_seq()
    if behind <= 0:
        return ""
    return (f"the store's change log ends {behind} changes before the snapshot's (a lost -wal "
            "file, or a store restored from an older copy)")


def id_differences(held: np.ndarray, stored: np.ndarray, holder: str) -> list[str]:
    """What differs between the ids an index holds (any order, repeats kept) and the store's
    (sorted): the invariant is that they are the same ids, each held once."""
    unique, counts = np.unique(held, return_counts=True)
    out = []
    if (counts > 1).any():
        out.append(f"{holder} holds {int((counts > 1).sum())} ids more than once "
                   f"({_preview(unique[counts > 1])})")
    lost = np.setdiff1d(unique, stored)
    if len(lost):
        out.append(f"{len(lost)} ids in {holder} are not in the store ({_preview(lost)})")
    missing = np.setdiff1d(stored, unique)
    if len(missing):
        out.append(f"{len(missing)} stored ids are not in {holder} ({_preview(missing)})")
    return out


def _preview(ids: np.ndarray, n: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:n])
    return shown + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_backend(directory: Path, store: Store, kind: str, bits: int,
                 new_backend: Callable[[], Backend]) -> tuple[Backend, int, str]:
    """The backend of an index folder: its snapshot with the store's later changes replayed,
    or, when the snapshot is missing, unreadable or disagrees with the store, rebuilt from
    the store. Returns (the backend, the log position it stands at, how it was opened)."""
    backend, header = _load(directory, kind, bits, new_backend)
    if backend is not None:
        seq = int(header["seq"])
        store.raise_mark(int(header.get("next_id", 0)))
        replayed = replay(backend, store, seq)
        problem = _disagreement(store, backend, header)
        if not problem:
            return backend, seq, f"loaded snapshot at seq {seq}, replayed {replayed} changes"
        log.warning("index %s: the snapshot and the store disagree (%s); rebuilding from the "
                    "store, which is the truth: what the store lost is lost", directory, problem)
    backend = new_backend()
    for ids, codes in store.iter_codes():
        backend.add(codes, ids)
    return backend, store.max_seq(), f"rebuilt from the store ({len(backend)} items)"


def _disagreement(store: Store, backend: Backend, header: dict) -> str:
    """Why a loaded snapshot (with the log replayed) does not match the store, or ""."""
    behind = store_behind(store, int(header["seq"]))
    held = backend.all_ids()
    if not behind and id_digest(held) == store.id_digest():
        return ""  # same count, bounds and checksums of ids: agreed (0.05 s at 1M items)
    parts = ([behind] if behind else []) + id_differences(held, store.all_ids(), "the snapshot")
    return "; ".join(parts)


def _load(directory: Path, kind: str, bits: int,
          new_backend: Callable[[], Backend]) -> tuple[Backend | None, dict]:
    path = directory / SNAPSHOT
    if not path.exists():
        log.info("index %s: no snapshot", directory)
        return None, {}
    try:
        header, payload = read_snapshot(path)
        if header["bits"] != bits or header["kind"] != kind:
            raise ValueError(f"snapshot is {header['kind']}/{header['bits']} bits, "
                             f"index is {kind}/{bits}")
        backend = new_backend()
        backend.load_bytes(payload, header["extra"])
        return backend, header
    except Exception as exc:  # any unreadable snapshot: the store has everything
        log.warning("index %s: snapshot unusable (%s); rebuilding from the store", directory, exc)
        return None, {}
