"""What crossbit promises, under generated inputs: index == store whatever the key/id mix,
ids never reused after a lost WAL, malformed messages never INTERNAL, SIGTERM always ends,
idle streams cannot starve the server, and bounded work per request.

``make test`` runs these small; ``make reliability`` runs them long
(CROSSBIT_RELIABILITY_ROUNDS, CROSSBIT_FUZZ_EXAMPLES) and records the figures.
"""

from __future__ import annotations

import functools
import io
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossbit.client import Client
from crossbit.indexer import open_index
from crossbit.v1 import crossbit_pb2 as pb
from crossbit.v1 import crossbit_pb2_grpc as pb_grpc

from conftest import jpeg
from helpers import free_port, record, start_server, stop_server

ROUNDS = int(os.environ.get("CROSSBIT_RELIABILITY_ROUNDS", "1"))  # server restarts per test
FUZZ = int(os.environ.get("CROSSBIT_FUZZ_EXAMPLES", "60"))
BAD = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
checked = {"index_calls": 0, "index_items": 0, "service_calls": 0}  # recorded at the end


@pytest.fixture(scope="module", autouse=True)
def _record_checks():
    yield
    if checked["index_calls"]:
        record("index_equals_store", **checked)


# -- 1. index == store, whatever the mix of keys, ids and replacements ------------------------

# small alphabets, so that keys and ids collide within a call, across calls and with the store
keys_st = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d", "e"]))
ids_st = st.one_of(st.none(), st.integers(0, 12))
call_st = st.lists(st.tuples(keys_st, ids_st), min_size=1, max_size=8)
op_st = st.one_of(st.tuples(st.just("add"), call_st),
                  st.tuples(st.just("remove"), st.lists(st.integers(0, 40), max_size=3)))


def check_call_outcome(call, accepted: list[int], ids: list[int], refused: dict[int, str]):
    """The rule of one add call: among the accepted items no key and no id appears twice, and
    each refused item repeats the key or id of an earlier accepted one."""
    keys = [call[n][0] for n in accepted if call[n][0] is not None]
    assert len(set(keys)) == len(keys), "two accepted items share a key"
    assert len(set(ids)) == len(ids), "one call returned an id twice"
    for n, why in refused.items():
        assert "repeats item" in why, why
        earlier = int(why.rsplit("repeats item ", 1)[1].split()[0])
        assert earlier < n and earlier in accepted, why
    for n, (key, item_id) in enumerate(call):  # a repeat of an accepted key or id is refused
        if n in refused:
            continue
        for m in accepted:
            if m < n:
                assert key is None or call[m][0] != key, f"item {n} repeats key {key!r}"
                assert item_id is None or call[m][1] != item_id, f"item {n} repeats id {item_id}"


@pytest.mark.parametrize("kind,options", [("flat", {}), ("ivf", {"train_size": 20}),
                                          ("hnsw", {})])
