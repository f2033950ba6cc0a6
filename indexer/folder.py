"""An index folder: its file names, one process at a time (a lock), and the model its codes belong to."""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from crossbit.indexer.interface import ModelMismatch
from crossbit.indexer.store import Store

log = logging.getLogger(__name__)

STORE = "store.sqlite3"
ID_MARK = "ids.mark"
LOCK = "index.lock"


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
