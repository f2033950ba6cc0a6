"""The binary index: every backend against a numpy popcount brute force, persistence, validation."""

import logging

import numpy as np
import pytest

from crossbit.indexer import open_index
from crossbit.indexer.backends_gpu import TorchHammingBackend
from crossbit.indexer.snapshot import SNAPSHOT

from helpers import clustered_codes, popcount_distances


def check_exact(results, queries, codes, ids, k):
    """Reported distances are the true k smallest, and each id's true distance matches."""
    true = popcount_distances(queries, codes)
    pos = {int(i): p for p, i in enumerate(ids)}
    for q in range(len(queries)):
        expected = np.sort(true[q])[:k]
        got_ids, got_d = results.ids[q], results.distances[q]
        assert list(got_d) == list(expected), f"query {q}"
        for i, d in zip(got_ids, got_d):
            assert true[q, pos[int(i)]] == d
        assert len(set(got_ids.tolist())) == k


KINDS = [("flat", {}), ("ivf", {"train_size": 10_000}), ("gpu", {"device": "cpu"})]


@pytest.mark.parametrize("kind,options", KINDS)
@pytest.mark.parametrize("bits", [64, 128])
def test_exact_backends_match_brute_force(tmp_path, kind, options, bits):
    rng = np.random.default_rng(bits)
    codes = clustered_codes(2000, bits, rng)
    queries = clustered_codes(25, bits, rng)
    with open_index(tmp_path, bits, kind, snapshot_interval=0, **options) as index:
        ids = index.add(codes, ids=np.arange(5000, 7000))
        assert list(ids) == list(range(5000, 7000))
        res = index.search(queries, 10)
        check_exact(res, queries, codes, ids, 10)
        assert index.stats()["exact"]


def test_ivf_trains_itself_and_matches_flat_when_probing_all(tmp_path):
    rng = np.random.default_rng(0)
    codes = clustered_codes(6000, 64, rng)
    queries = clustered_codes(50, 64, rng)
    with open_index(tmp_path / "ivf", 64, "ivf", train_size=4000, snapshot_interval=0) as ivf:
        ivf.add(codes[:3000])
        assert ivf.stats()["params"]["trained"] is False
        ivf.add(codes[3000:])
        params = ivf.stats()["params"]
        assert params["trained"] is True and params["nlist"] >= 16
        ids = np.arange(6000)
        check_exact(ivf.search(queries, 10, nprobe=params["nlist"]), queries, codes, ids, 10)
        # fewer probes: approximate, but most true neighbours found
        true = popcount_distances(queries, codes)
        res = ivf.search(queries, 10, nprobe=16)
        kth = np.sort(true, axis=1)[:, 9]
        hits = np.mean([(true[q, res.ids[q][res.ids[q] >= 0]] <= kth[q]).mean()
                        for q in range(len(queries))])
        assert hits > 0.7


def test_hnsw_recall_against_flat(tmp_path):
    rng = np.random.default_rng(1)
    codes = clustered_codes(5000, 64, rng)
    queries = clustered_codes(100, 64, rng)
    true = popcount_distances(queries, codes)
    kth = np.sort(true, axis=1)[:, 9]
    with open_index(tmp_path, 64, "hnsw", snapshot_interval=0) as index:
        index.add(codes)
        res = index.search(queries, 10)
        # a hit is any returned item at or within the true 10th distance (ties are equivalent)
        recall = np.mean([(true[q, res.ids[q]] <= kth[q]).mean() for q in range(len(queries))])
        assert recall > 0.9
        index.remove(res.ids[0][:3])
        again = index.search(queries[:1], 10)
        assert not set(res.ids[0][:3]) & set(again.ids[0])


@pytest.mark.parametrize("kind,options", KINDS + [("hnsw", {})])
def test_range_search_matches_brute_force(tmp_path, kind, options):
    rng = np.random.default_rng(2)
    codes = clustered_codes(800, 64, rng)
    queries = codes[:5]
    with open_index(tmp_path, 64, kind, snapshot_interval=0, **options) as index:
        index.add(codes)
        true = popcount_distances(queries, codes)
        for q, (ids, dist) in enumerate(index.range_search(queries, 6)):
            expected = np.flatnonzero(true[q] <= 6)
            assert sorted(ids.tolist()) == sorted(expected.tolist())
            assert list(dist) == sorted(dist)


