"""Collections: one server, many catalogs, each with its own model, index kind, store, snapshot and
lock; created, listed, described and dropped while the server runs.

The ``default`` collection is the data directory itself (``DATA/images``, ``DATA/texts``), so an
existing data directory opens unchanged as ``default``. Every other one lives in
``DATA/collections/NAME/`` with its record (``collection.json``: model, kind, options); on the
milvus kind with a server URI the records live in Milvus (``crossbit_catalog``) so every server
sharing it sees every collection, and each collection is a pair of Milvus collections.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from crossbit.indexer import KINDS, Index, open_index
from crossbit.server.core.exceptions import NotFoundError, UnavailableError
from crossbit.server.core.models import Encoders, ModelPool, model_spec

log = logging.getLogger(__name__)

DEFAULT = "default"
NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
NAME_RULE = "a lowercase letter, then up to 62 lowercase letters, digits or underscores"
RECORD = "collection.json"
FOLDER = "collections"
MODALITIES = ("image", "text")
OPTIONS = {  # index options a collection may set, by kind
    "flat": {"engine"}, "gpu": {"device"}, "ivf": {"nprobe", "nlist", "train_size"},
    "hnsw": {"m", "ef_search", "ef_construction"}, "auto": {"nprobe"},
    "milvus": {"index_type", "nlist", "nprobe", "consistency"}}
DROP_WAIT_S = 30.0  # how long a drop waits for calls in flight on the collection


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"collection name {str(name)[:80]!r} is not allowed: use {NAME_RULE}")
    return name


@dataclass
class CollectionRecord:
    """What a collection is: its name, the model that makes its codes, its index kind and options."""

    name: str
    model: str = "default"  # a shipped model's name or a model folder on the server
    index: str = "auto"  # the index kind
    options: dict = field(default_factory=dict)  # the kind's options (nprobe, nlist...)
    created: float = 0.0


class Collection:
    """An open collection: its record, its model's encoders and its two indexes.

    Calls use it inside :meth:`use`, so a drop can wait for them and refuse new ones.
    """

    def __init__(self, record: CollectionRecord, encoders: Encoders, indexes: dict[str, Index],
                 folder: Path):
        self.record, self.encoders, self.indexes, self.folder = record, encoders, indexes, folder
        self._active = 0
        self._cond = threading.Condition()
        self.dropping = False

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def bits(self) -> int:
        return self.encoders.bits

    @contextmanager
    def use(self) -> Iterator[Collection]:
        with self._cond:
            if self.dropping:
                raise NotFoundError(f"collection {self.name!r} is being dropped")
            self._active += 1
        try:
            yield self
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def wait_idle(self, timeout: float) -> int:
        """Wait until no call uses the collection (or ``timeout``); returns the calls still in."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._active and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return self._active

    def size_bytes(self) -> int:
        if self.record.index == "milvus":
            return 0
        total = 0
        for m in MODALITIES:
            folder = self.folder / f"{m}s"
            if folder.is_dir():
                for p in folder.iterdir():
                    try:
                        total += p.stat().st_size if p.is_file() else 0
                    except FileNotFoundError:  # a WAL or temp file gone meanwhile
                        pass
        return total

    def describe(self) -> dict:
        """:meth:`info` within :meth:`use` (NotFoundError when it is being dropped)."""
        with self.use():
            return self.info()

    def info(self) -> dict:
        counts = {m: self.indexes[m].stats()["items"] for m in MODALITIES}
        fingerprint = self.encoders.fingerprint()
        return {"name": self.name, "model": self.record.model,
                "model_fingerprint": fingerprint.get("fingerprint", ""),
                "index_kind": self.indexes["image"].kind, "bits": self.bits,
                "images": counts["image"], "texts": counts["text"],
                "size_bytes": self.size_bytes(), "index_options": self.record.options,
                "created": self.record.created}

    def close(self) -> None:
        for index in self.indexes.values():
            try:
                index.close()
            except Exception:  # the other index still closes (and snapshots)
                log.exception("closing collection %s failed", self.name)


