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
import re
import threading
import time
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
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
    from crossbit.server.demo.sample_photos import sample_photos

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
    from crossbit.server.config import ServerConfig
    from crossbit.server.rpc.app import create_server

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


# -- 2. one authorization header per call ------------------------------------------------------

TOKEN = "s3cret-token"
header_values = st.sampled_from([f"Bearer {TOKEN}", "Bearer wrong", f"bearer {TOKEN}",
                                 f"Bearer {TOKEN}x", f"Bearer  {TOKEN}", TOKEN, "Bearer", ""])


@pytest.fixture(scope="module")
def auth_server(model, tmp_path_factory):
    from crossbit.server.config import ServerConfig
    from crossbit.server.rpc.app import create_server

    web_port = free_port()
    running = create_server(ServerConfig(
        port=0, data=str(tmp_path_factory.mktemp("auth")), index="flat", snapshot_interval=0,
        auth_token=TOKEN, web_port=web_port, web_body_timeout_s=1.0), model=model)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield running, pb_grpc.RetrievalStub(channel), web_port
    channel.close()
    running.stop(1.0)


@settings(max_examples=max(10, FUZZ // 4), deadline=None, suppress_health_check=list(HealthCheck))
@given(values=st.lists(header_values, max_size=3))
@example(values=["Bearer wrong", f"Bearer {TOKEN}"])  # the review's case: the last one won
@example(values=[f"Bearer {TOKEN}", "Bearer wrong"])
@example(values=[f"Bearer {TOKEN}", f"Bearer {TOKEN}"])
def test_exactly_one_right_authorization_header_gets_in(auth_server, values):
    """Any number and order of authorization headers, right, wrong or near misses: a call
    gets in only with exactly one, and that one right (gRPC and the web API alike)."""
    import httpx

    _, stub, web_port = auth_server
    allowed = values == [f"Bearer {TOKEN}"]
    try:
        stub.GetStats(pb.GetStatsRequest(), metadata=[("authorization", v) for v in values],
                      timeout=10)
        got = OK
    except grpc.RpcError as exc:
        got = exc.code().name
        if len(values) > 1:
            assert "send exactly one" in exc.details()
    assert got == (OK if allowed else "UNAUTHENTICATED"), values
    r = httpx.get(f"http://127.0.0.1:{web_port}/api/stats",
                  headers=[("authorization", v) for v in values])
    assert r.status_code == (200 if allowed else 401), (values, r.text)


# -- 3. metrics on loopback ------------------------------------------------------------------------

def _listening(port: int) -> set[str]:
    """The local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    import ipaddress

    found = set()
    for table, size in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # LISTEN
                raw = bytes.fromhex(address)
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
                found.add(str(ipaddress.ip_address(raw)))
    return found


@pytest.mark.parametrize("host,metrics_host,expected", [
    ("0.0.0.0", None, "127.0.0.1"), ("127.0.0.1", None, "127.0.0.1"),
    ("0.0.0.0", "0.0.0.0", "0.0.0.0")])
def test_metrics_listen_on_loopback_unless_told(make_server, host, metrics_host, expected):
    """Serving on every interface no longer puts the token-less metrics there too."""
    import urllib.request

    port = free_port()
    make_server(host=host, metrics_port=port,
                **({"metrics_host": metrics_host} if metrics_host else {}))
    assert _listening(port) == {expected}
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    assert b"crossbit_decoded_pixels 0.0" in body


# -- 4. TLS failures are named ----------------------------------------------------------------------

def _certificate(folder: Path, name: str, san: str) -> tuple[Path, Path]:
    import subprocess

    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName={san}"], check=True, capture_output=True)
    return key, cert


def test_tls_failures_name_the_certificate_problem(make_server, tmp_path):
    """Against real TLS servers: a client that does not trust the certificate, one whose
    certificate names another host, a plaintext client, and a TLS client of a plaintext
    server are each told what is wrong, not that no server answers."""
    from crossbit.client import Client, Unavailable

    key, cert = _certificate(tmp_path, "localhost", "DNS:localhost,IP:127.0.0.1")
    _, other_ca = _certificate(tmp_path, "other", "DNS:other.example")
    other_key, elsewhere = _certificate(tmp_path, "elsewhere", "DNS:elsewhere.example")
    tls = make_server(tls_cert=str(cert), tls_key=str(key))
    wrong_name = make_server(tls_cert=str(elsewhere), tls_key=str(other_key))
    plain = make_server()
    cases = [
        (tls.port, True, "is not trusted by this client (self signed certificate)"),
        (tls.port, str(other_ca), "is not trusted by this client"),
        (wrong_name.port, str(elsewhere), "is not for that name"),
        (tls.port, None, "closed the connection at once (socket closed): if it serves TLS"),
        (plain.port, str(cert), "TLS handshake with 127.0.0.1:%d failed (wrong version number)"),
    ]
    for port, trust, words in cases:
        with Client(f"127.0.0.1:{port}", tls=trust, retries=0, timeout=10) as c:
            with pytest.raises(Unavailable) as info:
                c.stats()
        message = str(info.value)
        assert words.replace("%d", str(port)) in message, message
        assert "no crossbit server answers" not in message and "(ok)" not in message
    with Client(f"127.0.0.1:{tls.port}", tls=str(cert), retries=0) as c:
        assert c.stats()["images"] == 0


# -- 5. the web page: Host, headers on every answer, a time limit on bodies ----------------------

ALLOWED = re.compile(r"(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?")
host_parts = st.sampled_from(["localhost", "127.0.0.1", "[::1]", "::1", ":", "@", "attacker.example",
                              "evil", "1", "8080", "65535", "65536", "123456", ".", "[", "]", " ",
                              "%25", "-", "_", "/", "\\", "#", "?", "0", "LOCALHOST", "\t", "é",
                              "[::ffff:127.0.0.1]", "999.0.0.1", "127.0.0.1.", "xn--80ak6aa92e"])
hosts = st.one_of(st.lists(host_parts, min_size=1, max_size=4).map("".join),
                  st.text(max_size=30))


def _allowed_form(header: str) -> bool:
    """The oracle: exactly a loopback name, optionally with a port a browser could send."""
    match = ALLOWED.fullmatch(header.lower())
    return bool(match) and (not match.group(2) or int(match.group(2)[1:]) <= 65535)


@settings(max_examples=FUZZ * 4, deadline=None)
@given(header=hosts)
@example(header="localhost:1@attacker.example")
@example(header="localhost:evil")
def test_only_well_formed_hosts_of_ours_pass(header):
    """Generated Host values, from pieces of real and hostile ones: a value passes the check
    exactly when it is one of the loopback names with at most a numeric port."""
    from crossbit.server.web.guard import host_name

    name = host_name(header)
    assert (name in {"localhost", "127.0.0.1", "::1"}) == _allowed_form(header), (header, name)
    if name is not None:  # what it returns is the header's own host, nothing added or lost
        assert header.lower().lstrip("[").startswith(name)


def _raw(port: int, request: bytes, wait: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            got = s.recv(65536)
            if not got:
                break
            answer += got
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@settings(max_examples=max(10, FUZZ // 4), deadline=None, suppress_health_check=list(HealthCheck))
@given(header=hosts.filter(lambda h: all(32 < ord(c) < 127 for c in h)))
def test_the_host_check_over_http(auth_server, header):
    _, _, web_port = auth_server
    status, headers, _ = _raw(web_port, b"GET / HTTP/1.1\r\nHost: " + header.encode() +
                              b"\r\nConnection: close\r\n\r\n")
    assert status == (200 if _allowed_form(header) else 421), header
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


ERRORS = [  # (request, status): every way the web API answers with an error
    (b"GET /api/stats HTTP/1.1\r\nHost: attacker.example\r\n\r\n", 421),
    (b"GET /api/stats HTTP/1.1\r\nHost: localhost\r\n\r\n", 401),
    (b"GET /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
    (b"DELETE / HTTP/1.1\r\nHost: localhost\r\n\r\n", 405),
    (b"GET /api/items/99999999999999999999 HTTP/1.1\r\nHost: localhost\r\nAuthorization: "
     b"Bearer " + TOKEN.encode() + b"\r\n\r\n", 404),
    (b"GET /api/search?q= HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
     + TOKEN.encode() + b"\r\n\r\n", 400),
    (b"POST /api/search/image HTTP/1.1\r\nHost: localhost\r\nContent-Length: 999999999\r\n\r\n",
     413),
    (b"POST /api/search/image HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
     + TOKEN.encode() + b"\r\nContent-Length: 100\r\n\r\nslow", 408),
]


@pytest.mark.parametrize("request_bytes,status", ERRORS)
def test_every_error_answer_carries_the_security_headers(auth_server, request_bytes, status):
    _, _, web_port = auth_server
    got, headers, body = _raw(web_port, request_bytes)
    assert got == status
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in headers["content-security-policy"]
    if status != 405:  # Starlette's own 405 is plain text; every other error is JSON
        assert b'"error"' in body or headers.get("content-length") != "0"


@settings(max_examples=max(6, FUZZ // 10), deadline=None, suppress_health_check=list(HealthCheck))
@given(pauses=st.lists(st.floats(0.0, 0.8), min_size=1, max_size=5))
def test_a_slow_body_is_cut_off_at_the_time_limit(auth_server, pauses):
    """A body sent in chunks with generated pauses (the server allows 1 s): one that is all
    in well within the limit is answered as usual, one that is not gets 408 at the limit,
    not when the client is done."""
    import select
    import socket

    _, _, web_port = auth_server
    chunk = b"x" * 100
    headers = (b"POST /api/search/image HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
               + TOKEN.encode() + b"\r\nContent-Length: %d\r\n\r\n" % (len(chunk) * len(pauses)))
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", web_port), timeout=10) as s:
        s.sendall(headers)
        for pause in pauses:  # pause, unless the server answers meanwhile
            if select.select([s], [], [], pause)[0]:
                break
            try:
                s.sendall(chunk)
            except OSError:  # the server answered and closed
                break
        select.select([s], [], [], 10)
        took = time.monotonic() - started
        answer = s.recv(65536)
        while answer.startswith(b"HTTP/1.1 408") and b'"error"' not in answer:
            more = s.recv(65536)  # the JSON body may come in a packet of its own
            if not more:
                break
            answer += more
    status = int(answer.split(b" ", 2)[1])
    if sum(pauses) < 0.7:
        assert status == 400, answer[:300]  # read whole: not an image
    elif sum(pauses) > 1.3:
        assert status == 408 and b"did not arrive within 1 s" in answer, answer[:300]
        assert took < 1.6
    assert status in (400, 408)


def test_many_stalled_bodies_are_all_let_go(auth_server):
    """150 connections that send their headers and one byte of a 1,000-byte body, then
    nothing: each gets 408 at the 1 s limit, and the API answers throughout."""
    import socket

    import httpx

    _, _, web_port = auth_server
    request = (b"POST /api/search/image HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer "
               + TOKEN.encode() + b"\r\nContent-Length: 1000\r\n\r\nx")
    started = time.monotonic()
    stalled = [socket.create_connection(("127.0.0.1", web_port), timeout=10) for _ in range(150)]
    try:
        for s in stalled:
            s.sendall(request)
        r = httpx.get(f"http://127.0.0.1:{web_port}/api/stats",
                      headers={"authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert r.status_code == 200
        answers = [s.recv(65536) for s in stalled]
    finally:
        for s in stalled:
            s.close()
    took = time.monotonic() - started
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:40] for a in answers}
    assert took < 5.0
    record("web_stalled_bodies", connections=150, answered_408=len(answers), seconds=round(took, 2))
