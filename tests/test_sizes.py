"""Every index kind serves and restarts at 0, 1, k-1, k and k+1 items and after deleting
everything, for both modalities: generated add/delete/restart sequences against a brute force,
then a real server per kind with its text and image indexes empty, filled and emptied again."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from crossbit.indexer import open_index

from helpers import popcount_distances, record

K = 4
EXAMPLES = int(os.environ.get("CROSSBIT_FUZZ_EXAMPLES", "0")) or 12
# the kinds as a server builds them; "gpu" runs the torch Hamming kernel on the CPU here
KINDS = {"flat": {}, "flat-faiss": {"engine": "faiss"}, "ivf": {"train_size": 6, "nprobe": 64},
         "ivf-probe1": {"train_size": 6, "nlist": 4, "nprobe": 1},  # most lists unprobed
         "hnsw": {}, "gpu": {"device": "cpu"}, "milvus": {}}
APPROXIMATE = {"hnsw", "ivf-probe1"}
names = itertools.count()

size_st = st.sampled_from([0, 1, K - 1, K, K + 1])
op_st = st.one_of(st.tuples(st.just("add"), size_st),
                  st.tuples(st.just("delete"), st.sampled_from(["one", "half", "all"])),
                  st.tuples(st.just("restart"), st.just(0)))


def open_kind(kind: str, folder):
    options = dict(KINDS[kind])
    if kind == "milvus":
        pytest.importorskip("milvus_lite", reason="milvus-lite not installed")
        options.update(uri=str(folder.parent / "m.db"), collection=f"crossbit_sizes_{folder.name}")
    return open_index(folder, 64, kind.split("-")[0], snapshot_interval=0, **options)


def check_answers(index, stored: dict[int, bytes], kind: str) -> None:
    """Search, re-ranked search and hash lookup answer, and agree with a brute force."""
    rng = np.random.default_rng(len(stored))
    queries = rng.integers(0, 256, (3, 8), dtype=np.uint8)
    ids = np.array(sorted(stored), np.int64)
    codes = np.array([np.frombuffer(stored[i], np.uint8) for i in ids]).reshape(-1, 8)
    assert len(index) == len(stored)
    for k in (1, K, K + 2):
        res = index.search(queries, k)
        assert res.ids.shape == (3, k)
        found = res.ids >= 0
        want = min(k, len(stored))
        assert (found.sum(axis=1) == want).all(), (kind, k, res.ids)  # never short of min(k, n)
        assert set(res.ids[found].tolist()) <= set(stored)
        if len(stored):
            true = np.sort(popcount_distances(queries, codes), axis=1)[:, :want]
            position = {int(i): n for n, i in enumerate(ids)}
            d = popcount_distances(queries, codes)
            for q in range(3):
                got = [int(d[q, position[int(i)]]) for i in res.ids[q][found[q]]]
                assert got == res.distances[q][found[q]].tolist()  # every distance is right
                if kind not in APPROXIMATE:  # exact kinds, and IVF visiting every list
                    assert got == true[q].tolist()
        emb = rng.normal(size=(3, 4)).astype(np.float32)
        rr = index.search_rerank(queries, emb, k, shortlist=8)
        assert ((rr.ids >= 0).sum(axis=1) == want).all()
    for radius in (0, 64):
        lookups = index.range_search(queries, radius)
        assert len(lookups) == 3
        if radius == 64:  # a hash lookup is exact on every kind
            assert all(sorted(i.tolist()) == ids.tolist() for i, _ in lookups), (kind, lookups)


def run_sequence(kind: str, folder, ops) -> None:
    rng = np.random.default_rng(7)
    stored: dict[int, bytes] = {}
    index = open_kind(kind, folder)
    try:
        check_answers(index, stored, kind)
        for op, arg in ops:
            if op == "add":
                codes = rng.integers(0, 256, (arg, 8), dtype=np.uint8)
                emb = rng.normal(size=(arg, 4)).astype(np.float32)
                ids = index.add(codes, embeddings=emb) if arg else np.zeros(0, np.int64)
                stored.update({int(i): c.tobytes() for i, c in zip(ids, codes)})
            elif op == "delete" and stored:
                pick = sorted(stored)
                pick = pick[:1] if arg == "one" else pick[: len(pick) // 2] if arg == "half" \
                    else pick
                if pick:
                    assert index.remove(pick) == len(pick)
                    for i in pick:
                        del stored[i]
            elif op == "restart":
                index.close()
                index = open_kind(kind, folder)
            check_answers(index, stored, kind)
    finally:
        index.close()


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_size_and_emptied_again(kind, tmp_path):
    # the named cases first: empty, then each size, then everything deleted, each restarted
    named = [("restart", 0)] + [x for n in (1, K - 1, K, K + 1)
                                for x in (("add", n), ("restart", 0))] + \
        [("delete", "all"), ("restart", 0), ("add", 1), ("delete", "all"), ("restart", 0)]
    run_sequence(kind, tmp_path / f"named{next(names)}", named)
    # grown (IVF trained on many lists), then shrunk to a few items
    shrunk = [("add", 200), ("delete", "all"), ("add", K + 1), ("restart", 0), ("add", 1)]
    run_sequence(kind, tmp_path / f"shrunk{next(names)}", shrunk)

    @settings(max_examples=EXAMPLES if kind != "milvus" else max(3, EXAMPLES // 4),
              deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate])
    @given(st.lists(op_st, min_size=1, max_size=8))
    def check(ops):
        done.append(len(ops))
        run_sequence(kind, tmp_path / f"g{next(names)}", ops)

    done: list[int] = []
    check()
    record("sizes_generated", kind=kind, sequences=len(done), operations=sum(done))


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw", "milvus"])
def test_server_serves_empty_filled_emptied_and_restarted(kind, make_server, tmp_path, photos):
    """A real server of each kind: both modalities searched empty, with items, with every item
    deleted, and after a restart on the emptied folder (the warm-up search included)."""
    from crossbit.client import Client

    data = str(tmp_path / kind)
    settings_ = {"index": kind, "data": data}
    photo = next(iter(photos.values()))

    def searches(client, expect_images: int, expect_texts: int) -> None:
        for modality, expect in (("image", expect_images), ("text", expect_texts)):
            assert len(client.search(text="a dog", modality=modality, top_k=K)) == expect
            assert len(client.search(image=photo, modality=modality, top_k=K)) == expect
            assert len(client.search(code=b"\0" * 8, modality=modality, radius=64)) == expect

    running = make_server(**settings_)
    with Client(f"127.0.0.1:{running.port}") as client:
        searches(client, 0, 0)
        [image_id] = client.add_images([photo], keys=["p"])
        text_ids = client.add_texts(["a dog runs", "a cat sleeps"], keys=["t1", "t2"])
        searches(client, 1, 2)
        assert client.delete(ids=[image_id]) == 1
        assert client.delete(ids=list(text_ids), modality="text") == 2
        searches(client, 0, 0)
    running.stop(1.0)
    running = make_server(**settings_)  # a restart on the emptied folder
    with Client(f"127.0.0.1:{running.port}") as client:
        searches(client, 0, 0)
        client.add_texts(["a dog runs"], keys=["t1"])
        searches(client, 0, 1)