@settings(max_examples=max(20, FUZZ // 2), deadline=None,
          suppress_health_check=list(HealthCheck))
@given(ops=st.lists(op_st, min_size=1, max_size=12), seed=st.integers(0, 2**16))
def test_index_equals_store_for_any_key_and_id_mix(tmp_path_factory, kind, options, ops, seed):
    rng = np.random.default_rng(seed)
    folder = tmp_path_factory.mktemp(kind)
    with open_index(folder, 64, kind, snapshot_interval=0, **options) as index:
        codes_of: dict[int, bytes] = {}
        for op, arg in ops:
            if op == "remove":
                stored = set(index.store.all_ids().tolist())
                present = sorted({i for i in arg if i in stored})
                if present:
                    index.remove(present)
                    for i in present:
                        codes_of.pop(i, None)
                continue
            codes = rng.integers(0, 256, size=(len(arg), 8), dtype=np.uint8)
            write = index.add_items(codes, ids=[i for _, i in arg], keys=[k for k, _ in arg])
            accepted = [n for n in range(len(arg)) if n not in write.refused]
            check_call_outcome(arg, accepted, write.ids[accepted].tolist(), write.refused)
            assert (write.ids[list(write.refused)] == -1).all()
            for n in accepted:  # a given id is the id stored
                assert arg[n][1] is None or write.ids[n] == arg[n][1]
            for n in accepted:
                codes_of[int(write.ids[n])] = codes[n].tobytes()
            checked["index_calls"] += 1
            checked["index_items"] += len(arg)
            assert index.verify() == ""
            stored = index.store.all_ids()
            assert len(index) == len(stored)
            # every id the index can return is stored with the code it was last given
            found, stored_codes = index.codes(list(codes_of))
            live = {int(i): c.tobytes() for i, c in zip(found, stored_codes)}
            for item_id in live:
                assert live[item_id] == codes_of[item_id]
        if len(index):
            res = index.search(rng.integers(0, 256, size=(3, 8), dtype=np.uint8),
                               min(len(index), 50), nprobe=1 << 16)
            ids = res.ids[res.ids >= 0]
            assert set(ids.tolist()) <= set(index.store.all_ids().tolist())
            for row in res.ids:
                row = row[row >= 0]
                assert len(set(row.tolist())) == len(row)
            index.remove(index.store.all_ids())  # every id the index holds can be deleted
            assert len(index) == 0 and index.verify() == ""


def test_concurrent_adds_with_overlapping_keys_keep_the_invariant(tmp_path):
    with open_index(tmp_path / "idx", 64, "flat", snapshot_interval=0) as index:
        errors = []

        def writer(seed):
            rng = random.Random(seed)
            try:
                for _ in range(40):
                    n = rng.randint(1, 6)
                    keys = [rng.choice("abcdefgh") if rng.random() < 0.8 else None for _ in range(n)]
                    ids = [rng.randint(0, 20) if rng.random() < 0.3 else None for _ in range(n)]
                    codes = np.frombuffer(rng.randbytes(8 * n), np.uint8).reshape(n, 8)
                    index.add_items(codes, ids=ids, keys=keys)
                    if rng.random() < 0.2 and len(index):
                        try:
                            index.remove([rng.choice(index.store.all_ids().tolist())])
                        except KeyError:
                            pass  # another writer removed it first
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert index.verify() == ""
        keys = index.store.ids_for_keys(list("abcdefgh"))
        assert len(set(keys.values())) == len(keys)  # one item per key


@settings(max_examples=max(10, FUZZ // 4), deadline=None, suppress_health_check=list(HealthCheck))
@given(calls=st.lists(call_st, min_size=1, max_size=4))
def test_service_adds_refuse_repeats_and_keep_index_equal_to_store(fuzz_server, calls):
    running, stub = fuzz_server
    index = running.core.indexes["text"]
    for call in calls:
        items = [pb.TextItem(text=f"a caption {n}", key=k or "", **({"id": 1000 + i}
                                                                   if i is not None else {}))
                 for n, (k, i) in enumerate(call)]
        response = stub.AddTexts(pb.AddTextsRequest(items=items), timeout=60)
        refused = {r.index: r.error for r in response.results if not r.ok}
        assert {r.error_code for r in response.results if not r.ok} <= {"INVALID_ARGUMENT"}
        accepted = [r.index for r in response.results if r.ok]
        check_call_outcome(call, accepted, [r.id for r in response.results if r.ok], refused)
        checked["service_calls"] += 1
        assert index.verify() == ""
    n = len(index)
    if n:
        hits = stub.Search(pb.SearchRequest(text="a caption", top_k=min(n, 50), modality=pb.TEXT,
                                            rerank=False), timeout=60).hits
        assert len(hits) == min(n, 50) and len({h.id for h in hits}) == len(hits)


def test_client_default_keys_never_collide_for_two_folders(make_server, photos, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    (tmp_path / "a" / "cat.jpg").write_bytes(photos["chelsea"])
    (tmp_path / "b" / "cat.jpg").write_bytes(photos["coffee"])
    running = make_server()
    with Client(f"127.0.0.1:{running.port}") as c:
        ids = c.add_images([tmp_path / "a" / "cat.jpg", tmp_path / "b" / "cat.jpg"])
        assert None not in ids and len(set(ids)) == 2
        assert c.stats()["images"] == 2
        again = c.add_images([tmp_path / "a" / "cat.jpg"])  # the same file again: replaced
        assert again == ids[:1] and c.stats()["images"] == 2
    assert running.core.indexes["image"].verify() == ""


# -- 2. the store loses its tail: ids are never reused ------------------------------------------

def test_store_restored_from_older_copy_is_detected_and_ids_not_reused(tmp_path, caplog):
    folder = tmp_path / "idx"
    rng = np.random.default_rng(1)
    with open_index(folder, 64, "flat", snapshot_interval=0) as index:
        first = index.add(rng.integers(0, 256, (30, 8), dtype=np.uint8))
    shutil.copy(folder / "store.sqlite3", tmp_path / "backup.sqlite3")
    with open_index(folder, 64, "flat", snapshot_interval=0) as index:
        later = index.add(rng.integers(0, 256, (20, 8), dtype=np.uint8))
        index.snapshot()
    acknowledged = set(first.tolist()) | set(later.tolist())
    shutil.copy(tmp_path / "backup.sqlite3", folder / "store.sqlite3")  # the store goes back
    for suffix in ("-wal", "-shm"):
        (folder / f"store.sqlite3{suffix}").unlink(missing_ok=True)
    with caplog.at_level("WARNING"), open_index(folder, 64, "flat", snapshot_interval=0) as index:
        assert len(index) == 30 and index.verify() == ""
        assert "disagree" in caplog.text and "20 ids in the snapshot are not in the store" in \
            caplog.text
        fresh = index.add(rng.integers(0, 256, (25, 8), dtype=np.uint8))
        assert not set(fresh.tolist()) & acknowledged, "an acknowledged id was handed out again"
    record("store_restored_from_older_copy", lost=20, ids_reused=0)


def test_lost_wal_after_sigkill(tmp_path, photos):
    """The real thing: a server is killed, its -wal file is lost, it restarts."""
    data, port = tmp_path / "data", free_port()
    acknowledged: set[int] = set()
    lost_total = detected = 0
    for round_no in range(ROUNDS):
        server = start_server(data, port)
        with Client(f"127.0.0.1:{port}") as c:
            texts = [f"round {round_no} caption {i}" for i in range(12)]
            ids = c.add_texts(texts, keys=[f"r{round_no}-{i}" for i in range(12)])
            acknowledged |= set(ids)
            time.sleep(1.5)  # a snapshot is taken (interval 0.5 s), the WAL is not checkpointed
        server.send_signal(signal.SIGKILL)
        server.wait()
        wal = data / "texts" / "store.sqlite3-wal"
        lost_total += wal.exists()
        wal.unlink(missing_ok=True)
        (data / "texts" / "store.sqlite3-shm").unlink(missing_ok=True)
        server = start_server(data, port)
        try:
            with Client(f"127.0.0.1:{port}") as c:
                params = c.stats()["index_params"]["text"]
                assert params["items"] == params["stored"]
                stored_after = params["stored"]
                fresh = c.add_texts([f"after {round_no} {i}" for i in range(5)])
                assert not set(fresh) & acknowledged, "an acknowledged id was handed out again"
                acknowledged |= set(fresh)
        finally:
            log = stop_server(server)
        if stored_after < len(acknowledged - set(fresh)):  # the store lost what the snapshot has
            assert "disagree" in log and "not in the store" in log
            detected += 1
    assert lost_total > 0, "the WAL was never there to lose: the test did not test"
    record("lost_wal_after_sigkill", rounds=ROUNDS, wal_files_lost=lost_total, ids_reused=0,
           store_behind_detected=detected)


def test_crossbit_check_reports_and_repairs(tmp_path):
    data = tmp_path / "data"
    rng = np.random.default_rng(2)
    with open_index(data / "images", 64, "flat", snapshot_interval=0) as index:
        index.add(rng.integers(0, 256, (10, 8), dtype=np.uint8), keys=[f"k{i}" for i in range(10)])
    run = [sys.executable, "-m", "crossbit", "check", "--data", str(data)]
    ok = subprocess.run(run, capture_output=True, text=True)
    assert ok.returncode == 0 and "10 items in the store, 10 in the snapshot" in ok.stdout
    import sqlite3

    conn = sqlite3.connect(data / "images" / "store.sqlite3")
    conn.execute("DELETE FROM items WHERE id IN (3, 4)")  # the store loses two items behind our back
    conn.execute("DELETE FROM log")
    conn.commit()
    conn.close()
    bad = subprocess.run(run, capture_output=True, text=True)
    assert bad.returncode == 1 and "2 ids in the snapshot are not in the store (3, 4)" in bad.stdout
    fixed = subprocess.run(run + ["--repair"], capture_output=True, text=True)
    assert fixed.returncode == 0 and "repaired" in fixed.stdout
    again = subprocess.run(run, capture_output=True, text=True)
    assert again.returncode == 0 and ": ok" in again.stdout


# -- 3 and 5. malformed messages, on every method ---------------------------------------------

METHODS = {
    "/crossbit.v1.Retrieval/Encode": "unary", "/crossbit.v1.Retrieval/AddImages": "unary",
    "/crossbit.v1.Retrieval/AddTexts": "unary", "/crossbit.v1.Retrieval/Search": "unary",
    "/crossbit.v1.Retrieval/SearchBatch": "unary", "/crossbit.v1.Retrieval/Delete": "unary",
    "/crossbit.v1.Retrieval/GetStats": "unary", "/grpc.health.v1.Health/Check": "unary",
    "/crossbit.v1.Retrieval/AddImagesStream": "stream",
    "/grpc.health.v1.Health/Watch": "unary-stream",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "bidi",
}


def _valid_messages() -> list[bytes]:
    return [pb.SearchRequest(text="a dog", top_k=3).SerializeToString(),
            pb.AddTextsRequest(items=[pb.TextItem(text="x", key="k")]).SerializeToString(),
            pb.ImageItem(key="k", image=jpeg()).SerializeToString(),
            pb.DeleteRequest(ids=[1, 2], keys=["z"]).SerializeToString()]


def malformed(rng: random.Random) -> bytes:
    """Random bytes, truncated or bit-flipped valid messages, and huge length prefixes."""
    valid = rng.choice(_valid_messages())
    pick = rng.randrange(6)
    if pick == 0:
        return rng.randbytes(rng.randint(1, 64))
    if pick == 1:
        return valid[: rng.randint(1, max(1, len(valid) - 1))]
    if pick == 2:
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return bytes(data)
    if pick == 3:  # a length-delimited field claiming up to 2**32 bytes
        return bytes([rng.choice([0x0A, 0x12, 0x1A])]) + _varint(rng.randint(1 << 20, 1 << 32))
    if pick == 4:  # invalid UTF-8 in a string field
        return b"\x0a\x03\xff\xfe\xfd"
    return b"\x08" + b"\xff" * 11  # a varint that never ends


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


@pytest.fixture(scope="module")
def fuzz_server(model, tmp_path_factory):
    from crossbit.server.config import ServerConfig
    from crossbit.server.rpc.app import create_server

    running = create_server(ServerConfig(port=0, data=str(tmp_path_factory.mktemp("trust")),
                                         index="flat", snapshot_interval=0), model=model)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield running, pb_grpc.RetrievalStub(channel)
    channel.close()
    running.stop(1.0)


def idle(hold: threading.Event):
    """A request stream that sends nothing until ``hold`` is set."""
    hold.wait(60)
    return
    yield


def _raw_call(channel, method: str, shape: str, payloads: list[bytes]) -> grpc.StatusCode:
    try:
        if shape == "unary":
            channel.unary_unary(method)(payloads[0], timeout=30)
        elif shape == "unary-stream":
            call = channel.unary_stream(method)(payloads[0], timeout=2)
            for _ in call:
                break
            call.cancel()
        elif shape == "stream":
            channel.stream_unary(method)(iter(payloads), timeout=30)
        else:
            for _ in channel.stream_stream(method)(iter(payloads), timeout=30):
                pass
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        assert exc.code() not in BAD, f"{method}: {exc.code()}: {exc.details()}"
        if exc.code() not in (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED):
            assert exc.details(), f"{method}: an error without a message"
        return exc.code()


def test_malformed_messages_on_every_method_are_invalid_argument(fuzz_server, caplog):
    running, _ = fuzz_server
    rng = random.Random(11)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    counts: dict[str, int] = {}
    total = max(300, FUZZ * 25)  # 10,000 in make reliability
    with caplog.at_level("INFO"):
        for n in range(total):
            method = list(METHODS)[n % len(METHODS)]
            shape = METHODS[method]
            payloads = [malformed(rng) for _ in range(rng.randint(1, 3))]
            if shape == "stream" and rng.random() < 0.5:  # a good item, then a bad one
                payloads.insert(0, pb.ImageItem(key=f"g{n}", image=jpeg()).SerializeToString())
            code = _raw_call(channel, method, shape, payloads)
            counts[code.name] = counts.get(code.name, 0) + 1
    channel.close()
    assert "Traceback" not in caplog.text
    lines = [r for r in caplog.records if "not a valid protobuf" in r.getMessage()]
    assert len(lines) < total / 4, "the log is not rate-limited"
    with Client(f"127.0.0.1:{running.port}") as c:
        assert c.health() == "SERVING"
    assert running.core.indexes["image"].verify() == ""
    record("malformed_messages", calls=total, statuses=counts, internal_or_unknown=0)


def test_a_malformed_stream_message_is_one_refused_item(fuzz_server):
    running, _ = fuzz_server
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    call = channel.stream_unary("/crossbit.v1.Retrieval/AddImagesStream",
                                response_deserializer=pb.AddResponse.FromString)
    good = pb.ImageItem(key="stream-good-1", image=jpeg()).SerializeToString()
    other = pb.ImageItem(key="stream-good-2", image=jpeg((10, 10, 200))).SerializeToString()
    response = call(iter([good, b"\x0a\x03\xff\xfe\xfd", other]), timeout=60)
    assert [r.ok for r in response.results] == [True, False, True]
    assert response.results[1].error_code == "INVALID_ARGUMENT"
    assert "not a valid protobuf" in response.results[1].error
    channel.close()


# -- 6. SIGTERM always ends the server ----------------------------------------------------------

def test_sigterm_with_broken_and_idle_streams_open(tmp_path):
    data = tmp_path / "data"
    grace = 2.0
    times = []
    for round_no in range(ROUNDS):
        port = free_port()
        server = start_server(data, port, "--grace-s", str(grace), "--workers", "16")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        hold = threading.Event()

        def stream(first: bytes, hold=hold):
            yield first
            hold.wait(60)

        calls = []
        with Client(f"127.0.0.1:{port}") as c:
            c.add_texts([f"before stop {round_no}"])
        for _ in range(3):  # broken: a corrupt message, then silence
            calls.append(channel.stream_unary("/crossbit.v1.Retrieval/AddImagesStream").future(
                stream(b"\x0a\x03\xff\xfe\xfd"), timeout=120))
        calls.append(channel.stream_stream(  # a reflection stream with a corrupt message
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")(
            stream(b"\x1a\x05\xff\xff\xff\xff\xff"), timeout=120))
        for _ in range(2):  # idle: opened, nothing sent
            calls.append(channel.stream_unary("/crossbit.v1.Retrieval/AddImagesStream").future(
                idle(hold), timeout=120))
        time.sleep(1.0)
        start = time.monotonic()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=grace + 5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
            raise AssertionError("SIGTERM did not stop the server within grace + 5 s:\n"
                                 + "".join(server.log)[-4000:]) from None
        times.append(time.monotonic() - start)
        hold.set()
        channel.close()
        time.sleep(0.3)
        log = "".join(server.log)
        assert "snapshot at seq" in log, log[-3000:]
    with open_index(data / "texts", 64, "flat", snapshot_interval=0) as index:
        assert len(index) == ROUNDS and index.verify() == ""
    record("sigterm_with_broken_streams", runs=ROUNDS, grace_s=grace,
           stop_s_max=round(max(times), 2), stop_s_median=round(sorted(times)[len(times) // 2], 2))


# -- 7. idle streams cannot starve the server ---------------------------------------------------

def test_idle_streams_do_not_starve_health_and_search(make_server, photos):
    workers = 8
    running = make_server(workers=workers, stream_idle_s=2.0)
    address = f"127.0.0.1:{running.port}"
    with Client(address) as c:
        c.add_images([photos["coffee"]], keys=["coffee"])
    hold = threading.Event()
    channels = [grpc.insecure_channel(address) for _ in range(4)]
    calls = []
    for n in range(4 * workers):
        ch = channels[n % len(channels)]
        calls.append(ch.stream_unary("/crossbit.v1.Retrieval/AddImagesStream").future(
            idle(hold), timeout=60))
    time.sleep(1.0)
    started = time.monotonic()
    with Client(address, retries=0, timeout=5) as c:
        for _ in range(5):
            assert c.health(timeout=5) == "SERVING"
            assert c.search(text="a cup of coffee", top_k=1)[0].key == "coffee"
            assert c.stats()["images"] == 1
    answered_s = time.monotonic() - started
    refused = sum(1 for call in calls if call.done() and call.exception() is not None and
                  call.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert refused >= 4 * workers - running.core.config.stream_slots
    time.sleep(3.5)  # past the idle limit: the streams that were served are cancelled
    assert running.guard.open_streams == 0
    hold.set()
    for ch in channels:
        ch.close()
    record("idle_streams", workers=workers, idle_streams=4 * workers, refused=refused,
           health_search_stats_s=round(answered_s, 2))


# -- 8 and 9. bounded work per request, one bad decoder fails one item ----------------------------

def test_huge_answers_are_refused_before_they_are_built(make_server):
    running = make_server(max_response_bytes=4 << 20)
    with Client(f"127.0.0.1:{running.port}", timeout=120) as c:
        big = {"blob": "x" * 60_000}
        c.add_texts([f"caption {i}" for i in range(300)], metadata=[big] * 300)
        stub = c.stub
        queries = [pb.SearchRequest(text="caption", top_k=300, modality=pb.TEXT, rerank=False)
                   for _ in range(24)]
        with pytest.raises(grpc.RpcError) as info:
            stub.SearchBatch(pb.SearchBatchRequest(queries=queries), timeout=60)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "fewer hits" in info.value.details()
        small = c.search(text="caption", top_k=10, modality="text")
        assert len(small) == 10


@functools.cache
def _photos() -> dict[str, bytes]:
    from crossbit.server.demo.sample_photos import sample_photos

    return sample_photos()


def _jpeg_without_scans(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, format="JPEG", quality=10)
    data = buf.getvalue()
    sos = data.index(b"\xff\xda")
    length = int.from_bytes(data[sos + 2 : sos + 4], "big")
    return data[: sos + 2 + length + 20] + b"\xff\xd9"


def _dds_unsupported() -> bytes:
    """A DDS header whose pixel format Pillow does not implement (NotImplementedError)."""
    header = struct.pack("<4s7I44s2I4s5I5I", b"DDS ", 124, 0x1007, 8, 8, 0, 0, 0, b"\0" * 44,
                         32, 0x4, b"ZZZZ", 0, 0, 0, 0, 0, 0x1000, 0, 0, 0, 0)
    return header + b"\0" * 64


@settings(max_examples=max(10, FUZZ // 4), deadline=None, suppress_health_check=list(HealthCheck))
@given(cut=st.floats(0.0, 0.9999), which=st.sampled_from(["coffee", "rocket", "chelsea"]))
def test_truncated_photos_are_refused(cut, which):
    from crossbit.server.core.images import decode_image

    data = _photos()[which]
    with pytest.raises(ValueError, match="not a readable image"):
        decode_image(data[: max(1, int(len(data) * cut))], 1 << 30, 10**9)


def test_bad_images_fail_alone_and_bounded(make_server, photos):
    running = make_server(max_request_pixels=20_000_000)
    good = photos["coffee"]
    empty_jpeg = _jpeg_without_scans(6000, 6000)
    assert len(empty_jpeg) < 1000
    with Client(f"127.0.0.1:{running.port}") as c:
        response = c.stub.AddImages(pb.AddImagesRequest(items=[
            pb.ImageItem(key="g1", image=good), pb.ImageItem(key="dds", image=_dds_unsupported()),
            pb.ImageItem(key="empty", image=empty_jpeg), pb.ImageItem(key="g2", image=photos["rocket"]),
        ]), timeout=60)
        assert [r.ok for r in response.results] == [True, False, False, True]
        assert {r.error_code for r in response.results if not r.ok} == {"INVALID_ARGUMENT"}
        for bad in (_dds_unsupported(), empty_jpeg):
            with pytest.raises(grpc.RpcError) as info:
                c.stub.Search(pb.SearchRequest(image=bad), timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as info:
                c.stub.Encode(pb.EncodeRequest(images=[good, bad]), timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # pixels per request: 5 x 4,000,000 fit 20 M, the sixth does not
        from PIL import Image

        buf = io.BytesIO()
        Image.effect_noise((2000, 2000), 40).convert("RGB").save(buf, format="JPEG")
        big = buf.getvalue()
        response = c.stub.AddImages(pb.AddImagesRequest(items=[
            pb.ImageItem(key=f"big{i}", image=big) for i in range(6)]), timeout=120)
        assert [r.ok for r in response.results] == [True] * 5 + [False]
        assert response.results[5].error_code == "RESOURCE_EXHAUSTED"
    assert running.core.indexes["image"].verify() == ""


# -- 11. configuration mistakes fail in one line --------------------------------------------------

@pytest.mark.parametrize("args,env,words", [
    (["--auth-token", ""], {}, "auth_token is empty"),
    ([], {"CROSSBIT_AUTH_TOKEN": ""}, "CROSSBIT_AUTH_TOKEN is set but empty"),
    (["--port", "99999"], {}, "port must be between 0 and 65535"),
    (["--port", "-5"], {}, "port must be between 0 and 65535"),
])
def test_serve_refuses_bad_settings_in_one_line(tmp_path, args, env, words):
    out = subprocess.run([sys.executable, "-m", "crossbit", "serve", "--data", str(tmp_path),
                          *args], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env})
    assert out.returncode != 0
    assert words in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_mismatched_tls_pair_and_damaged_store_say_what(tmp_path):
    from helpers import self_signed

    key_a, cert_a = self_signed(tmp_path, "a")
    key_b, _ = self_signed(tmp_path, "b")
    out = subprocess.run([sys.executable, "-m", "crossbit", "serve", "--data", str(tmp_path / "d"),
                          "--port", "0", "--tls-cert", str(cert_a), "--tls-key", str(key_b)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "does not match certificate" in out.stderr
    assert "Traceback" not in out.stderr
    store = tmp_path / "d2" / "images" / "store.sqlite3"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"this is not a database" * 100)
    out = subprocess.run([sys.executable, "-m", "crossbit", "serve", "--data", str(tmp_path / "d2"),
                          "--port", "0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert str(store) in last and "not a readable crossbit store" in last, out.stderr


# -- 3. a stream that fails midway says what it committed ------------------------------------------

def test_a_stream_failing_midway_names_what_it_committed(make_server, photos):
    from crossbit.client.errors import from_rpc_error

    running = make_server()
    images = list(photos.values())
    first_chunk_in, go_on = threading.Event(), threading.Event()

    def items():
        for i in range(74):
            if i == 64:
                first_chunk_in.set()
                go_on.wait(60)
            yield pb.ImageItem(key=f"s{i}", image=images[i % len(images)])

    store = running.core.indexes["image"].store
    errors = []

    def add():
        channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
        try:
            pb_grpc.RetrievalStub(channel).AddImagesStream(items(), timeout=120)
        except grpc.RpcError as exc:
            errors.append(from_rpc_error(exc))
        channel.close()

    t = threading.Thread(target=add)
    t.start()
    assert first_chunk_in.wait(60)
    deadline = time.monotonic() + 60
    while store.count() < 64 and time.monotonic() < deadline:  # the first 64 are committed
        time.sleep(0.05)
    store._writer.execute("PRAGMA query_only=1")  # then the disk refuses writes
    go_on.set()
    t.join(120)
    store._writer.execute("PRAGMA query_only=0")
    assert len(errors) == 1
    error = errors[0]
    assert error.code == "UNAVAILABLE" and "64 of them were committed" in str(error)
    assert error.committed is not None and len(error.committed) == 64
    assert all(r.ok for r in error.committed) and [r.index for r in error.committed] == list(range(64))
    stored = store.ids_for_keys([f"s{i}" for i in range(74)])
    assert {r.key: r.id for r in error.committed} == stored  # exactly what the error named
    assert running.core.indexes["image"].verify() == ""



def test_add_images_return_says_what_happened(make_server, photos, tmp_path):
    running = make_server()
    (tmp_path / "cat.jpg").write_bytes(photos["chelsea"])
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with Client(f"127.0.0.1:{running.port}") as c:
        first = c.add_images([tmp_path / "cat.jpg", tmp_path / "junk.jpg"])
        assert first[1] is None and (first.added, first.refused) == (1, 1)
        assert first.refusals[0][:2] == (1, "INVALID_ARGUMENT")
        again = c.add_images([tmp_path / "cat.jpg"])
        assert again == first[:1] and (again.added, again.unchanged) == (0, 1)
        (tmp_path / "cat.jpg").write_bytes(photos["coffee"])
        edited = c.add_images([tmp_path / "cat.jpg"])
        assert edited == first[:1] and edited.replaced == 1


# -- one process per data directory -----------------------------------------------------------------

def test_a_second_server_on_the_same_data_is_refused(tmp_path, model, photos):
    """Two servers on one store would each keep their own index of it (each blind to the
    other's adds) and their own id mark; the second is refused, and so are reindex and
    check --repair while the first runs (without touching its snapshot)."""
    from crossbit.indexer.folder import DirectoryInUse
    from crossbit.indexer.snapshot import SNAPSHOT
    from crossbit.server.cli.reindex import reindex

    data, port = tmp_path / "data", free_port()
    server = start_server(data, port)
    try:
        with Client(f"127.0.0.1:{port}") as c:
            c.add_texts(["a cat on a sofa"])
            time.sleep(1.0)  # a snapshot is taken (interval 0.5 s)
        out = subprocess.run([sys.executable, "-m", "crossbit", "serve", "--data", str(data),
                              "--port", "0"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 1 and "Traceback" not in out.stderr
        assert "is in use by pid" in out.stderr.strip().splitlines()[-1], out.stderr
        with pytest.raises(DirectoryInUse):
            reindex(data, model)
        snapshot = data / "texts" / SNAPSHOT
        assert snapshot.exists()
        import sqlite3

        conn = sqlite3.connect(data / "texts" / "store.sqlite3")
        conn.execute("DELETE FROM items")  # make check find a problem to repair
        conn.commit()
        conn.close()
        repair = subprocess.run([sys.executable, "-m", "crossbit", "check", "--data", str(data),
                                 "--repair"], capture_output=True, text=True, timeout=120)
        assert repair.returncode == 1 and "is in use by pid" in repair.stderr
        assert snapshot.exists()  # nothing removed under the running server
        with Client(f"127.0.0.1:{port}") as c:
            assert c.health() == "SERVING"
    finally:
        stop_server(server)
    with open_index(data / "texts", 64, "flat", snapshot_interval=0):  # free again once stopped
        pass
