"""An index folder: its file names, one process at a time (a lock), the model its codes belong to, and
SQLite's own check of the store when it opens."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from pathlib import Path

from crossbit.indexer.interface import ModelMismatch
from crossbit.indexer.items import StoreError
from crossbit.indexer.store import Store

log = logging.getLogger(__name__)

STORE = "store.sqlite3"
ID_MARK = "ids.mark"
LOCK = "index.lock"
CHECK_AT_OPEN_BYTES = 1 << 30  # stores up to this size are checked before serving


class DirectoryInUse(RuntimeError):
    """Another process holds this index folder (a second server on the same data)."""


def lock_directory(directory: Path):
    """Hold an exclusive lock on an index folder for as long as the returned file is open.

    One process serves a folder: two would each keep their own in-memory index of one store
    (each missing the other's adds) and their own idea of the id mark.
    """
    f = open(directory / LOCK, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise DirectoryInUse(f"{directory} is in use by {holder}: one crossbit server (or "
                             "reindex, or check --repair) per data directory; stop it first, "
                             "or give this one another --data") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}\n")
    f.flush()
    return f


def check_model(store: Store, model: dict, directory: Path) -> None:
    """Record the model of a store's codes on first use; refuse another model afterwards."""
    stored = store.model_record()
    if stored is None:
        if store.count():
            log.warning("index %s: no model recorded for its %d items (made before crossbit "
                        "kept one); recording %s", directory, store.count(), model["name"])
        store.set_model_record(model)
        return
    if stored.get("fingerprint") != model.get("fingerprint"):
        raise ModelMismatch(
            f"{directory} holds codes made by {stored.get('name')} (fingerprint "
            f"{stored.get('fingerprint')}, {stored.get('bits')} bits, {stored.get('text_model')}), "
            f"not by {model.get('name')} (fingerprint {model.get('fingerprint')}): serve it with "
            "the model that made it, or re-encode it first (crossbit reindex --data DIR "
            "--model ...)")


def check_integrity(store: Store, directory: Path) -> dict:
    """SQLite's ``PRAGMA integrity_check`` of the store (pages, and every index entry against its
    row: about 2 s per GB here, 0.4 s for 300,000 items).

    A store up to :data:`CHECK_AT_OPEN_BYTES` is checked before it is served, and a
    damaged one is refused (StoreError naming what to run); a larger one is checked in the
    background, and damage found there is logged as an error and shown in the index's stats.
    Returns the state the stats show (``{"integrity_check": "ok"}`` when sound).
    """
    size = sum(os.path.getsize(p) for p in (store.path, store.path + "-wal") if os.path.exists(p))
    state = {"integrity_check": "running", "store_bytes": size}

    def run() -> str:
        try:
            answer = store.integrity()
        except sqlite3.DatabaseError as exc:  # too damaged to walk
            answer = str(exc)
        state["integrity_check"] = answer
        return answer

    if size <= CHECK_AT_OPEN_BYTES:
        answer = run()
        if answer != "ok":
            raise StoreError(damaged(directory, answer) + "; it is not served until then")
        return state

    def background() -> None:
        try:
            answer = run()
        except Exception as exc:  # the store closed under it (the index closed): nothing to say
            state["integrity_check"] = f"not finished ({exc})"
            return
        if answer != "ok":
            log.error("%s", damaged(directory, answer) + "; it is served meanwhile")

    threading.Thread(target=background, daemon=True, name="crossbit-integrity-check").start()
    return state


def damaged(directory: Path, answer: str) -> str:
    found = " ".join(answer.split())[:300]
    return (f"index {directory}: the store's pages are damaged (SQLite integrity_check: {found}): "
            "stop the server, run 'crossbit check --data <the data directory>' to see what "
            "differs, and restore the store from a backup")
