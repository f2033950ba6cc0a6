"""The command line as users type it: --help everywhere, and serve/index/search/stats on a real port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from crossbit.server.cli import build_parser, main

from helpers import free_port

COMMANDS = ["serve", "index", "search", "stats", "train", "evaluate", "export-onnx", "load",
            "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"crossbit {command}" in out and len(out) > 200


def test_python_dash_m_and_top_level_help():
    out = subprocess.run([sys.executable, "-m", "crossbit", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in COMMANDS:
        assert command in out
    assert build_parser().prog == "crossbit"


def test_search_without_a_query_says_how(capsys):
    assert main(["search"]) == 2
    assert "give a text" in capsys.readouterr().err


def test_serve_index_search_stats_and_sigterm(tmp_path, photos):
    images = tmp_path / "photos"
    images.mkdir()
    for name in ("chelsea", "coffee", "rocket", "camera"):
        (images / f"{name}.jpg").write_bytes(photos[name])
    (images / "broken.jpg").write_bytes(b"not really a jpeg")
    port = free_port()
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    crossbit = [sys.executable, "-m", "crossbit"]
    server = subprocess.Popen(crossbit + ["serve", "--data", str(data), "--port", str(port),
                                          "--index", "flat"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stdout.readline()
        assert f"127.0.0.1:{port}" in line, line + server.stderr.read()[-2000:]
        address = ["--server", f"127.0.0.1:{port}"]
        index = subprocess.run(crossbit + ["index", str(images)] + address, capture_output=True,
                               text=True, env=env, timeout=120)
        assert index.returncode == 1  # one image was refused, and the output says which
        assert "added 4 of 5 images; 1 refused" in index.stdout
        assert "broken.jpg: INVALID_ARGUMENT" in index.stdout
        search = subprocess.run(crossbit + ["search", "a cup of coffee", "--json", "-k", "2"]
                                + address, capture_output=True, text=True, env=env, timeout=60,
                                check=True)
        hits = json.loads(search.stdout)
        assert len(hits) == 2 and {h["key"] for h in hits} <= {  # keys: absolute paths
            str((images / f"{n}.jpg").resolve()) for n in ("chelsea", "coffee", "rocket", "camera")}
        by_image = subprocess.run(crossbit + ["search", "--image", str(images / "rocket.jpg")]
                                  + address, capture_output=True, text=True, env=env,
                                  timeout=60, check=True)
        assert by_image.stdout.splitlines()[0].split()[-1] == str((images / "rocket.jpg").resolve())
        stats = subprocess.run(crossbit + ["stats"] + address, capture_output=True, text=True,
                               env=env, timeout=60, check=True)
        assert json.loads(stats.stdout)["images"] == 4
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            raise
    assert code == 0
    assert (data / "images" / "index.snapshot").exists()  # snapshotted on the way out
    log = server.stderr.read()
    assert "shutting down" in log
    # the data directory reopens with everything in it, from the snapshot
    from crossbit.indexer.index import open_index

    with open_index(data / "images", 64, "flat", snapshot_interval=0) as reopened:
        assert len(reopened) == 4 and "loaded snapshot" in reopened.opened_from
