"""Faults and bad input against a real server: kills, corrupt snapshots, full disks, fuzzing.

The fast, deterministic part runs in ``make test``; ``make reliability`` runs the same
tests longer (CROSSBIT_RELIABILITY_ROUNDS, CROSSBIT_FUZZ_EXAMPLES) and records the figures.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossbit.client import Client
from crossbit.client.errors import CrossbitError
from crossbit.v1 import crossbit_pb2 as pb
from crossbit.v1 import crossbit_pb2_grpc as pb_grpc

from helpers import free_port, record, start_server, stop_server

ROUNDS = int(os.environ.get("CROSSBIT_RELIABILITY_ROUNDS", "2"))
FUZZ = int(os.environ.get("CROSSBIT_FUZZ_EXAMPLES", "60"))
BAD_STATUSES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


def test_sigkill_during_ingestion_loses_nothing_acknowledged(tmp_path, photos):
    data, port = tmp_path / "data", free_port()
    images = list(photos.values())
    acked: dict[str, int] = {}
    rng = random.Random(7)
    kills = 0
    for round_no in range(ROUNDS):
        server = start_server(data, port)
        stop = threading.Event()

        def ingest(round_no=round_no, stop=stop):
            with Client(f"127.0.0.1:{port}", retries=0, timeout=30) as c:
                batch = 0
                while not stop.is_set():
                    keys = [f"r{round_no}-b{batch}-{i}" for i in range(4)]
                    try:
                        response = c.add_images_detailed(
                            [images[(batch + i) % len(images)] for i in range(4)], keys=keys,
                            progress=False)
                    except CrossbitError:
                        return  # the server died under us: this batch was not acknowledged
                    for r in response.results:
                        if r.ok:
                            acked[keys[r.index]] = r.id
                    batch += 1

        t = threading.Thread(target=ingest)
        t.start()
        time.sleep(rng.uniform(1.0, 3.0))
        server.send_signal(signal.SIGKILL)
        server.wait()
        kills += 1
        stop.set()
        t.join(timeout=60)
    server = start_server(data, port)  # restart: snapshot + log replay
    try:
        with Client(f"127.0.0.1:{port}") as c:
            params = c.stats()["index_params"]["image"]
            assert params["items"] == params["stored"]  # store and index agree on the count
            assert c.search(image=images[0], top_k=1)[0].distance == 0
    finally:
        stop_server(server)
    from crossbit.indexer import open_index

    with open_index(data / "images", 64, "flat", snapshot_interval=0) as index:
        ids = index.ids_for_keys(list(acked))
        assert ids == acked, f"lost {len(set(acked) - set(ids))} acknowledged items"
        assert len(index) == index.store.count()
    assert len(acked) > 0
    record("sigkill_during_ingestion", kills=kills, acknowledged=len(acked), lost=0)


def test_corrupt_snapshot_rebuilt_and_logged(tmp_path, photos):
    data, port = tmp_path / "data", free_port()
    server = start_server(data, port)
    with Client(f"127.0.0.1:{port}") as c:
        c.add_images(list(photos.values())[:5], keys=[f"p{i}" for i in range(5)])
    stop_server(server)
    snapshot = data / "images" / "index.snapshot"
    snapshot.write_bytes(snapshot.read_bytes()[:40])  # truncated
    server = start_server(data, port)
    try:
        with Client(f"127.0.0.1:{port}") as c:
            assert c.stats()["images"] == 5
    finally:
        log = stop_server(server)
    assert "snapshot unusable" in log and "rebuilt from the store" in log
    record("corrupt_snapshot", rebuilt=True)


@pytest.mark.parametrize("fault,pragma", [("full disk", "PRAGMA max_page_count=1"),
                                          ("read-only store", "PRAGMA query_only=1")])
def test_unwritable_store_fails_adds_clearly_and_keeps_serving(make_server, photos, fault, pragma):
    running = make_server()
    with Client(f"127.0.0.1:{running.port}", retries=0) as c:
        c.add_images([photos["coffee"]], keys=["before"])
        store = running.core.indexes["image"].store
        store._writer.execute(pragma)  # fault injection at the SQLite level (root ignores chmod)
        with pytest.raises(CrossbitError) as info:
            c.add_images([photos["rocket"]], keys=["during"])
        assert info.value.code == "UNAVAILABLE" and "write failed" in str(info.value)
        assert c.search(image=photos["coffee"], top_k=1)[0].key == "before"  # still serving
        assert c.health() == "SERVING"
        assert c.stats()["images"] == 1  # nothing half-written
    record("unwritable_store", fault=fault, status="UNAVAILABLE", searches_ok=True)


def test_client_disconnecting_mid_stream(make_server, photos):
    running = make_server()
    address = f"127.0.0.1:{running.port}"
    stub = pb_grpc.RetrievalStub(grpc.insecure_channel(address))
    images = list(photos.values())

    def stream():
        for i in range(200):
            yield pb.ImageItem(key=f"s{i}", image=images[i % len(images)])
            if i == 150:
                time.sleep(0.5)

    call = stub.AddImagesStream.future(stream())
    time.sleep(1.0)
    call.cancel()
    time.sleep(1.0)
    with Client(address) as c:
        params = c.stats()["index_params"]["image"]
        assert params["items"] == params["stored"]  # whatever got committed is whole
        assert c.health() == "SERVING"
        assert c.add_images([images[0]], keys=["after"])[0] is not None
    record("client_disconnect_mid_stream", committed_before_cancel=params["items"])


# -- fuzzing ---------------------------------------------------------------------------------

int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
junk = st.binary(max_size=256)


def _image_bytes():
    from conftest import jpeg, png_header_only

    good = jpeg()
    return st.one_of(junk, st.just(b""), st.just(good), st.just(good[: len(good) // 2]),
                     st.just(png_header_only(20000, 20000)), st.just(jpeg(size=(1, 1))))


search_requests = st.builds(
    lambda which, text, image, code, top_k, radius, modality, rerank, nprobe: pb.SearchRequest(
        **{which: {"text": text, "image": image, "code": code}[which]} if which else {},
        top_k=top_k, modality=modality, nprobe=nprobe,
        **({"radius": radius} if radius is not None else {}),
        **({"rerank": rerank} if rerank is not None else {})),
    st.sampled_from([None, "text", "image", "code"]),
    st.text(max_size=3000), _image_bytes(), st.binary(max_size=40), int32,
    st.one_of(st.none(), int32), st.integers(-5, 10), st.one_of(st.none(), st.booleans()), int32)


@pytest.fixture(scope="module")
def fuzz_server(model, tmp_path_factory, photos):
    from crossbit.server.config import ServerConfig
    from crossbit.server.rpc.app import create_server

    running = create_server(ServerConfig(port=0, data=str(tmp_path_factory.mktemp("fuzz")),
                                         index="flat", snapshot_interval=0), model=model)
    with Client(f"127.0.0.1:{running.port}") as c:
        c.add_images(list(photos.values())[:4], keys=["a", "b", "c", "d"])
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    yield running, pb_grpc.RetrievalStub(channel), Client(f"127.0.0.1:{running.port}")
    running.stop(1.0)


def _call(fn, request):
    try:
        fn(request, timeout=30)
        return "OK"
    except grpc.RpcError as exc:
        assert exc.code() not in BAD_STATUSES, f"{exc.code()}: {exc.details()}"
        assert exc.details(), "an error without a message"
        return exc.code().name


tried: dict[str, int] = {}


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=search_requests)
def test_fuzz_search(fuzz_server, request):
    _, stub, client = fuzz_server
    _call(stub.Search, request)
    _call(stub.SearchBatch, pb.SearchBatchRequest(queries=[request, request]))
    tried["Search"] = tried.get("Search", 0) + 1
    assert client.health() == "SERVING"


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(images=st.lists(_image_bytes(), max_size=4), texts=st.lists(st.text(max_size=2500),
                                                                      max_size=4),
       keys=st.lists(st.text(max_size=1100), min_size=4, max_size=4),
       ids=st.lists(st.one_of(st.none(), st.integers(-5, 2**63 - 1)), min_size=4, max_size=4))
def test_fuzz_add_and_encode(fuzz_server, images, texts, keys, ids):
    _, stub, client = fuzz_server

    def item(cls, n, **kw):
        extra = {"id": ids[n]} if ids[n] is not None else {}
        return cls(key=keys[n], **extra, **kw)

    _call(stub.AddImages, pb.AddImagesRequest(
        items=[item(pb.ImageItem, n, image=b) for n, b in enumerate(images)]))
    _call(stub.AddTexts, pb.AddTextsRequest(
        items=[item(pb.TextItem, n, text=t) for n, t in enumerate(texts)]))
    _call(stub.Encode, pb.EncodeRequest(texts=texts, images=images))
    tried["Add/Encode"] = tried.get("Add/Encode", 0) + 1
    assert client.health() == "SERVING"


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(ids=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5),
       keys=st.lists(st.text(max_size=50), max_size=5), modality=st.integers(-3, 5))
def test_fuzz_delete(fuzz_server, ids, keys, modality):
    _, stub, client = fuzz_server
    # never delete the seeded items: their ids are 0..3 and keys a..d
    ids = [i for i in ids if not 0 <= i <= 3]
    keys = [k for k in keys if k not in {"a", "b", "c", "d"}]
    _call(stub.Delete, pb.DeleteRequest(ids=ids, keys=keys, modality=modality))
    tried["Delete"] = tried.get("Delete", 0) + 1
    assert client.health() == "SERVING"


def test_fuzz_summary(fuzz_server):
    _, _, client = fuzz_server
    assert client.stats()["images"] >= 4
    record("fuzz", inputs=dict(tried))