def index_options(config, record: CollectionRecord, fingerprint: dict) -> dict:
    """The options ``open_index`` gets for one collection: the server's settings, then the
    collection's own."""
    if record.index == "milvus":
        options = {"uri": config.milvus_uri, "token": config.milvus_token,
                   "database": config.milvus_database, "index_type": config.milvus_index_type,
                   "nlist": config.milvus_nlist, "nprobe": config.nprobe,
                   "consistency": config.milvus_consistency, "model": fingerprint}
    else:
        options = {"threads": config.faiss_threads, "snapshot_interval": config.snapshot_interval,
                   "embeddings_in_memory": config.embeddings_in_memory, "model": fingerprint}
        if record.index in ("ivf", "auto"):
            options["nprobe"] = config.nprobe
    return {**options, **record.options}


def open_indexes(config, record: CollectionRecord, folder: Path, bits: int,
                 fingerprint: dict) -> dict[str, Index]:
    """The collection's image and text indexes (both closed again if one fails)."""
    options = index_options(config, record, fingerprint)
    indexes: dict[str, Index] = {}
    try:
        for m in MODALITIES:
            extra = {}
            if record.index == "milvus" and record.name != DEFAULT:
                extra["collection"] = f"crossbit_{record.name}_{m}s"
            indexes[m] = open_index(folder / f"{m}s", bits, record.index, **options, **extra)
    except BaseException:
        for index in indexes.values():
            index.close()
        raise
    return indexes


