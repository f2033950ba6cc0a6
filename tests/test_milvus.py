"""The milvus kind against embedded milvus-lite: same interface, same answers as FAISS flat."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="pymilvus not installed: pip install 'crossbit[milvus]'")
pytest.importorskip("milvus_lite", reason="milvus-lite not installed: pip install 'crossbit[milvus]'")

from crossbit.indexer.index import open_index  # noqa: E402

from helpers import clustered_codes, popcount_distances  # noqa: E402


@pytest.fixture(scope="module")
def milvus_and_flat(tmp_path_factory):
    rng = np.random.default_rng(11)
    codes = clustered_codes(600, 64, rng)
    root = tmp_path_factory.mktemp("milvus")
    milvus = open_index(root / "m", 64, "milvus")
    flat = open_index(root / "f", 64, "flat", snapshot_interval=0)
    keys = [f"item-{i}" for i in range(len(codes))]
    emb = rng.normal(size=(len(codes), 8)).astype(np.float32)
    milvus.add(codes, keys=keys, metadata=[{"n": str(i)} for i in range(len(codes))],
               embeddings=emb, thumbnails=[b"\xff\xd8thumb"] * len(codes))
    flat.add(codes, keys=keys, embeddings=emb)
    yield milvus, flat, codes, emb
    milvus.close()
    flat.close()


def test_same_topk_distances_as_faiss_flat(milvus_and_flat):
    milvus, flat, codes, _ = milvus_and_flat
    queries = codes[:20]
    a, b = milvus.search(queries, 10), flat.search(queries, 10)
    assert np.array_equal(a.distances, b.distances)
    true = popcount_distances(queries, codes)
    for q in range(len(queries)):  # ids may differ among ties; each id's distance is right
        assert list(true[q, a.ids[q]]) == list(a.distances[q])


def test_interface(milvus_and_flat, tmp_path):
    milvus, flat, codes, emb = milvus_and_flat
    assert len(milvus) == 600 and milvus.stats()["kind"] == "milvus"
    ids = milvus.ids_for_keys(["item-3", "nope"])
    assert ids == {"item-3": 3}
    assert milvus.items([3])[3].metadata == {"n": "3"}
    assert milvus.thumbnail(3) == b"\xff\xd8thumb"
    assert np.array_equal(milvus.codes([5])[1][0], codes[5])
    assert np.allclose(milvus.embeddings([5])[5], emb[5])
    got = milvus.range_search(codes[:2], 4)
    want = flat.range_search(codes[:2], 4)
    assert [sorted(i.tolist()) for i, _ in got] == [sorted(i.tolist()) for i, _ in want]
    rr = milvus.search_rerank(codes[:1], emb[:1], 3, shortlist=50)
    assert rr.ids[0][0] == 0  # its own embedding is the best cosine in its own shortlist
    with pytest.raises(ValueError, match="k must be"):
        milvus.search(codes[:1], 0)
    with pytest.raises(TypeError):
        milvus.add(codes.astype(np.int32))


def test_upsert_and_delete(tmp_path):
    rng = np.random.default_rng(12)
    codes = clustered_codes(10, 64, rng)
    with open_index(tmp_path, 64, "milvus") as m:
        first = m.add(codes[:3], keys=["a", "b", "c"])
        again = m.add(codes[3:4], keys=["b"])
        assert again[0] == first[1] and len(m) == 3
        assert m.search(codes[3:4], 1).ids[0][0] == first[1]
        with pytest.raises(KeyError, match="unknown ids"):
            m.remove([first[0], 9999])
        assert len(m) == 3
        m.remove([first[0]])
        assert len(m) == 2


def test_server_on_milvus(make_server, photos):
    from crossbit.client import Client

    running = make_server(index="milvus")
    with Client(f"127.0.0.1:{running.port}") as c:
        ids = c.add_images([photos["rocket"], photos["coffee"]], keys=["rocket", "coffee"])
        hits = c.search(image=photos["rocket"], top_k=2)
        assert hits[0].id == ids[0] and hits[0].distance == 0 and hits[0].key == "rocket"
        assert c.stats()["index_kind"] == "milvus"
        assert c.delete(keys=["coffee"]) == 1
        assert c.stats()["images"] == 1
