"""The server's guards under generated inputs: decoded pixels bounded across every call in flight
(and a real process's memory with them), one authorization header per call, metrics on loopback,
TLS failures named, the web page's Host check, error headers and body time limit.

``make test`` runs these small; ``make reliability`` runs them long
(CROSSBIT_RELIABILITY_ROUNDS, CROSSBIT_FUZZ_EXAMPLES) and records the figures.
"""

from __future__ import annotations

import functools
import gc
import io
import itertools
import os
import threading
import time
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from crossbit.v1 import crossbit_pb2 as pb
from crossbit.v1 import crossbit_pb2_grpc as pb_grpc

from helpers import free_port, header_only, record, start_server, stop_server

ROUNDS = int(os.environ.get("CROSSBIT_RELIABILITY_ROUNDS", "1"))
FUZZ = int(os.environ.get("CROSSBIT_FUZZ_EXAMPLES", "60"))
RE, IA, OK = "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT", "OK"

# -- 1. decoded pixels: bounded across every call in flight -----------------------------------

MAX_PIXELS, REQUEST_PIXELS, POOL_PIXELS = 2_250_000, 3_500_000, 4_500_000
keys = itertools.count()
NAMES = ["png500", "png1000", "png1500", "photo500", "photo1000", "photo1500",
         "bomb_ffc9_in_comment", "arithmetic_header_only", "over_max_pixels"]


@functools.cache
def payloads() -> dict[str, tuple[bytes, int, str]]:
    """name -> (bytes, pixels, what decoding them does: OK, IA or RE)."""
    from crossbit.server.sample_photos import sample_photos

    cat = Image.open(io.BytesIO(sample_photos()["chelsea"])).convert("RGB")
    out = {}
    for side in (500, 1000, 1500):
        buf = io.BytesIO()
        Image.new("RGB", (side, side), (side % 256, 40, 90)).save(buf, format="PNG")
        out[f"png{side}"] = (buf.getvalue(), side * side, OK)
        buf = io.BytesIO()
        cat.resize((side, side)).save(buf, format="JPEG", quality=85)
        out[f"photo{side}"] = (buf.getvalue(), side * side, OK)
    bomb = header_only(1500, 1500, 20)
    out["bomb_ffc9_in_comment"] = (bomb[:2] + b"\xff\xfe\x00\x04\xff\xc9" + bomb[2:], 0, IA)
    out["arithmetic_header_only"] = (header_only(1500, 1500, 20, frame=b"\xff\xc9"), 2_250_000, OK)
    buf = io.BytesIO()
    Image.new("RGB", (2000, 2000)).save(buf, format="PNG")
    out["over_max_pixels"] = (buf.getvalue(), 4_000_000, RE)
    return out


def expected(names: list[str]) -> list[str]:
    """Each image's fate in a call, decoded in order against the request's budget."""
    total, fates = 0, []
    for name in names:
        _, pixels, fate = payloads()[name]
        if fate == OK and total + pixels > REQUEST_PIXELS:
            fate = RE
        total += pixels if fate == OK else 0
        fates.append(fate)
    return fates


@pytest.fixture(scope="module")
def pool_server(model, tmp_path_factory):
    from crossbit.server.app import create_server
    from crossbit.server.config import ServerConfig

    running = create_server(ServerConfig(
        port=0, data=str(tmp_path_factory.mktemp("pool")), index="flat", snapshot_interval=0,
        max_pixels=MAX_PIXELS, max_request_pixels=REQUEST_PIXELS,
        max_inflight_pixels=POOL_PIXELS), model=model)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield running, pb_grpc.RetrievalStub(channel)
    channel.close()
    running.stop(1.0)


pool_tally = {"calls": 0, "images": 0, "peak_pixels": 0}


def _call(stub, rpc: str, names: list[str]) -> list[str]:
    """Send one call; the fate of each image (the call's code for every image of a call that
    fails whole)."""
    images = [payloads()[n][0] for n in names]
    try:
        if rpc == "add":
            response = stub.AddImages(pb.AddImagesRequest(items=[
                pb.ImageItem(key=f"k{next(keys)}", image=i) for i in images]), timeout=60)
            return [OK if r.ok else r.error_code for r in response.results]
        if rpc == "encode":
            stub.Encode(pb.EncodeRequest(images=images), timeout=60)
        else:
            stub.SearchBatch(pb.SearchBatchRequest(queries=[
                pb.SearchRequest(image=i, top_k=3) for i in images]), timeout=60)
        return [OK] * len(names)
    except grpc.RpcError as exc:
        return [exc.code().name + ": " + exc.details()] * len(names)


