"""The milvus kind, on embedded milvus-lite and on a real Milvus server: the same answers and the
same add/replace/delete outcomes as the FAISS flat kind, under generated calls and keys."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

pytest.importorskip("pymilvus", reason="pymilvus not installed: pip install 'crossbit[milvus]'")
pytest.importorskip("milvus_lite", reason="milvus-lite not installed: pip install 'crossbit[milvus]'")

from crossbit.indexer import ModelMismatch, open_index  # noqa: E402
from crossbit.indexer.milvus import MilvusIndex  # noqa: E402

from helpers import clustered_codes, popcount_distances  # noqa: E402

names = itertools.count()


@pytest.fixture(params=["lite", "server"])
def open_milvus(request, tmp_path):
    """open(**options) -> a new milvus index on milvus-lite or on the real server."""
    opened = []
    uri = request.getfixturevalue("milvus_server").uri if request.param == "server" else None

    def open_(bits=64, name=None, **options):
        name = name or f"t{next(names)}"
        index = open_index(tmp_path / name, bits, "milvus", uri=uri or str(tmp_path / "m.db"),
                           collection=f"crossbit_test_{name}", **options)
        opened.append(index)
        return index

    open_.backend = request.param
    yield open_
    for index in opened:
        index.close()


def test_same_topk_distances_as_faiss_flat(open_milvus, tmp_path):
    rng = np.random.default_rng(11)
    codes = clustered_codes(600, 64, rng)
    milvus = open_milvus()
    keys = [f"item-{i}" for i in range(len(codes))]
    milvus.add(codes, keys=keys)
    with open_index(tmp_path / "flat", 64, "flat", snapshot_interval=0) as flat:
        flat.add(codes, keys=keys)
        queries = codes[:20]
        a, b = milvus.search(queries, 10), flat.search(queries, 10)
        assert np.array_equal(a.distances, b.distances)
    true = popcount_distances(queries, codes)
    by_id = {v: int(k.split("-")[1]) for k, v in milvus.ids_for_keys(keys).items()}
    for q in range(len(queries)):  # ids may differ among ties; each id's distance is right
        assert [true[q, by_id[i]] for i in a.ids[q]] == list(a.distances[q])


def test_interface(open_milvus):
    rng = np.random.default_rng(3)
    codes = clustered_codes(50, 64, rng)
    emb = rng.normal(size=(50, 8)).astype(np.float32)
    milvus = open_milvus()
    ids = milvus.add(codes, keys=[f"k{i}" for i in range(50)],
                     metadata=[{"n": str(i)} for i in range(50)], embeddings=emb,
                     thumbnails=[b"\xff\xd8thumb"] * 50)
    assert len(set(ids.tolist())) == 50 and len(milvus) == 50
    assert milvus.stats()["kind"] == "milvus"
    assert milvus.ids_for_keys(["k3", "nope"]) == {"k3": ids[3]}
    assert milvus.items([ids[3]])[ids[3]].metadata == {"n": "3"}
    assert milvus.thumbnail(ids[3]) == b"\xff\xd8thumb"
    assert np.array_equal(milvus.codes([ids[5]])[1][0], codes[5])
    assert np.allclose(milvus.embeddings([ids[5]])[ids[5]], emb[5])
    for radius in (0, 3, 10):
        got = milvus.range_search(codes[:2], radius)
        true = popcount_distances(codes[:2], codes)
        for q, (found, dist) in enumerate(got):
            assert sorted(found.tolist()) == sorted(ids[true[q] <= radius].tolist())
            assert all(true[q, list(ids).index(i)] == d for i, d in zip(found, dist))
    rr = milvus.search_rerank(codes[:1], emb[:1], 3, shortlist=50)
    assert rr.ids[0][0] == ids[0]  # its own embedding is the best cosine in its own shortlist
    newest = milvus.page(0, 5, newest_first=True)
    assert [i.id for i in newest] == sorted(ids.tolist(), reverse=True)[:5]
    assert [i.id for i in milvus.page(48, 10)] == sorted(ids.tolist())[48:]
    with pytest.raises(ValueError, match="k must be"):
        milvus.search(codes[:1], 0)
    with pytest.raises(TypeError):
        milvus.add(codes.astype(np.int32))
    with pytest.raises(TypeError, match="one entry per code"):
        milvus.add(codes[:3], keys="abc")  # not three keys 'a', 'b', 'c'
    with pytest.raises(ValueError, match="one entry per code"):
        milvus.add(codes[:3], keys=["a", "b"])


@pytest.mark.parametrize("open_milvus", ["lite"], indirect=True)  # the same calls on a server
def test_model_is_recorded_and_checked(open_milvus):
    model = {"name": "m1", "fingerprint": "aaaa"}
    first = open_milvus(name="model", model=model)
    first.add(np.zeros((1, 8), np.uint8), keys=["x"])
    assert open_milvus(name="model", model=model).model == model
    with pytest.raises(ModelMismatch, match="fingerprint aaaa"):
        open_milvus(name="model", model={"name": "m2", "fingerprint": "bbbb"})
    with pytest.raises(ValueError, match="64-bit codes"):
        open_milvus(bits=128, name="model")


@pytest.mark.parametrize("open_milvus", ["lite"], indirect=True)
def test_old_schema_refused(open_milvus):
    index = open_milvus(name="old")
    client, name = index._client, "crossbit_test_v1"
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("code", DataType.BINARY_VECTOR, dim=64)
    params = client.prepare_index_params()
    params.add_index(field_name="code", index_type="BIN_FLAT", metric_type="HAMMING")
    client.create_collection(name, schema=schema, index_params=params)
    with pytest.raises(ValueError, match="older crossbit"):
        MilvusIndex(index.directory, 64, uri=index.uri, collection=name)


# -- the same outcomes as the FAISS flat kind, for generated calls --------------------------------

GIVEN = 10**12  # given ids live far from both kinds' assigned ids, so they only meet each other
keys_st = st.sampled_from(["a", "b", "c", "d", "e"])
ids_st = st.integers(GIVEN, GIVEN + 6)
# an item has a key, a caller id or neither: on milvus a key decides the id (both: refused,
# tested below), so only these three meet the flat kind's rule
item_st = st.one_of(st.tuples(keys_st, st.none()), st.tuples(st.none(), ids_st),
                    st.tuples(st.none(), st.none()))
call_st = st.lists(st.builds(lambda ki, v: (*ki, v), item_st, st.integers(0, 3)), min_size=1,
                   max_size=6)
op_st = st.one_of(st.tuples(st.just("add"), call_st),
                  st.tuples(st.just("remove"), st.lists(st.integers(0, 9), min_size=1,
                                                        max_size=2)))


def state(index, to_flat) -> set:
    items = index.page(0, 1000)
    ids = [i.id for i in items]
    held, codes = index.codes(ids)
    code_of = dict(zip(held.tolist(), (c.tobytes() for c in codes)))
    return {(to_flat(i.id), i.key, json.dumps(i.metadata), code_of[i.id]) for i in items}


def run_ops(milvus, flat, ops) -> None:
    """Apply each op to both kinds; outcomes, refusals and contents must agree after each."""
    to_flat: dict[int, int] = {}  # milvus id -> flat id (given ids map to themselves)
    rng = np.random.default_rng(0)
    for op, arg in ops:
        if op == "add":
            keys = [k for k, _, _ in arg]
            ids = [i for _, i, _ in arg]
            codes = rng.integers(0, 256, (len(arg), 8), dtype=np.uint8)
            codes[:, 0] = [v for _, _, v in arg]  # small values: repeats are often unchanged
            codes[:, 1:] = 0
            meta = [{"v": str(v)} for _, _, v in arg]
            a = milvus.add_items(codes, ids=ids, keys=keys, metadata=meta)
            b = flat.add_items(codes, ids=ids, keys=keys, metadata=meta)
            assert a.outcomes == b.outcomes, arg
            assert sorted(a.refused) == sorted(b.refused), arg
            for x, y in zip(a.ids.tolist(), b.ids.tolist()):
                assert (x == -1) == (y == -1)
                if x != -1:
                    assert to_flat.setdefault(x, y) == y, "one milvus id, two flat ids"
        else:
            stored = sorted(to_flat[i.id] if i.id in to_flat else i.id
                            for i in milvus.page(0, 1000))
            back = {v: k for k, v in to_flat.items()}
            wanted = [stored[n] if n < len(stored) else GIVEN + 99 for n in arg]
            outcomes = []
            for index, ids in ((milvus, [back.get(w, w) for w in wanted]), (flat, wanted)):
                try:
                    outcomes.append(index.remove(ids))
                except KeyError:
                    outcomes.append("unknown")
            assert outcomes[0] == outcomes[1], (wanted, outcomes)
            if outcomes[0] != "unknown":  # a key added again later gets its key's id again on
                for w in wanted:         # milvus and a new one on flat: forget the pair
                    to_flat.pop(back.get(w, w), None)
        assert len(set(to_flat.values())) == len(to_flat), "two milvus ids, one flat id"
        assert state(milvus, lambda i: to_flat.get(i, i)) == state(flat, lambda i: i)


@pytest.mark.parametrize("backend_examples", [("lite", 15), ("server", 5)], ids=["lite", "server"])
def test_same_outcomes_as_the_flat_kind(backend_examples, request, tmp_path):
    backend, examples = backend_examples
    uri = request.getfixturevalue("milvus_server").uri if backend == "server" \
        else str(tmp_path / "m.db")
    run = itertools.count()
    milvus = open_index(tmp_path / "m", 64, "milvus", uri=uri,
                        collection=f"crossbit_ops_{backend}_{next(names)}")

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(st.lists(op_st, min_size=1, max_size=8))
    def check(ops):
        milvus._client.delete(milvus.collection, filter="id >= 0")  # an empty collection
        assert len(milvus) == 0
        with open_index(tmp_path / f"f{next(run)}", 64, "flat", snapshot_interval=0) as flat:
            run_ops(milvus, flat, ops)

    with milvus:
        check()


def keys_round_trip(milvus, keys):
    codes = np.arange(len(keys) * 8, dtype=np.uint8).reshape(-1, 8)
    ids = milvus.add(codes, keys=keys)
    assert milvus.ids_for_keys(keys) == dict(zip(keys, ids.tolist()))
    found = milvus.items(ids)
    assert [found[i].key for i in ids] == keys
    assert milvus.remove(ids[: len(ids) // 2]) == len(ids) // 2
    assert set(milvus.ids_for_keys(keys)) == set(keys[len(keys) // 2:])
    milvus.remove(ids[len(ids) // 2:])
    assert len(milvus) == 0


def test_any_key_round_trips(open_milvus):
    """Quotes, backslashes, brackets, newlines and any Unicode stay data, never expression."""
    milvus = open_milvus(bits=64)
    keys_round_trip(milvus, ['a"b', "a'b", "back\\slash", "x] or id >= 0 or [", "line\nbreak",
                             "é∑😀", " ", "k" * 1024])

    @settings(max_examples=15 if open_milvus.backend == "lite" else 4, deadline=None,
              database=None, suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=30, unique=True))
    def check(keys):
        keys_round_trip(milvus, keys)

    check()


@pytest.mark.parametrize("open_milvus", ["lite"], indirect=True)
def test_key_and_caller_id_together_are_refused_alone(open_milvus):
    """A keyed item's id is its key's, so every server agrees on it: a caller id beside a key
    is refused (that item alone), and the key's id does not depend on the server."""
    milvus = open_milvus()
    codes = np.arange(24, dtype=np.uint8).reshape(3, 8)
    write = milvus.add_items(codes, ids=[None, 5, 6], keys=["a", "b", None])
    assert write.outcomes == ["added", "refused", "added"]
    assert "send the key or the id, not both" in write.refused[1]
    other = open_milvus(name=None)  # another collection: the same key gets the same id
    assert other.add(codes[:1], keys=["a"]).tolist() == [write.ids[0]]