def test_keys_upsert_remove_and_padding(tmp_path):
    rng = np.random.default_rng(3)
    codes = clustered_codes(5, 64, rng)
    with open_index(tmp_path, 64, "flat", snapshot_interval=0) as index:
        ids = index.add(codes[:3], keys=["a", "b", "c"], metadata=[{"n": 1}, None, {"n": 3}])
        again = index.add(codes[3:4], keys=["b"], metadata=[{"n": 2}])
        assert again[0] == ids[1]  # same key keeps its id, code replaced
        assert len(index) == 3
        assert index.items([ids[1]])[ids[1]].metadata == {"n": 2}
        res = index.search(codes[3:4], 5)
        assert res.ids[0][0] == ids[1] and res.distances[0][0] == 0
        assert list(res.ids[0][3:]) == [-1, -1] and list(res.distances[0][3:]) == [65, 65]
        assert index.ids_for_keys(["a", "zz"]) == {"a": int(ids[0])}
        with pytest.raises(KeyError, match="unknown ids"):
            index.remove([int(ids[0]), 999])
        assert len(index) == 3  # nothing removed when one id is unknown
        index.remove([int(ids[0])])
        assert len(index) == 2 and index.store.count() == 2


@pytest.mark.parametrize("bad,error", [
    (np.zeros((2, 8), np.int32), TypeError),
    (np.zeros((2, 7), np.uint8), ValueError),
    (np.zeros(8, np.uint8), ValueError),
    ([[0] * 8], TypeError),
])
def test_code_validation(tmp_path, bad, error):
    with open_index(tmp_path, 64, "flat", snapshot_interval=0) as index:
        with pytest.raises(error):
            index.add(bad)
        with pytest.raises(error):
            index.search(bad, 3)


def test_argument_validation(tmp_path):
    codes = np.zeros((2, 8), np.uint8)
    with open_index(tmp_path, 64, "flat", snapshot_interval=0) as index:
        with pytest.raises(ValueError, match="3 entries|2 entries"):
            index.add(codes, ids=[1, 2, 3])
        with pytest.raises(TypeError):
            index.add(codes, ids=np.array([1.0, 2.0]))
        with pytest.raises(ValueError, match="duplicates"):
            index.add(codes, ids=[4, 4])
        with pytest.raises(ValueError, match="k must be"):
            index.search(codes, 0)
        with pytest.raises(ValueError, match="k must be"):
            index.search(codes, 10**9)
        with pytest.raises(ValueError, match="radius"):
            index.range_search(codes, 65)
        with pytest.raises(TypeError, match="single value"):
            index.add(codes, keys="ab")
    with pytest.raises(ValueError, match="unknown index kind"):
        open_index(tmp_path / "x", 64, "nope")
    with pytest.raises(ValueError, match="1 and 2048"):
        with open_index(tmp_path / "g", 64, "gpu", device="cpu", snapshot_interval=0) as g:
            g.add(codes)
            g.search(codes, 4096)


@pytest.mark.parametrize("kind,options", KINDS + [("hnsw", {})])
def test_snapshot_round_trip_and_replay(tmp_path, kind, options, caplog):
    rng = np.random.default_rng(4)
    codes = clustered_codes(1500, 64, rng)
    queries = codes[:20]
    index = open_index(tmp_path, 64, kind, snapshot_interval=0, **options)
    index.add(codes[:1000], keys=[f"k{i}" for i in range(1000)])
    before = index.search(queries, 10)
    index.close()
    assert (tmp_path / SNAPSHOT).exists()
    with caplog.at_level(logging.INFO):
        index = open_index(tmp_path, 64, kind, snapshot_interval=0, **options)
    assert "loaded snapshot" in index.opened_from
    after = index.search(queries, 10)
    assert np.array_equal(before.distances, after.distances)
    if kind != "hnsw":
        assert np.array_equal(before.ids, after.ids)
    # changes after the snapshot, then a "crash" (no close): replayed on the next open
    index.add(codes[1000:], keys=[f"k{i}" for i in range(1000, 1500)])
    index.add(codes[:1], keys=["k5"])  # upsert
    index.remove([7])
    index._stop.set()
    index.store.close()
    index._lock_file.close()  # what the OS frees when a process dies: its folder lock
    reopened = open_index(tmp_path, 64, kind, snapshot_interval=0, **options)
    assert "replayed" in reopened.opened_from
    assert len(reopened) == reopened.store.count() == 1499
    stored = codes.copy()
    stored[5] = codes[0]  # the upsert of key k5
    expected = popcount_distances(codes[:5], np.delete(stored, 7, axis=0))
    res = reopened.search(codes[:5], 3)
    assert np.array_equal(res.distances, np.sort(expected, axis=1)[:, :3])
    reopened.close()


