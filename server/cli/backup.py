"""``crossbit backup`` and ``crossbit restore``: a consistent copy of a data directory, taken while a
server runs (SQLite's online backup of every store), and put back with the indexes rebuilt."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

STORE, MARK, RECORD = "store.sqlite3", "ids.mark", "collection.json"
MANIFEST = "crossbit-backup.json"


def add_backup_commands(sub) -> None:
    p = sub.add_parser("backup", help="copy a data directory, consistently, while it is served",
                       description="Copy every collection of a data directory into OUT while a "
                       "server may be running on it: each SQLite store through SQLite's online "
                       "backup (a consistent picture: every write acknowledged before it began "
                       "is in it, none half-written), the id marks and the collection records. "
                       "Index snapshots are not copied: restore rebuilds them from the stores. "
                       "Collections on Milvus are Milvus's to back up (listed, skipped).")
    p.add_argument("out", help="a new folder for the backup")
    p.add_argument("--data", default="data", help="the server's data directory")
    p = sub.add_parser("restore", help="put a backup back as a data directory (server stopped)",
                       description="Copy a backup made by crossbit backup into DATA (which must "
                       "be empty or absent, or --force to replace it) and rebuild each index "
                       "from its store, so crossbit check passes and serve starts at once.")
    p.add_argument("backup", help="a folder written by crossbit backup")
    p.add_argument("--data", default="data", help="the data directory to restore into")
    p.add_argument("--force", action="store_true",
                   help="replace what DATA holds, when no server runs on it (it is moved aside to "
                   "DATA.before-restore, or .before-restore.1, .2... if that exists)")


def index_folders(data: Path) -> list[Path]:
    """Every index folder of a data directory: the default collection's and each other's."""
    out = [data / m for m in ("images", "texts") if (data / m / STORE).exists()]
    base = data / "collections"
    if base.is_dir():
        for entry in sorted(base.iterdir()):
            if not entry.name.startswith(".") and (entry / RECORD).is_file():
                out += [entry / m for m in ("images", "texts") if (entry / m / STORE).exists()]
    return out


def kind_of(folder: Path) -> str:
    """The index kind a collection's record names (the default collection's: flat)."""
    record = folder.parent / RECORD
    kind = json.loads(record.read_text()).get("index", "flat") if record.is_file() else "flat"
    return "flat" if kind in ("auto", "gpu") else kind


def copy_store(src: Path, dst: Path) -> int:
    """SQLite's online backup of one store (a consistent picture, even under writes); the
    number of items in the copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30.0)
    target = sqlite3.connect(dst)
    try:
        source.backup(target)  # one step: one read transaction for the whole copy
        target.execute("PRAGMA journal_mode=DELETE")  # the copy is one file
        count = target.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    finally:
        target.close()
        source.close()
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())
    return count


def cmd_backup(args) -> int:
    data, out = Path(args.data), Path(args.out)
    folders = index_folders(data)
    if not folders:
        print(f"crossbit backup: no crossbit stores under {data}", file=sys.stderr)
        return 2
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"crossbit backup: {out} is {'not empty' if out.is_dir() else 'a file'}: give a new "
              "folder", file=sys.stderr)
        return 2
    started = time.time()
    manifest = {"crossbit_backup": 1, "source": str(data.resolve()), "started": started,
                "indexes": {}}
    for folder in folders:
        rel = folder.relative_to(data)
        target = out / rel
        items = copy_store(folder / STORE, target / STORE)
        if (folder / MARK).exists():  # read after the store: never behind the store's ids
            shutil.copy2(folder / MARK, target / MARK)
        record = folder.parent / RECORD
        if record.exists() and folder.parent != data:
            shutil.copy2(record, target.parent / RECORD)
        manifest["indexes"][str(rel)] = items
        print(f"  {rel}: {items} items")
    for record in (data / "collections").glob(f"*/{RECORD}"):
        if json.loads(record.read_text()).get("index") == "milvus":
            print(f"  {record.parent.name}: on Milvus, skipped (back it up with Milvus's tools)")
    manifest["finished"] = time.time()
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    print(f"backup of {data} in {out}: {len(folders)} stores, "
          f"{sum(manifest['indexes'].values())} items, {manifest['finished'] - started:.1f}s")
    return 0


def free_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``... the first that does not exist (an earlier copy set
    aside is never deleted)."""
    n, out = 0, path
    while out.exists():
        n += 1
        out = path.with_name(f"{path.name}.{n}")
    return out


def cmd_restore(args) -> int:
    from crossbit.indexer import open_index
    from crossbit.indexer.check import stored_bits
    from crossbit.indexer.folder import DirectoryInUse, lock_directory

    backup, data = Path(args.backup), Path(args.data).resolve()
    if not (backup / MANIFEST).is_file():
        print(f"crossbit restore: {backup} is not a crossbit backup (no {MANIFEST})",
              file=sys.stderr)
        return 2
    if data.exists() and (not data.is_dir() or any(data.iterdir())):
        if not args.force or not data.is_dir():
            print(f"crossbit restore: {data} is not empty: stop its server and give --force to "
                  "replace it (it is kept as DATA.before-restore)", file=sys.stderr)
            return 2
        held = []
        try:  # no server (nor reindex, nor check --repair) may hold any of its folders
            for folder in index_folders(data):
                held.append(lock_directory(folder))
        except DirectoryInUse as exc:
            print(f"crossbit restore: {exc}", file=sys.stderr)
            return 2
        try:
            aside = free_name(data.with_name(data.name + ".before-restore"))
            os.replace(data, aside)
        finally:
            for f in held:
                f.close()
        print(f"what {data} held is kept in {aside}")
    staging = data.with_name(data.name + ".restoring")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(backup, staging, ignore=shutil.ignore_patterns(MANIFEST))
    for folder in index_folders(staging):  # each index rebuilt from its store and snapshotted
        with open_index(folder, stored_bits(folder / STORE), kind_of(folder),
                        snapshot_interval=0):
            pass
    os.replace(staging, data)
    print(f"restored {backup} into {data}: {len(index_folders(data))} stores; indexes rebuilt")
    return 0


BACKUP_COMMANDS = {"backup": cmd_backup, "restore": cmd_restore}