@settings(max_examples=3, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(offsets=st.lists(st.integers(-400, 400), min_size=1, max_size=12, unique=True),
       keyless=st.integers(1, 30))
def test_assigned_ids_never_take_a_caller_item(offsets, keyless, tmp_path_factory):
    """Caller ids near the allocator's ids (the ones an outside review raced): those at or past
    2**58 are refused per item (the allocator's range), those below are kept, and keyless
    items added afterwards never land on an id a caller item holds."""
    from crossbit.indexer.milvus_schema import ASSIGNED_FROM

    folder = tmp_path_factory.mktemp("assigned")
    with open_index(folder / "i", 64, "milvus", uri=str(folder / "m.db"),
                    collection="crossbit_test_assigned") as milvus:
        codes = np.arange(8 * 64, dtype=np.uint8).reshape(64, 8)
        [first] = milvus.add(codes[:1]).tolist()
        assert first >= ASSIGNED_FROM
        near = [first + o for o in offsets] + [ASSIGNED_FROM - 1 - abs(o) for o in offsets]
        near = [i for i in dict.fromkeys(near) if i != first]
        write = milvus.add_items(codes[:len(near)] ^ 0xFF, ids=near)
        for item_id, outcome, why in zip(near, write.outcomes,
                                         [write.refused.get(i) for i in range(len(near))]):
            if item_id >= ASSIGNED_FROM:
                assert outcome == "refused" and "below 2**58" in why
            else:
                assert outcome == "added", why
        held = {i for i, o in zip(near, write.outcomes) if o == "added"}
        assigned = milvus.add(codes[:keyless]).tolist()
        assert not set(assigned) & (held | {first}) and len(set(assigned)) == keyless
        assert milvus.count() == 1 + len(held) + keyless


def test_a_scroll_right_after_deletes_sees_them(open_milvus):
    """A server's own deletes are out of its next scroll at once (Session consistency), as
    they are out of its counts and gets: rounds of add 6, delete 5, scroll (the real server:
    milvus-lite was never behind)."""
    if open_milvus.backend != "server":
        pytest.skip("the real server's case")
    milvus = open_milvus()
    rng = np.random.default_rng(5)
    kept: set[int] = set()
    for _ in range(4):
        ids = milvus.add(rng.integers(0, 256, (6, 8), dtype=np.uint8)).tolist()
        milvus.remove(ids[1:])
        kept.add(ids[0])
        page = [item.id for item in milvus.scroll(None, 100)]
        assert sorted(page) == sorted(kept), (page, kept)
        assert milvus.count() == len(kept)
