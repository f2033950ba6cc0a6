"""The README's collections and tokens sections, run as written: every command of the collections
block against a real server, and its token file given to a real server, each token doing what the
README says it may and refused what it may not."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from crossbit.client import Client, PermissionDenied, Unauthenticated

from helpers import free_port, start_server, stop_server

README = Path(__file__).resolve().parents[1] / "README.md"


def block(name: str) -> str:
    """The code block that follows ``<!-- readme-test: NAME -->`` in the README."""
    match = re.search(rf"<!-- readme-test: {name} -->\n```\w*\n(.*?)```", README.read_text(), re.S)
    assert match, f"no readme-test block {name!r}"
    return match.group(1)


def commands(text: str) -> list[list[str]]:
    out = []
    for line in text.splitlines():
        line = line.split("  #")[0].strip()
        if line:
            words = shlex.split(line)
            assert words[0] == "crossbit", line
            out.append([sys.executable, "-m", "crossbit", *words[1:]])
    return out


def test_collections_section_runs_as_written(tmp_path):
    port = free_port()
    server = start_server(tmp_path / "data", port)
    try:
        (tmp_path / "captions.txt").write_text("a red bus on a street\ntwo dogs in the snow\n")
        env = {**os.environ, "CROSSBIT_SERVER": f"127.0.0.1:{port}"}
        outputs = []
        for cmd in commands(block("collections")):
            done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, (cmd, done.stdout, done.stderr)
            outputs.append(done.stdout)
        assert "shop" in outputs[2] and "shop_ivf" in outputs[2]  # list
        assert "a red bus" in outputs[4] or "/captions.txt:1" in outputs[4]  # the search
        with Client(f"127.0.0.1:{port}") as c:
            assert {x["name"] for x in c.list_collections()} == {"default", "shop"}
    finally:
        stop_server(server)


def test_tokens_section_runs_as_written(tmp_path):
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(block("tokens"))
    port = free_port()
    server = start_server(tmp_path / "data", port, "--tokens-file", str(tokens))
    address = f"127.0.0.1:{port}"
    try:
        with Client(address, token="ops-secret-12") as ops:
            ops.create_collection("shop")
            ops.create_collection("photos")
        with Client(address, token="shop-secret-1", collection="shop") as shop:
            assert shop.add_texts(["a red bus"])[0] is not None
            assert shop.delete(keys=["nothing"]) == 0
            with pytest.raises(PermissionDenied):
                shop.add_texts(["not here"], collection="photos")
            with pytest.raises(PermissionDenied):
                shop.drop_collection("shop", confirm="shop")
            assert [x["name"] for x in shop.list_collections()] == ["shop"]
        with Client(address, token="analyst-secret") as analyst:
            assert analyst.search(text="a bus", modality="text", collection="shop")
            assert analyst.count(collection="photos") == 0
            with pytest.raises(PermissionDenied):
                analyst.add_texts(["no"], collection="shop")
            assert len(analyst.list_collections()) == 3
        with Client(address, token="nobody-knows-me") as stranger, pytest.raises(Unauthenticated):
            stranger.stats()
    finally:
        stop_server(server)