class Registry:
    """Every collection of a server: opened at start, created and dropped while it runs.

    Args:
        config: the server's settings (``data``, ``index``, ``model``, the Milvus ones).
        models: the shared models.
        catalog: where collection records live besides the data directory (the Milvus
            catalog, shared by servers), or None.
    """

    def __init__(self, config, models: ModelPool, catalog=None):
        self.config, self.models, self.catalog = config, models, catalog
        self.root = Path(config.data)
        self._lock = threading.RLock()
        self._open: dict[str, Collection] = {}

    # -- opening ---------------------------------------------------------------------------
    def folder(self, name: str) -> Path:
        return self.root if name == DEFAULT else self.root / FOLDER / name

    def default_record(self) -> CollectionRecord:
        return CollectionRecord(DEFAULT, model_spec(self.config.model), self.config.index)

    def open_all(self) -> None:
        """The default collection and every recorded one (leftovers of an interrupted create
        or drop are removed first)."""
        self._open_record(self.default_record())
        for record in self._records():
            if record.name not in self._open:
                try:
                    self._open_record(record)
                except Exception:
                    self.close()
                    raise

    def _records(self) -> list[CollectionRecord]:
        out = []
        base = self.root / FOLDER
        if base.is_dir():
            for entry in sorted(base.iterdir()):
                if entry.name.startswith("."):  # .creating-x / .dropped-x: never finished
                    log.warning("removing %s (a create or drop that did not finish)", entry)
                    shutil.rmtree(entry, ignore_errors=True)
                elif (entry / RECORD).is_file():
                    out.append(CollectionRecord(**json.loads((entry / RECORD).read_text())))
        if self.catalog is not None:
            out += [CollectionRecord(**r) for r in self.catalog.records()]
        return out

    def _open_record(self, record: CollectionRecord) -> Collection:
        encoders = self.models.get(record.model)
        folder = self.folder(record.name)
        indexes = open_indexes(self.config, record, folder, encoders.bits, encoders.fingerprint())
        collection = Collection(record, encoders, indexes, folder)
        with self._lock:
            self._open[record.name] = collection
        log.info("collection %s: model %s, %s index, %d bits", record.name, record.model,
                 indexes["image"].kind, encoders.bits)
        return collection

    def adopt(self, collection: Collection) -> None:
        """Serve a collection whose indexes the caller opened (tests, benchmarks)."""
        with self._lock:
            self._open[collection.name] = collection

    # -- use -------------------------------------------------------------------------------
    def get(self, name: str | None) -> Collection:
        """An open collection by name (empty: default); NotFoundError naming the known ones."""
        name = name or DEFAULT
        with self._lock:
            found = self._open.get(name)
        if found is None and self.catalog is not None and NAME.fullmatch(name):
            record = self.catalog.record(name)  # created through another server
            if record is not None:
                with self._lock:
                    found = self._open.get(name) or self._open_record(CollectionRecord(**record))
        if found is None or found.dropping:
            raise NotFoundError(f"no collection {name[:80]!r} (crossbit collections list shows "
                                "them; create one with crossbit collections create)")
        return found

    def all(self) -> list[Collection]:
        if self.catalog is not None:
            for record in self.catalog.records():
                if record["name"] not in self._open:
                    try:
                        self.get(record["name"])
                    except Exception:
                        log.exception("collection %s of the catalog did not open", record["name"])
        with self._lock:
            return [c for c in self._open.values() if not c.dropping]

    # -- create and drop -------------------------------------------------------------------
    def create(self, name: str, model: str | None = None, index: str | None = None,
               options: dict | None = None, exist_ok: bool = False) -> Collection:
        """A new collection, its record written (fsynced) before its indexes open.

        Raises:
            ValueError: a bad name, an unknown model or kind, options the kind does not take,
                or an existing name (unless ``exist_ok``, which returns it).
        """
        check_name(name)
        kind = index or self.config.index
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
        options = dict(options or {})
        allowed = OPTIONS.get(kind, set())
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(f"index kind {kind} takes no options {unknown} (it takes "
                             f"{sorted(allowed) or 'none'})")
        if kind == "milvus" and not self.config.milvus_uri:
            raise ValueError("a milvus collection needs the server started with --milvus-uri")
        with self._lock:
            existing = self._open.get(name)
            if existing is None and self.catalog is not None and self.catalog.record(name):
                existing = self.get(name)
            if existing is not None:
                if existing.dropping:
                    raise NotFoundError(f"collection {name!r} is being dropped; create it again "
                                        "once the drop is done")
                if exist_ok and not _differs(existing.record, model, index, options):
                    return existing
                raise ValueError(f"collection {name!r} exists already" + (
                    f" with model {existing.record.model}, index {existing.record.index} "
                    f"{existing.record.options}: exist_ok returns it only when what was asked "
                    "matches" if exist_ok else ""))
            record = CollectionRecord(name, model_spec(model), kind, options, time.time())
            self.models.get(record.model)  # an unknown model fails here, before anything is written
            if kind == "milvus":
                collection = self._open_record(record)
                self.catalog.put(asdict(record))
                return collection
            folder = self.folder(name)
            if folder.exists():
                raise ValueError(f"{folder} exists but is not a collection: move it away first")
            staging = folder.parent / f".creating-{name}"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            _write_json(staging / RECORD, asdict(record))
            os.replace(staging, folder)
            _fsync_dir(folder.parent)
            try:
                return self._open_record(record)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise

    def drop(self, name: str, confirm: str, wait_s: float = DROP_WAIT_S) -> None:
        """Remove a collection and every item in it, after the calls using it have finished
        (at most ``wait_s``; calls still in then fail with UNAVAILABLE). The folder goes only
        once the indexes are closed."""
        if confirm != name:
            raise ValueError(f"to drop {name!r} give its name twice (confirm_name); it removes "
                             "every item in it")
        if name == DEFAULT:
            raise ValueError("the default collection cannot be dropped (delete its items instead)")
        collection = self.get(name)
        with collection._cond:
            collection.dropping = True
        left = collection.wait_idle(wait_s)
        if left:
            log.warning("collection %s: %d calls still running after %.0fs; dropping anyway",
                        name, left, wait_s)
        if collection.record.index == "milvus":
            for index in collection.indexes.values():
                index.drop()
        collection.close()
        with self._lock:
            self._open.pop(name, None)
        if collection.record.index == "milvus":
            self.catalog.remove(name)
        else:
            trash = collection.folder.parent / f".dropped-{name}-{int(time.time())}"
            os.replace(collection.folder, trash)
            _fsync_dir(trash.parent)
            shutil.rmtree(trash, ignore_errors=True)
        log.info("collection %s dropped", name)

    def close(self) -> None:
        with self._lock:
            collections, self._open = list(self._open.values()), {}
        for collection in collections:
            collection.close()


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def closed_error(name: str) -> UnavailableError:
    return UnavailableError(f"collection {name!r} was dropped during the call")


def _differs(record: CollectionRecord, model: str | None, index: str | None,
             options: dict) -> bool:
    """Whether a create asks for something other than an existing collection (what it leaves
    out is not compared)."""
    return bool((model and model_spec(model) != record.model)
                or (index and index != record.index)
                or (options and options != record.options))