def test_corrupt_snapshot_is_rebuilt_from_the_store(tmp_path, caplog):
    rng = np.random.default_rng(5)
    codes = clustered_codes(300, 64, rng)
    with open_index(tmp_path, 64, "flat", snapshot_interval=0) as index:
        index.add(codes)
    snap = tmp_path / SNAPSHOT
    data = snap.read_bytes()
    snap.write_bytes(data[: len(data) // 2])  # truncated
    with caplog.at_level(logging.WARNING):
        with open_index(tmp_path, 64, "flat", snapshot_interval=0) as index:
            assert "rebuilt from the store" in index.opened_from
            assert len(index) == 300
    assert "snapshot unusable" in caplog.text
    snap.write_bytes(b"garbage")
    with open_index(tmp_path, 64, "flat", snapshot_interval=0) as index:
        assert len(index) == 300 and "rebuilt" in index.opened_from


def test_rerank_orders_shortlist_by_cosine(tmp_path):
    codes = np.zeros((4, 8), np.uint8)  # all tied in Hamming space
    emb = np.eye(4, dtype=np.float32)
    with open_index(tmp_path, 64, "flat", snapshot_interval=0) as index:
        ids = index.add(codes, embeddings=emb)
        query = np.array([[0.1, 0.2, 0.9, 0.3]], np.float32)
        res = index.search_rerank(codes[:1], query, k=2, shortlist=4)
        assert list(res.ids[0]) == [ids[2], ids[3]]
        assert res.scores[0][0] > res.scores[0][1]


def test_torch_hamming_backend_matches_faiss_flat(tmp_path):
    rng = np.random.default_rng(6)
    codes = clustered_codes(3000, 128, rng)
    queries = clustered_codes(40, 128, rng)
    torch_backend = TorchHammingBackend(128, device="cpu", chunk=700)  # several chunks merged
    torch_backend.add(codes, np.arange(3000))
    ids, dist = torch_backend.search(queries, 20)
    with open_index(tmp_path, 128, "flat", snapshot_interval=0) as flat:
        flat.add(codes)
        ref = flat.search(queries, 20)
    assert np.array_equal(dist, ref.distances)
    true = popcount_distances(queries, codes)
    assert all(true[q, ids[q]].tolist() == dist[q].tolist() for q in range(40))


def test_caller_ids_do_not_exhaust_assigned_ids(tmp_path):
    codes = np.zeros((3, 8), np.uint8)
    with open_index(tmp_path, 64, "flat", snapshot_interval=0) as index:
        assert list(index.add(codes[:1], ids=[2**63 - 1])) == [2**63 - 1]
        assert list(index.add(codes[:1], ids=[1])) == [1]
        assert list(index.add(codes[:2])) == [0, 2]  # the counter skips the taken id 1
        assert list(index.add(codes[:2], keys=["x", "y"])) == [3, 4]
        assert len(index) == 6


@pytest.mark.parametrize("in_memory", [True, False])
def test_reranking_follows_upserts_and_removals(tmp_path, in_memory):
    codes = np.zeros((3, 8), np.uint8)
    query = np.array([[0, 0, 1]], np.float32)
    with open_index(tmp_path, 64, "flat", snapshot_interval=0,
                    embeddings_in_memory=in_memory) as index:
        ids = index.add(codes, keys=["a", "b", "c"], embeddings=np.eye(3, dtype=np.float32) * 3)
        assert np.allclose(index.embeddings([ids[0]])[ids[0]], [3, 0, 0])  # as given
        assert list(index.search_rerank(codes[:1], query, 3).ids[0]) == [ids[2], ids[0], ids[1]]
        index.add(codes[:1], keys=["a"], embeddings=np.array([[0, 0, 5]], np.float32))
        res = index.search_rerank(codes[:1], query, 3)
        assert set(res.ids[0][:2]) == {ids[0], ids[2]} and res.scores[0][0] == pytest.approx(1)
        index.remove([int(ids[2])])
        res = index.search_rerank(codes[:1], query, 3)
        assert list(res.ids[0]) == [ids[0], ids[1], -1]
        plain = index.add(codes[:1], keys=["b"])  # b now has no embedding: ranked last
        assert index.embeddings(plain) == {}
        res = index.search_rerank(codes[:1], np.array([[0, 1, 0]], np.float32), 2)
        assert list(res.ids[0]) == [ids[0], ids[1]] and res.scores[0][1] == -np.inf
    with open_index(tmp_path, 64, "flat", snapshot_interval=0,
                    embeddings_in_memory=in_memory) as index:  # reopened: the same answer
        res = index.search_rerank(codes[:1], query, 3)
        assert list(res.ids[0]) == [ids[0], ids[1], -1]
        if in_memory:
            assert index.stats()["embeddings_in_memory"] == 1


def test_embedding_table_against_a_dict():
    from crossbit.indexer import embeddings as table_module
    from crossbit.indexer.embeddings import EmbeddingTable

    rng = np.random.default_rng(3)
    old, table_module.MERGE_AT = table_module.MERGE_AT, 7  # exercise the merges too
    try:
        table, truth = EmbeddingTable(), {}
        for step in range(60):
            ids = rng.integers(0, 40, size=int(rng.integers(1, 6)))
            if step % 4 == 3:
                table.remove(ids)
                for i in ids.tolist():
                    truth.pop(i, None)
            else:
                vecs = rng.normal(size=(len(ids), 5)).astype(np.float32)
                table.put(ids, vecs)
                for i, v in zip(ids.tolist(), vecs):
                    truth[i] = v / np.linalg.norm(v)
            probe = rng.integers(-2, 45, size=(3, 8))
            vectors, found = table.gather(probe)
            for (q, j), item in np.ndenumerate(probe):
                assert found[q, j] == (int(item) in truth)
                if found[q, j]:
                    np.testing.assert_allclose(vectors[q, j], truth[int(item)], atol=2e-3)
            assert len(table) == len(truth)
        table.put(np.array([1]), np.ones((1, 3), np.float32))  # another width: left out
        assert table.get(1) is None
    finally:
        table_module.MERGE_AT = old


def test_ivf_retrains_off_the_lock_and_keeps_what_changed_meanwhile(tmp_path, monkeypatch):
    from crossbit.indexer.backends_approx import IVFBackend

    codes = np.unique(clustered_codes(2000, 64, np.random.default_rng(3)), axis=0)[:700]
    meanwhile = []
    train = IVFBackend.retrained

    def retrained_while_serving(self, ids, stored):
        # the old index is not locked while the new one trains: writes and searches go on
        meanwhile.append(index.add(codes[600:610]))
        index.remove([int(meanwhile[0][0])])
        meanwhile.append(index.search(codes[:1], 1).ids[0, 0])
        return train(self, ids, stored)

    monkeypatch.setattr(IVFBackend, "retrained", retrained_while_serving)
    with open_index(tmp_path, 64, "ivf", train_size=200, retrain_factor=2.0,
                    snapshot_interval=0) as index:
        index.add(codes[:200])  # the first training, at train_size
        assert index.stats()["params"]["trained_at"] == 200
        index.add(codes[200:401])  # past 2 x 200: a retraining starts in the background
        index.wait_retrained(120)
        assert len(meanwhile) == 2 and meanwhile[1] == 0  # the search during training answered
        assert index.stats()["params"]["trained_at"] >= 401  # the new index is in
        assert len(index) == 410 and index.verify() == ""  # the writes made meanwhile are in it
        assert int(meanwhile[0][0]) not in index.search(codes[600:601], 5, nprobe=4096).ids
