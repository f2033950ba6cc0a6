"""Shared fixtures: the shipped model (loaded once), real sample photos, servers on free ports."""

from __future__ import annotations

import io
import os
import struct
import zlib

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def model():
    from crossbit.encoders.model import HashModel
    from crossbit.encoders.runtime import use_image_runtime

    m = HashModel.load()
    use_image_runtime(m)
    return m


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """Real photos (scikit-image's public-domain samples) as JPEG bytes."""
    from crossbit.server.demo.sample_photos import sample_photos

    return sample_photos()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but carries (almost) no pixels: a bomb stand-in."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + \
        chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def jpeg(color=(200, 30, 30), size=(64, 48)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def make_server(model, tmp_path):
    """Start servers on free ports (sharing the loaded model); all are stopped at the end."""
    from crossbit.server.config import ServerConfig
    from crossbit.server.rpc.app import create_server

    started = []

    def start(**settings):
        settings.setdefault("data", str(tmp_path / f"data{len(started)}"))
        settings.setdefault("index", "flat")
        settings.setdefault("snapshot_interval", 0)
        running = create_server(ServerConfig(port=0, **settings), model=model)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop(1.0)


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """A real Milvus 2.3 standalone server for the session (a 50 ms time tick, so a Strong
    read costs about 100 ms instead of 400)."""
    try:
        import milvus  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("the milvus package is missing: make setup installs it")
        pytest.skip("no local Milvus server: pip install 'crossbit[milvus-server]'")
    from crossbit.indexer.milvus_standalone import MilvusStandalone

    server = MilvusStandalone(tmp_path_factory.mktemp("milvus-server"), time_tick_ms=50,
                              stop_timeout_s=3)
    server.start()
    yield server
    server.kill()  # its data is thrown away: no need to wait for a graceful stop
