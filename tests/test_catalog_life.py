"""A catalog's life through the CLI and the client: metadata another writer set survives indexing
again (reported unchanged), --meta, --prune with a dry run, deletes of what is gone, a missing
file among good ones, export/import, backup under writes and restore, the small things a newcomer
hit (--version, a mistyped flag, plurals)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from crossbit.client import Client
from crossbit.server.cli import main

CLI = [sys.executable, "-m", "crossbit"]


def run(*args, check=True, cwd=None) -> subprocess.CompletedProcess:
    done = subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=300, cwd=cwd)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def served(make_server, tmp_path, photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea", "coffee", "rocket", "camera"):
        (folder / f"{name}.jpg").write_bytes(photos[name])
    running = make_server(data=str(tmp_path / "data"))
    return running, folder, ["--server", f"127.0.0.1:{running.port}"]


def test_reindexing_keeps_other_writers_metadata(served):
    running, folder, address = served
    first = run("index", folder, *address)
    assert "4 images: 4 added" in first.stdout
    client = Client(f"127.0.0.1:{running.port}")
    coffee = str((folder / "coffee.jpg").resolve())
    again = client.add_images([folder / "coffee.jpg"], metadata=[{"album": 2024}])
    assert again.unchanged == 0 and again.replaced == 1  # new metadata: replaced
    second = run("index", folder, "--meta", "source=camera-roll", *address)
    assert "0 added, 4 replaced" in second.stdout  # the new field changes each item once
    third = run("index", folder, "--meta", "source=camera-roll", *address)
    assert "0 added, 0 replaced, 4 unchanged" in third.stdout, third.stdout
    [item] = client.get(keys=[coffee])
    assert item.metadata["album"] == 2024 and item.metadata["source"] == "camera-roll"
    assert item.metadata["path"] == coffee  # absolute, like the key
    for spelled, cwd in ((".", folder), (folder.name, folder.parent), (f"{folder}/", None)):
        out = run("index", spelled, "--meta", "source=camera-roll", *address, cwd=cwd)
        assert "0 added, 0 replaced, 4 unchanged" in out.stdout, (spelled, out.stdout)
    # the merged fields are what filters see, also after a re-add that changed the item
    assert client.count(filter="album == 2024") == 1
    run("index", folder, "--meta", "source=scanner", *address)
    assert client.count(filter='album == 2024 and source == "scanner"') == 1
    assert client.count(filter='exists path and source == "scanner"') == 4


def test_prune_with_a_dry_run_first(served):
    running, folder, address = served
    run("index", folder, *address)
    (folder / "rocket.jpg").unlink()
    dry = run("index", folder, "--prune", "--dry-run", *address)
    assert "1 stored image would be pruned" in dry.stdout and "rocket.jpg" in dry.stdout
    assert Client(f"127.0.0.1:{running.port}").count() == 4  # the dry run changed nothing
    pruned = run("index", folder, "--prune", *address)
    assert "1 image pruned" in pruned.stdout and "3 images:" in pruned.stdout
    assert Client(f"127.0.0.1:{running.port}").count() == 3
    moved = folder.rename(folder.with_name("elsewhere"))  # like a disk that is not mounted
    folder.mkdir()
    refused = run("index", folder, "--prune", *address, check=False)
    assert refused.returncode == 1 and "holds no images" in refused.stderr, refused.stderr
    assert Client(f"127.0.0.1:{running.port}").count() == 3
    folder.rmdir()
    moved.rename(folder)


def test_deletes_and_missing_files(served, photos, tmp_path):
    running, folder, address = served
    client = Client(f"127.0.0.1:{running.port}")
    ids = client.add_images([folder / "coffee.jpg", tmp_path / "nope.jpg", folder / "camera.jpg",
                             tmp_path])
    assert ids[0] is not None and ids[2] is not None and ids[1] is None and ids[3] is None
    reasons = {n: why for n, _, why in ids.refusals}
    assert "nope.jpg: no such file" in reasons[1] and "folder" in reasons[3]
    key = str((folder / "coffee.jpg").resolve())
    out = run("delete", "--key", key, "--key", "/never/added.jpg", *address)
    assert "1 image deleted; not found: 1 key\n" in out.stdout
    typo = run("delete", "--filter", "year ==", *address, check=False)
    assert typo.returncode != 0 and "position 7" in typo.stderr, typo.stderr  # as typed
    null = run("update-metadata", "--key", key, "--set", "n=null", *address, check=False)
    assert null.returncode != 0 and "--remove" in null.stderr, null.stderr
    again = run("delete", "--key", key, *address)  # a retried delete succeeds
    assert "0 images deleted" in again.stdout
    dry = run("delete", "--prefix", folder, "--dry-run", *address)
    assert "camera.jpg" in dry.stdout and "1 image would be deleted" in dry.stdout
    both = run("delete", "--id", ids[2], "--prefix", folder, "--dry-run", *address)
    assert "1 image would be deleted" in both.stdout  # named twice, counted once
    run("delete", "--prefix", folder, *address)
    assert client.count() == 0


def test_export_and_import(served, tmp_path):
    running, folder, address = served
    run("index", folder, "--meta", "album=2024", *address)
    run("add-texts", write_lines(tmp_path / "t.txt", ["a cat", "a rocket"]), *address)
    out = tmp_path / "export.jsonl"
    run("export", out, "--codes", *address)
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + 4 + 2
    run("collections", "create", "copy", *address)
    done = run("import", out, "--collection", "copy", *address)
    assert "6 added" in done.stdout
    client = Client(f"127.0.0.1:{running.port}", collection="copy")
    assert client.count() == 4 and client.count(modality="text") == 2
    hit = client.search(text="a cup of coffee", top_k=1)[0]
    assert hit.key.endswith("coffee.jpg") and hit.metadata["album"] == 2024
    # bad rows are refused one by one, by line, and the rest go in
    import json

    rows = [json.loads(line) for line in lines]
    images = [n for n, r in enumerate(rows) if r.get("modality") != "text" and n]
    rows[images[0]]["metadata"]["album"] = None  # a value that cannot be kept
    rows[images[1]]["code"] = "zz"  # not hex
    bad = [json.dumps(r) for r in rows]
    bad.insert(images[2], "{not json")
    run("collections", "create", "copy2", *address)
    done = run("import", write_lines(tmp_path / "bad.jsonl", bad), "--collection", "copy2",
               *address, check=False)
    assert done.returncode == 1 and "4 added" in done.stdout and "3 refused" in done.stdout
    for n in (images[0] + 1, images[1] + 1, images[2] + 1):
        assert f"bad.jsonl:{n}" in done.stderr, done.stderr
    assert "album" in done.stderr and "not JSON" in done.stderr


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_backup_under_writes_and_restore(served, tmp_path):
    """Adds and deletes run through the backup: what was acknowledged before it began is in it
    (deleted items absent), and the restored copy passes crossbit check."""
    import time

    running, folder, address = served
    client = Client(f"127.0.0.1:{running.port}")
    client.add_texts([f"caption {i}" for i in range(300)], keys=[f"k{i}" for i in range(300)])
    client.create_collection("other")
    client.add_texts(["in the other collection"], keys=["o"], collection="other")
    stop, events = threading.Event(), []  # ("add" | "delete", key), acknowledged, in order

    def writes():
        n = 0
        while not stop.is_set():
            client.add_texts([f"during {n}"], keys=[f"d{n}"])
            events.append(("add", f"d{n}"))
            client.delete(keys=[f"k{n % 300}"], modality="text")
            events.append(("delete", f"k{n % 300}"))
            n += 1

    writer = threading.Thread(target=writes)
    writer.start()
    time.sleep(1.0)
    began = list(events)  # acknowledged before the backup began
    try:
        out = run("backup", tmp_path / "backup", "--data", running.core.config.data)
    finally:
        stop.set()
        writer.join()
    assert "texts" in out.stdout
    restored = tmp_path / "restored"
    run("restore", tmp_path / "backup", "--data", restored)
    check = run("check", "--data", restored)
    assert check.stdout.count(": ok") >= 3, check.stdout  # default images, texts, other
    from crossbit.indexer import open_index

    with open_index(restored / "texts", 64, "flat", snapshot_interval=0) as index:
        keys = {i.key for i in index.page(0, 100_000)}
    added_before = {k for e, k in began if e == "add"}
    deleted_before = {k for e, k in began if e == "delete"}
    deleted_after = {k for e, k in events[len(began):] if e == "delete"}
    expected = ({f"k{i}" for i in range(300)} | added_before) - deleted_before - deleted_after
    assert began and expected <= keys, sorted(expected - keys)[:10]
    assert not (deleted_before & keys), sorted(deleted_before & keys)[:10]
    assert keys <= {f"k{i}" for i in range(300)} | {k for e, k in events if e == "add"}
    with open_index(restored / "collections" / "other" / "texts", 64, "flat",
                    snapshot_interval=0) as index:
        assert [i.key for i in index.page(0, 10)] == ["o"]
    assert run("restore", tmp_path / "backup", "--data", restored, check=False).returncode == 2
    live = run("restore", tmp_path / "backup", "--data", running.core.config.data, "--force",
               check=False)  # a served folder is never replaced under its server
    assert live.returncode == 2 and "is in use by" in live.stderr, live.stderr
    assert client.count(modality="text") > 0  # the server still has its own
    for aside in ["restored.before-restore", "restored.before-restore.1"]:
        out = run("restore", tmp_path / "backup", "--data", restored, "--force")
        assert aside in out.stdout and (tmp_path / aside / "texts").is_dir()  # none deleted


def test_small_things(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("crossbit ")
    with pytest.raises(SystemExit):
        main(["search", "--no-such-flag", "x"])
    err = capsys.readouterr().err
    assert err.startswith("usage: crossbit search") and "--no-such-flag" in err