@settings(max_examples=max(4, FUZZ // 10), deadline=None, suppress_health_check=list(HealthCheck))
@given(calls=st.lists(st.tuples(st.sampled_from(["add", "encode", "search"]),
                                st.lists(st.sampled_from(NAMES), min_size=1,
                                         max_size=3)), min_size=1, max_size=10))
def test_concurrent_calls_never_decode_more_than_the_pool(pool_server, calls):
    """Any mix of honest photos, uniform PNGs, header-only bombs (FF C9 in a comment, a real
    arithmetic frame) and images over the limits, sent by concurrent Encode, AddImages and
    SearchBatch calls: the pixels decoded at once never pass --max-inflight-pixels, every
    call gets the answer its images deserve (waiting its turn, never refused for being
    late while its deadline is far), and the pool is empty when the calls are over."""
    running, stub = pool_server
    pool = running.core.checks.pool
    pool.peak = pool.used
    got: dict[int, list[str]] = {}
    threads = [threading.Thread(target=lambda n=n, c=c: got.__setitem__(n, _call(stub, *c)))
               for n, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for n, (rpc, names) in enumerate(calls):
        fates = expected(names)
        if rpc != "add":  # the first image that fails fails the whole call, with its code
            failed = [f for f in fates if f != OK]
            fates = [failed[0] if failed else OK] * len(names)
        assert [g.split(":")[0] for g in got[n]] == fates, (rpc, names, got[n])
    assert pool.peak <= POOL_PIXELS
    deadline = time.monotonic() + 10
    while pool.used and time.monotonic() < deadline:  # an error's traceback may hold images
        gc.collect()
        time.sleep(0.05)
    assert pool.used == 0 and pool.waiting == 0
    pool_tally["calls"] += len(calls)
    pool_tally["images"] += sum(len(names) for _, names in calls)
    pool_tally["peak_pixels"] = max(pool_tally["peak_pixels"], pool.peak)


def test_a_call_waits_for_pixels_until_its_deadline(pool_server):
    running, stub = pool_server
    pool = running.core.checks.pool
    photo = payloads()["photo1000"][0]
    pool.take(POOL_PIXELS - 500_000)  # other calls hold the pool
    try:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.Encode(pb.EncodeRequest(images=[photo]), timeout=1.5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-inflight-pixels" in info.value.details()
        assert "did not fit within" in info.value.details()
        assert time.monotonic() - started < 1.5
        # texts need no pixels, and images that fit the rest go at once
        stub.Encode(pb.EncodeRequest(texts=["a cat"], images=[payloads()["png500"][0]]),
                    timeout=10)
        waiting = threading.Thread(target=lambda: stub.Encode(
            pb.EncodeRequest(images=[photo]), timeout=20))
        waiting.start()
        time.sleep(0.5)
        assert pool.waiting == 1
    finally:
        pool.give(POOL_PIXELS - 500_000)
    waiting.join(20)
    assert pool.waiting == 0
    pool_tally["peak_pixels"] = max(pool_tally["peak_pixels"], pool.peak)
    record("pixel_pool", **pool_tally, pool=POOL_PIXELS)


def _kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_a_serve_process_stays_within_its_pixel_pool(tmp_path):
    """32 concurrent Encode calls of 2 images of 9 M pixels (uniform PNGs of 30 KB or
    header-only arithmetic JPEGs of 300 bytes) against a real ``crossbit serve`` with a
    20 M pixel pool: its resident memory peaks within the pool's size (4 bytes a pixel,
    twice for decoders' working copies) plus 250 MB, where without the pool these calls
    would decode 576 M pixels (2.3 GB) at once; most of it goes back after the calls."""
    pool = 20_000_000
    port = free_port()
    server = start_server(tmp_path / "data", port, "--max-inflight-pixels", str(pool),
                          "--max-pixels", "9000000", "--log-level", "ERROR")
    buf = io.BytesIO()
    Image.new("RGB", (3000, 3000), (7, 99, 200)).save(buf, format="PNG")
    kinds = [buf.getvalue(), header_only(3000, 3000, 20, frame=b"\xff\xc9")]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.RetrievalStub(channel)
    growths, codes = [], []
    try:
        warm = [threading.Thread(target=stub.Encode, args=(pb.EncodeRequest(
            images=[payloads()["photo500"][0]] * 3),), kwargs={"timeout": 60})
            for _ in range(16)]
        for t in warm:
            t.start()
        for t in warm:
            t.join()
        for _ in range(ROUNDS):
            time.sleep(0.5)
            before = _kb(server.pid, "VmRSS")
            Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

            def call(n):
                try:
                    stub.Encode(pb.EncodeRequest(images=[kinds[n % 2]] * 2), timeout=120)
                    codes.append(OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code().name)

            callers = [threading.Thread(target=call, args=(n,)) for n in range(32)]
            for t in callers:
                t.start()
            for t in callers:
                t.join()
            growths.append((_kb(server.pid, "VmHWM") - before) / 1024)
        after = (_kb(server.pid, "VmRSS") - before) / 1024
    finally:
        channel.close()
        stop_server(server)
    bound = pool * 4 * 2 / 2**20 + 250
    record("serve_process_pixel_pool", rounds=ROUNDS, calls=32 * ROUNDS, pool_pixels=pool,
           peak_growth_mb=[round(g) for g in growths], bound_mb=round(bound),
           after_mb=round(after), codes={c: codes.count(c) for c in set(codes)})
    assert set(codes) <= {OK, RE} and codes.count(OK) >= 16, codes
    assert max(growths) < bound, (growths, bound)
    assert after < bound
