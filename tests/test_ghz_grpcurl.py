"""Every ghz command of the README, and grpcurl's list/describe/call, run for real against a
test server (with --proto and through reflection, with and without a token). ghz exits 0
even when every call failed, so each run's status code distribution is read from -O json."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from crossbit.client import Client

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT.parent / "shared" / "tools"
GHZ, GRPCURL = TOOLS / "ghz", TOOLS / "grpcurl"
pytestmark = pytest.mark.skipif(not (GHZ.exists() and GRPCURL.exists()),
                                reason=f"ghz and grpcurl are not at {TOOLS} (CI has them)")


def readme_ghz_lines() -> list[str]:
    """The ghz and body-making command lines of the README's load-testing block."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Load testing"):]
    block = block[block.index("```bash", block.index("With [ghz]")):]
    block = block[: block.index("```", 7)]
    lines, current = [], ""
    for raw in block.splitlines()[1:]:
        line = raw.split(" #")[0].rstrip() if raw.lstrip().startswith("#") is False else ""
        if not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return lines


def test_the_readme_has_every_rpc():
    calls = {re.search(r"--call (\S+)", line).group(1) for line in readme_ghz_lines()
             if line.startswith("ghz")}
    assert calls == {f"crossbit.v1.Retrieval.{m}" for m in
                     ("Search", "SearchBatch", "Encode", "AddTexts", "AddImages", "AddImagesStream")}


@pytest.fixture(scope="module")
def servers(model, tmp_path_factory, photos):
    """One open server and one with --auth-token, each with a few photos in it."""
    from crossbit.server.config import ServerConfig
    from crossbit.server.rpc.app import create_server

    out = {}
    for name, token in (("open", None), ("auth", "s3cret")):
        running = create_server(ServerConfig(port=0, data=str(tmp_path_factory.mktemp(name)),
                                             index="flat", snapshot_interval=0, auth_token=token),
                                model=model)
        with Client(f"127.0.0.1:{running.port}", token=token) as c:
            c.add_images(list(photos.values())[:4], keys=["a", "b", "c", "d"])
        out[name] = (running, token)
    yield out
    for running, _ in out.values():
        running.stop(1.0)


def _ghz(line: str, address: str, tmp_path: Path, photo_dir: Path, token: str | None,
         reflection_only: bool) -> dict:
    """Run one README ghz line, made small (-n 8 -c 2), against ``address``; its JSON report."""
    args = shlex.split(line)
    assert args[0] == "ghz"
    args[0] = str(GHZ)
    for flag, value in (("-n", "8"), ("-c", "2")):
        if flag in args:
            args[args.index(flag) + 1] = value
    args[-1] = address
    if reflection_only and "--proto" in args:  # the same call through reflection
        i = args.index("--proto")
        del args[i : i + 2]
        i = args.index("--import-paths")
        del args[i : i + 2]
    for n, arg in enumerate(args):
        if arg.startswith("/tmp/"):
            args[n] = str(tmp_path / Path(arg).name)
    if token:
        meta = json.dumps({"authorization": f"Bearer {token}"})
        args[1:1] = ["--metadata", meta] + ([] if "--proto" in args else
                                            ["--reflect-metadata", meta])
    args[1:1] = ["-O", "json", "--cpus", "1"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _bodies(tmp_path: Path, photos: dict) -> Path:
    """Run the README's make_image_body.py lines on a folder of real photos."""
    photo_dir = tmp_path / "photos"
    photo_dir.mkdir(exist_ok=True)
    for name in ("chelsea", "coffee"):
        (photo_dir / f"{name}.jpg").write_bytes(photos[name])
    for line in readme_ghz_lines():
        if line.startswith("python bench/ghz/make_image_body.py"):
            args = shlex.split(line.split(">")[0])
            target = tmp_path / Path(line.split(">")[1].strip()).name
            args = [sys.executable] + [str(ROOT / args[1])] + [
                a for a in args[2:] if not a.startswith("photos/")] + \
                [str(p) for p in sorted(photo_dir.glob("*.jpg"))]
            target.write_text(subprocess.run(args, capture_output=True, text=True,
                                             check=True).stdout)
    return photo_dir


@pytest.mark.parametrize("mode", ["as written", "reflection"])
@pytest.mark.parametrize("which", ["open", "auth"])
def test_every_readme_ghz_line_succeeds(servers, tmp_path, photos, mode, which):
    running, token = servers[which]
    photo_dir = _bodies(tmp_path, photos)
    ran = 0
    for line in readme_ghz_lines():
        if not line.startswith("ghz"):
            continue
        report = _ghz(line, f"127.0.0.1:{running.port}", tmp_path, photo_dir, token,
                      mode == "reflection")
        call = re.search(r"--call (\S+)", line).group(1)
        assert report["statusCodeDistribution"] == {"OK": 8}, (call, report.get("errorDistribution"))
        assert report["count"] == 8
        ran += 1
    assert ran == 8  # every ghz line of the README, the filtered search included


def test_without_the_token_ghz_calls_fail_and_say_so(servers):
    running, _ = servers["auth"]
    done = subprocess.run([str(GHZ), "-O", "json", "--insecure", "--proto",
                           "proto/crossbit/v1/crossbit.proto", "--import-paths", "proto",
                           "--call", "crossbit.v1.Retrieval.Search", "-D",
                           "bench/ghz/search_text.json", "-n", "4", "-c", "1",
                           f"127.0.0.1:{running.port}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0  # ghz's exit code says nothing about the calls
    assert json.loads(done.stdout)["statusCodeDistribution"] == {"Unauthenticated": 4}


def _grpcurl(*args: str, timeout: float = 60) -> str:
    done = subprocess.run([str(GRPCURL), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_grpcurl_list_describe_and_search(servers):
    running, _ = servers["open"]
    address = f"127.0.0.1:{running.port}"
    services = _grpcurl("-plaintext", address, "list").split()
    assert {"crossbit.v1.Retrieval", "grpc.health.v1.Health"} <= set(services)
    described = _grpcurl("-plaintext", address, "describe", "crossbit.v1.Retrieval.Search")
    assert "rpc Search ( .crossbit.v1.SearchRequest ) returns ( .crossbit.v1.SearchResponse )" \
        in described
    body = (ROOT / "bench" / "ghz" / "search_text.json").read_text()
    by_reflection = json.loads(subprocess.run(
        [str(GRPCURL), "-plaintext", "-d", "@", address, "crossbit.v1.Retrieval/Search"],
        input=body, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout)
    by_proto = json.loads(subprocess.run(
        [str(GRPCURL), "-plaintext", "-import-path", "proto", "-proto",
         "crossbit/v1/crossbit.proto", "-d", "@", address, "crossbit.v1.Retrieval/Search"],
        input=body, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout)
    assert by_reflection["hits"] and set(by_reflection) == set(by_proto)
    assert "searchMs" in by_reflection and "search_ms" not in by_reflection  # json_name served
    assert [h["key"] for h in by_reflection["hits"]] == [h["key"] for h in by_proto["hits"]]
    health = json.loads(_grpcurl("-plaintext", address, "grpc.health.v1.Health/Check"))
    assert health == {"status": "SERVING"}
