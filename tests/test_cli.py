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

COMMANDS = ["serve", "index", "add-texts", "search", "stats", "collections", "get", "list",
            "count", "delete", "update-metadata", "export", "import", "backup", "restore",
            "check", "reindex", "train", "evaluate", "export-onnx", "export-light", "load", "demo"]


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
        assert "5 images: 4 added, 0 replaced, 0 unchanged, 1 refused" in index.stdout
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
    from crossbit.indexer import open_index

    with open_index(data / "images", 64, "flat", snapshot_interval=0) as reopened:
        assert len(reopened) == 4 and "loaded snapshot" in reopened.opened_from


def test_every_flag_says_what_it_does():
    import argparse

    def commands(parser, prefix):  # every command, the nested ones too (collections create)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, command in action.choices.items():
                    yield f"{prefix} {name}".strip(), command
                    yield from commands(command, f"{prefix} {name}")

    for name, command in commands(build_parser(), ""):
        for action in command._actions:
            if action.dest == "help":
                continue
            assert action.help, f"crossbit {name} {action.option_strings}: no help"
            words = action.help.replace("-", " ").replace("_", " ").lower().split()
            assert len(words) >= 3, f"crossbit {name} {action.option_strings}: {action.help!r}"


def test_index_keys_two_folders_reindex_and_texts(make_server, photos, tmp_path, capsys):
    running = make_server()
    server = ["--server", f"127.0.0.1:{running.port}"]
    for trip, names in (("trip2023", ("chelsea", "coffee")), ("trip2024", ("rocket", "camera"))):
        (tmp_path / trip / "sub").mkdir(parents=True)
        for n, name in enumerate(names):
            (tmp_path / trip / f"IMG_000{n}.jpg").write_bytes(photos[name])
        (tmp_path / trip / "notes.txt").write_text("not a photo")
        (tmp_path / trip / "sub" / "IMG_0009.jpg").write_bytes(photos["moon"])
    assert main(["index", str(tmp_path / "trip2023")] + server) == 0
    out = capsys.readouterr().out
    assert "2 images: 2 added, 0 replaced, 0 unchanged, 0 refused; 1 file skipped" in out
    assert main(["index", str(tmp_path / "trip2024"), "--recursive"] + server) == 0
    assert "3 images: 3 added" in capsys.readouterr().out  # same names, other folder: new items
    assert running.core.indexes["image"].stats()["items"] == 5
    assert main(["index", str(tmp_path / "trip2023")] + server) == 0  # again: nothing duplicated
    assert "2 images: 0 added, 0 replaced, 2 unchanged" in capsys.readouterr().out
    (tmp_path / "trip2023" / "IMG_0000.jpg").write_bytes(photos["coins"])  # edited on disk
    assert main(["index", str(tmp_path / "trip2023" / "*.jpg")] + server) == 0  # a glob
    assert "2 images: 0 added, 1 replaced, 1 unchanged" in capsys.readouterr().out
    assert running.core.indexes["image"].stats()["items"] == 5
    assert running.core.indexes["image"].verify() == ""
    texts = tmp_path / "captions.txt"
    texts.write_text("a cat on a sofa\n\na rocket on its pad\n")
    assert main(["add-texts", str(texts)] + server) == 0
    assert "2 texts: 2 added" in capsys.readouterr().out
    assert main(["add-texts", str(texts)] + server) == 0
    assert "2 texts: 0 added, 0 replaced, 2 unchanged" in capsys.readouterr().out
    assert main(["search", "a cat", "--modality", "text", "-k", "1"] + server) == 0
    assert "captions.txt:1" in capsys.readouterr().out


def test_dead_address_and_bare_host_say_what_to_do(capsys):
    port = free_port()
    assert main(["stats", "--server", f"127.0.0.1:{port}", "--timeout", "3"]) == 1
    err = capsys.readouterr().err
    assert f"no crossbit server answers at 127.0.0.1:{port}" in err and "crossbit serve" in err
    assert "UNKNOWN" not in err and len(err.strip().splitlines()) == 1
    assert main(["stats", "--server", "localhost"]) == 1
    assert "needs HOST:PORT" in capsys.readouterr().err


def test_a_taken_port_fails_in_one_line_before_the_model_loads(tmp_path):
    import socket
    import time

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "crossbit", "serve", "--data", str(tmp_path),
                              "--port", str(port), "--log-format", "text"], capture_output=True,
                             text=True, timeout=120)
    assert out.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert time.monotonic() - start < 30


def test_unknown_choices_are_refused(capsys):
    with pytest.raises(SystemExit) as info:
        main(["serve", "--log-format", "yaml"])
    assert info.value.code == 2 and "invalid choice: 'yaml'" in capsys.readouterr().err


def test_stats_into_a_closed_pipe_is_quiet(make_server):
    running = make_server()
    out = subprocess.run(f"{sys.executable} -m crossbit stats --server 127.0.0.1:{running.port}"
                         " | head -c 1", shell=True, capture_output=True, text=True, timeout=60)
    assert "Broken pipe" not in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_the_demo_says_which_queries_find_their_photo():
    from crossbit.server.demo.run import QUERIES, judged, summary
    from crossbit.server.demo.sample_photos import SAMPLES

    assert all(expected in SAMPLES for _, expected in QUERIES)
    verdicts = [judged("coffee", ["coffee", "page"]), judged("coffee", ["page", "coffee"]),
                judged("coins", ["page", "moon", "cat"])]
    assert verdicts == ["found first", "missed: coffee came 2", "missed: coins not in the top 3"]
    assert summary(verdicts) == "1 of 3 queries put the photo they describe first."


def test_train_holds_out_what_the_data_size_allows():
    from crossbit.encoders.training.catalog import auto_held_out

    sizes = (39, 40, 79, 80, 100, 200, 400, 1_000, 1_500, 6_000, 100_000)
    assert [auto_held_out(n) for n in sizes] == [0, 0, 0, 20, 25, 50, 50, 100, 150, 500, 500]


def test_the_readme_python_snippet_runs_as_written(make_server, photos, tmp_path, monkeypatch,
                                                   capsys):
    import io
    from pathlib import Path

    from PIL import Image

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    running = make_server()
    (tmp_path / "cat.jpg").write_bytes(photos["chelsea"])
    png = io.BytesIO()
    Image.open(io.BytesIO(photos["coffee"])).save(png, format="PNG")
    (tmp_path / "beach.png").write_bytes(png.getvalue())
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet.replace("127.0.0.1:50051", f"127.0.0.1:{running.port}"), "README", "exec"),
         {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "2 0 0 []"  # two added, nothing replaced, unchanged or refused
    assert len(out) == 1 + 2  # then one line per hit (two images stored, top_k 5)
