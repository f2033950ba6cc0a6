"""The gRPC service against a real server on a free port, through the bundled client."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest

from crossbit.client import Client, InvalidArgument, NotFound, ResourceExhausted, Unauthenticated
from crossbit.client.errors import CrossbitError
from crossbit.v1 import crossbit_pb2 as pb
from crossbit.v1 import crossbit_pb2_grpc as pb_grpc

from conftest import jpeg, png_header_only
from helpers import self_signed


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.fixture
def client(server):
    with Client(f"127.0.0.1:{server.port}", timeout=60) as c:
        yield c


@pytest.fixture
def filled(client, photos):
    keys = list(photos)
    ids = client.add_images(list(photos.values()), keys=keys,
                            metadata=[{"name": k} for k in keys])
    return dict(zip(keys, ids))


def test_encode_matches_the_model(client, model, photos):
    out = client.encode(texts=["a cat", "two dogs in the snow"], images=[photos["coffee"]],
                        embeddings=True)
    assert out.bits == model.bits
    assert out.texts.shape == (2, model.bits // 8) and out.images.shape == (1, model.bits // 8)
    direct = model.encode_texts(["a cat", "two dogs in the snow"])
    assert np.array_equal(out.texts, direct.codes)
    assert np.allclose(out.text_embeddings, direct.embeddings, atol=1e-5)
    assert np.array_equal(out.images, model.encode_images([photos["coffee"]]).codes)


def test_add_images_one_bad_item_fails_alone(client, photos):
    request = pb.AddImagesRequest(items=[
        pb.ImageItem(key="cat", image=photos["chelsea"]),
        pb.ImageItem(key="junk", image=b"not an image at all"),
        pb.ImageItem(key="empty", image=b""),
        pb.ImageItem(key="coffee", image=photos["coffee"], id=77, metadata={"a": "b"}),
    ])
    response = client.stub.AddImages(request)
    assert [r.ok for r in response.results] == [True, False, False, True]
    assert response.added == 2 and response.failed == 2
    assert response.results[1].error_code == "INVALID_ARGUMENT"
    assert "not a readable image" in response.results[1].error
    assert response.results[3].id == 77
    assert client.stats()["images"] == 2


def test_search_by_image_text_and_code(client, filled, photos, model):
    hits = client.search(image=photos["rocket"], top_k=3)
    assert hits[0].key == "rocket" and hits[0].distance == 0
    assert hits[0].metadata == {"name": "rocket"} and hits[0].modality == "image"
    code = model.encode_images([photos["astronaut"]]).codes[0]
    by_code = client.search(code=code, top_k=len(filled))
    assert by_code[0].key == "astronaut" and by_code[0].distance == 0
    assert [h.distance for h in by_code] == sorted(h.distance for h in by_code)
    # text search: the model ranks the matching photo near the top among the 13 samples
    for query, key in [("a cat", "chelsea"), ("a cup of coffee", "coffee")]:
        top = [h.key for h in client.search(text=query, top_k=3)]
        assert key in top, (query, top)


def test_rerank_flag_and_radius(client, filled, photos):
    plain = client.search(text="a rocket", top_k=5, rerank=False)
    reranked = client.search(text="a rocket", top_k=5, rerank=True)
    assert sorted(h.id for h in plain) != [] and len(reranked) == 5
    assert [h.score for h in reranked] == sorted((h.score for h in reranked), reverse=True)
    near = client.search(image=photos["moon"], radius=0, top_k=50)
    assert [h.key for h in near][:1] == ["moon"] and all(h.distance == 0 for h in near)


def test_search_batch_equals_single_searches(client, filled, photos):
    queries = [{"text": "a cat", "top_k": 4}, {"image": photos["coins"], "top_k": 2},
               {"text": "the moon", "top_k": 3, "rerank": False}]
    batch = client.search_batch(queries)
    single = [client.search(**q) for q in queries]
    assert [[h.id for h in hits] for hits in batch] == [[h.id for h in hits] for hits in single]


def test_texts_and_image_to_text(client, filled, photos):
    ids = client.add_texts(["a cat sitting on a sofa", "a rocket taking off", "coffee in a cup"],
                           keys=["t1", "t2", "t3"])
    assert all(i is not None for i in ids)
    hits = client.search(image=photos["chelsea"], modality="text", top_k=3)
    assert {h.modality for h in hits} == {"text"}
    assert hits[0].metadata["text"] in {"a cat sitting on a sofa", "coffee in a cup",
                                        "a rocket taking off"}
    assert client.stats()["texts"] == 3


def test_delete_by_id_and_key(client, filled):
    assert client.delete(keys=["coins"]) == 1
    assert client.delete(ids=[filled["moon"]]) == 1
    assert "coins" not in [h.key for h in client.search(text="coins", top_k=20)]
    gone = client.delete(ids=[123456, filled["moon"]], keys=["never-added", "coins"])
    assert gone == 0 and gone.missing_ids == [123456, filled["moon"]]  # reported, no error
    assert gone.missing_keys == ["never-added", "coins"]
    with pytest.raises(InvalidArgument):
        client.delete()


def test_stats(client, filled):
    s = client.stats()
    assert s["images"] == len(filled) and s["texts"] == 0
    assert s["index_kind"] == "flat" and s["bits"] == 64 and s["uptime_s"] > 0
    assert s["index_params"]["image"]["items"] == len(filled)


BAD_SEARCHES = [
    (dict(text=""), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(text="x" * 5000), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (dict(text="a", top_k=-1), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(text="a", top_k=10**6), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(code=b"\x00" * 3), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(text="a", radius=65), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(text="a", radius=-2), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(text="a", nprobe=-3), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(image=b"\xff\xd8\xff\xe0 truncated jpeg"), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(image=png_header_only(20000, 20000)), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (dict(text="a", modality=7), grpc.StatusCode.INVALID_ARGUMENT),
    (dict(), grpc.StatusCode.INVALID_ARGUMENT),
]


@pytest.mark.parametrize("fields,code", BAD_SEARCHES)
def test_bad_searches_get_the_right_status(server, fields, code):
    stub = pb_grpc.RetrievalStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    with pytest.raises(grpc.RpcError) as info:
        stub.Search(pb.SearchRequest(**fields), timeout=30)
    assert info.value.code() == code, info.value.details()
    assert info.value.details()


def test_other_bad_requests(server, client, photos):
    stub = client.stub
    with pytest.raises(grpc.RpcError) as info:
        stub.Encode(pb.EncodeRequest(texts=["ok"] * 2000), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as info:
        stub.Encode(pb.EncodeRequest(images=[b"garbage"]), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "images[0]" in info.value.details()
    r = stub.AddImages(pb.AddImagesRequest(items=[pb.ImageItem(image=png_header_only(9000, 9000))]))
    assert r.results[0].error_code == "RESOURCE_EXHAUSTED" and "pixels" in r.results[0].error
    r = stub.AddTexts(pb.AddTextsRequest(items=[pb.TextItem(text="")]))
    assert not r.results[0].ok and r.results[0].error_code == "INVALID_ARGUMENT"
    assert stub.AddImages(pb.AddImagesRequest()).added == 0  # an empty batch is fine
    with pytest.raises(ResourceExhausted):
        client.search_batch([{"text": "a"}] * 1100)
    assert client.health() == "SERVING"


def test_tiny_image_and_one_pixel(client):
    ids = client.add_images([jpeg(size=(1, 1)), jpeg(size=(3, 2))], keys=["1x1", "3x2"])
    assert all(i is not None for i in ids)


def test_many_clients_match_a_serial_run(server, filled, photos):
    queries = ["a cat", "coffee", "a rocket", "the moon", "an astronaut", "cells", "a horse",
               "coins on a table"]
    address = f"127.0.0.1:{server.port}"
    with Client(address) as c:
        serial = {q: [h.id for h in c.search(text=q, top_k=5)] for q in queries}
    results, errors = {}, []

    def worker(n):
        try:
            with Client(address) as c:
                for i in range(6):
                    q = queries[(n + i) % len(queries)]
                    results[(n, i)] = (q, [h.id for h in c.search(text=q, top_k=5)])
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 72
    assert all(serial[q] == ids for q, ids in results.values())
    batch_sizes = server.metrics.batch_size.labels("text")._sum.get()
    assert batch_sizes >= 72  # every text went through the micro-batcher


def test_auth_token(make_server):
    running = make_server(auth_token="s3cret")
    address = f"127.0.0.1:{running.port}"
    with Client(address) as anonymous:
        assert anonymous.health() == "SERVING"  # health stays open
        with pytest.raises(Unauthenticated):
            anonymous.stats()
        with pytest.raises(Unauthenticated):
            anonymous.search(text="a cat")
    with Client(address, token="wrong") as wrong:
        with pytest.raises(Unauthenticated):
            wrong.stats()
    with Client(address, token="s3cret") as ok:
        assert ok.stats()["images"] == 0


def test_embeddings_read_from_sqlite_when_not_in_memory(make_server, photos):
    ranked = {}
    for in_memory in (True, False):
        running = make_server(embeddings_in_memory=in_memory)
        with Client(f"127.0.0.1:{running.port}") as client:
            client.add_images(list(photos.values()), keys=list(photos))
            stats = client.stats()["index_params"]["image"]
            assert (stats["embeddings_in_memory"] is None) == (not in_memory)
            hits = client.search(text="a photo", top_k=len(photos), rerank=True)
            ranked[in_memory] = {h.key: h.score for h in hits}
            assert len(hits) == len(photos)
    # the same re-ranking scores either way (memory keeps float16: about 3 decimals)
    assert ranked[False] == pytest.approx(ranked[True], abs=2e-3)


def test_tls(make_server, tmp_path):
    key, cert = self_signed(tmp_path)
    running = make_server(tls_cert=str(cert), tls_key=str(key))
    with Client(f"localhost:{running.port}", tls=str(cert)) as secure:
        assert secure.stats()["images"] == 0
    with Client(f"127.0.0.1:{running.port}", retries=0, timeout=3) as plain:
        with pytest.raises(CrossbitError) as info:
            plain.stats()
        assert info.value.code == "UNAVAILABLE"


def test_reflection_resolves_method_symbols(server):
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    db = ProtoReflectionDescriptorDatabase(channel)
    assert "crossbit.v1.Retrieval" in db.get_services()
    found = db.FindFileContainingSymbol("crossbit.v1.Retrieval.Search")
    assert found.name == "crossbit/v1/crossbit.proto"
    pool = DescriptorPool(db)
    method = pool.FindMethodByName("crossbit.v1.Retrieval.SearchBatch")
    assert method.input_type.full_name == "crossbit.v1.SearchBatchRequest"
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=s)
           for s in ("crossbit.v1.Retrieval.Search", "crossbit.v1.Retrieval.NoSuchMethod")]
    ok, missing = list(stub.ServerReflectionInfo(iter(ask)))
    assert ok.file_descriptor_response.file_descriptor_proto
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_deadline_exceeded_is_not_unknown(client, filled):
    with pytest.raises(CrossbitError) as info:
        client.search(text="a very slow query " * 20, timeout=0.0005)
    assert info.value.code == "DEADLINE_EXCEEDED"


def test_graceful_shutdown_finishes_calls_in_flight(make_server, photos):
    running = make_server()
    address = f"127.0.0.1:{running.port}"
    outcome = {}

    def slow_ingest():
        with Client(address, timeout=120) as c:
            images = list(photos.values()) * 4
            outcome["ids"] = c.add_images(images, keys=[f"p{i}" for i in range(len(images))])

    t = threading.Thread(target=slow_ingest)
    t.start()
    time.sleep(0.8)  # the stream is under way
    running.stop(grace=60)
    t.join()
    assert len(outcome["ids"]) == 4 * len(photos) and all(i is not None for i in outcome["ids"])
    with Client(address, retries=0, timeout=2) as late:
        with pytest.raises(CrossbitError):
            late.stats()


def test_client_imports_neither_torch_nor_faiss():
    code = ("import sys, crossbit.client; "
            "bad = [m for m in ('torch', 'faiss', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_async_client(server, photos):
    import asyncio

    from crossbit.client import AsyncClient

    async def run():
        async with AsyncClient(f"127.0.0.1:{server.port}") as c:
            ids = await c.add_images([photos["coffee"], photos["moon"]], keys=["coffee", "moon"])
            assert all(i is not None for i in ids)
            hits, batch = await asyncio.gather(
                c.search(image=photos["moon"], top_k=1),
                c.search_batch([{"text": "coffee"}, {"code": b"\x00" * 8}]))
            assert hits[0].key == "moon" and len(batch) == 2
            assert (await c.encode(texts=["a"])).texts.shape == (1, 8)
            assert await c.health() == "SERVING"
            assert (await c.stats())["images"] == 2
            assert await c.delete(keys=["moon"]) == 1
            # texts with metadata, as the blocking client adds them
            added = await c.add_texts(["a bowl of soup"], keys=["soup"], metadata=[{"n": 7}])
            text_hits = await c.search(text="a bowl of soup", modality="text", top_k=1)
            assert text_hits[0].id == added[0] and text_hits[0].metadata["n"] == 7  # its type kept
            gone = await c.delete(ids=[12345])
            assert gone == 0 and gone.missing_ids == [12345]
            with pytest.raises(NotFound):
                await c.stats(collection="nope")
            assert [x["name"] for x in await c.list_collections()] == ["default"]

    asyncio.run(run())


@pytest.mark.parametrize("retries", [0, 2])
def test_client_retries_count_after_the_first_try(retries):
    import socket

    from crossbit.client.errors import Unavailable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with Client(f"127.0.0.1:{port}", retries=retries, timeout=2) as c:
        start = time.monotonic()
        with pytest.raises(Unavailable):
            c.stats()
        if retries:  # backed off at least 0.1 * 0.5 and 0.2 * 0.5 seconds between tries
            assert time.monotonic() - start >= 0.15


def test_layers_import_what_they_should():
    """The core needs no grpc; the indexer and the encoders need neither grpc nor each other."""
    probe = ("import json, sys; import {m}; "
             "print(json.dumps(sorted(p for p in ('grpc', 'crossbit.encoders', 'crossbit.indexer') "
             "if any(k == p or k.startswith(p + '.') for k in sys.modules))))")
    for module, allowed in (("crossbit.server.core", ["crossbit.encoders", "crossbit.indexer"]),
                            ("crossbit.indexer.index", ["crossbit.indexer"]),
                            ("crossbit.encoders.model", ["crossbit.encoders"])):
        out = subprocess.run([sys.executable, "-c", probe.format(m=module)], capture_output=True,
                             text=True, check=True).stdout.strip()
        assert json.loads(out) == allowed, (module, out)
