"""Filtered search, counts, selections, scrolling and metadata updates on every FAISS kind, under
generated writes, restarts, typed metadata and expressions, against a brute force; old stores."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from crossbit.indexer import open_index
from crossbit.indexer.filters import parse

from filter_gen import FIELDS, brute, distances, expression, keys, metadata, scroll_all
from helpers import record

EXAMPLES = int(os.environ.get("CROSSBIT_FUZZ_EXAMPLES", "0")) or 12
KINDS = {"flat": {}, "flat-faiss": {"engine": "faiss"}, "ivf": {"train_size": 20, "nprobe": 2},
         "hnsw": {}, "gpu": {"device": "cpu"}, "flat-tiny": {}}
EXACT = {"flat", "flat-faiss", "gpu", "flat-tiny"}
runs = itertools.count()
EVERY_FIELD = [parse(f"exists {name}") for name in FIELDS]

write_st = st.one_of(
    st.tuples(st.just("add"), st.lists(st.tuples(keys, metadata, st.integers(0, 255)), min_size=1,
                                       max_size=12)),
    st.tuples(st.just("remove"), st.lists(st.integers(0, 60), min_size=1, max_size=4)),
    st.tuples(st.just("update"), st.tuples(st.lists(st.integers(0, 60), min_size=1, max_size=5),
                                           metadata, st.lists(st.sampled_from(["album", "year",
                                                                               "tags"]),
                                                              max_size=2), st.booleans())),
    st.tuples(st.just("restart"), st.none()))


def open_kind(kind, folder):
    return open_index(folder, 64, kind.split("-")[0], snapshot_interval=0, **KINDS[kind])


@pytest.fixture
def tiny(monkeypatch):
    """The attribute index's sizes made tiny, so that a few items take every path: sorted
    columns past 2 distinct values, buckets of 8 entries (prefix bitmaps past 32 buckets),
    merges every few writes."""
    from crossbit.indexer import attribute_columns, attributes

    monkeypatch.setattr(attributes, "MAX_DISTINCT", 2)
    monkeypatch.setattr(attribute_columns, "BUCKET", 8)
    monkeypatch.setattr(attribute_columns, "MERGE_MIN", 4)
    monkeypatch.setattr(attribute_columns, "FAST_FROM", 1)  # numba builds every bitmap


def apply(index, items: dict, op, arg, rng) -> None:
    """One write on the index and on the model (id -> (key, metadata, code bytes))."""
    if op == "add":
        codes = rng.integers(0, 256, (len(arg), 8), dtype=np.uint8)
        codes[:, 0] = [c for _, _, c in arg]  # few distinct codes: many ties and exact repeats
        codes[:, 1:] &= 3
        ks = [k for k, _, _ in arg]
        write = index.add_items(codes, keys=ks, metadata=[m for _, m, _ in arg])
        for n, item_id in enumerate(write.ids.tolist()):
            if item_id < 0:
                continue
            meta = json.loads(json.dumps(arg[n][1]))
            before = [v for v in items.values() if ks[n] and v[0] == ks[n]]
            if before:  # a re-add of a stored key keeps the fields it does not send
                meta = {**before[0][1], **meta}
            for old in [i for i, v in items.items() if ks[n] and v[0] == ks[n] and i != item_id]:
                del items[old]
            items[item_id] = (ks[n], meta, codes[n].tobytes())
    elif op == "remove":
        known = [i for i in arg if i in items]
        if known:
            assert index.remove(known) == len(set(known))
            for i in known:
                items.pop(i, None)
    elif op == "update":
        ids, fields, dropped, replace = arg
        changed = 0
        for i in set(ids):
            if i not in items:
                continue
            meta = {} if replace else dict(items[i][1])
            meta.update(fields)
            for name in dropped:
                meta.pop(name, None)
            changed += json.dumps(meta) != json.dumps(items[i][1])
            items[i] = (items[i][0], meta, items[i][2])
        assert index.update_metadata(ids, fields, dropped, replace) == changed


def check(index, items: dict, kind: str, flt, rng) -> None:
    """Every read with ``flt`` against the brute force."""
    want = brute(items, flt)
    assert index.count(flt) == len(want)
    assert index.select(flt).tolist() == want
    assert index.select(flt, limit=2).tolist() == want[:2]
    assert scroll_all(index, flt, 3) == want
    for item in index.scroll(None, 2, flt):
        assert item.metadata == items[item.id][1] and item.key == items[item.id][0]
    query = rng.integers(0, 256, (2, 8), dtype=np.uint8)
    query[:, 1:] &= 3
    k = int(rng.integers(1, 8))
    first = index.search(query, k, filter=flt)
    again = index.search(query, k, filter=flt)  # a filter used again: its codes packed (exact)
    for res, q in itertools.product((first, again), range(2)):
        got = res.ids[q][res.ids[q] >= 0].tolist()
        assert len(got) == min(k, len(want)), (kind, str(flt), res.ids[q], want)  # never short
        assert set(got) <= set(want) and len(set(got)) == len(got)
        true = distances(items, got, query[q])
        assert true.tolist() == res.distances[q][:len(got)].tolist()  # each hit's distance
        if kind in EXACT:  # exact: the k smallest distances of the matching items
            assert true.tolist() == sorted(distances(items, want, query[q]).tolist())[:k]
    for q, (ids, dist) in enumerate(index.range_search(query, 6, filter=flt)):
        all_d = distances(items, want, query[q])
        assert sorted(ids.tolist()) == sorted(np.array(want)[all_d <= 6].tolist() if want else [])
        assert dist.tolist() == sorted(dist.tolist())


@pytest.mark.parametrize("kind", list(KINDS))
def test_generated_writes_and_filters_against_brute_force(kind, tmp_path, request):
    if kind.endswith("tiny"):
        request.getfixturevalue("tiny")
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(ops=st.lists(write_st, min_size=1, max_size=8),
           exprs=st.lists(expression(4), min_size=1, max_size=3), seed=st.integers(0, 1000))
    def run(ops, exprs, seed):
        done.append((len(ops), len(exprs)))
        rng = np.random.default_rng(seed)
        folder = tmp_path / f"r{next(runs)}"
        index = open_kind(kind, folder)
        items: dict = {}
        filters = [parse(e) for e in exprs]
        try:
            for op, arg in ops:
                if op == "restart":
                    index.close()
                    index = open_kind(kind, folder)
                else:
                    apply(index, items, op, arg, rng)
                for flt in filters:
                    check(index, items, kind, flt, rng)
                for flt in EVERY_FIELD:  # what filters see is what is stored, field by field
                    assert index.count(flt) == len(brute(items, flt)), (str(flt), items)
            assert index.verify() == ""
        finally:
            index.close()

    done: list[tuple[int, int]] = []
    run()
    record("filters_generated", kind=kind, runs=len(done), writes_and_restarts=sum(o for o, _ in done),
           filters=sum(e for _, e in done))


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_selectivities_on_a_larger_index(kind, tmp_path):
    """Hundreds of items: the exact scan, the approximate search with over-fetch (IVF trained,
    HNSW), and never fewer than min(k, matches) hits at any selectivity."""
    rng = np.random.default_rng(5)
    n = 3000
    codes = rng.integers(0, 256, (n, 8), dtype=np.uint8)
    meta = [{"cat": f"c{i % 100}", "year": 2000 + i % 25, "price": float(i % 997) / 10,
             "ok": bool(i % 2), "tags": [f"t{i % 7}"]} for i in range(n)]
    options = {"ivf": {"train_size": 1000, "nprobe": 4}}.get(kind, {})
    with open_index(tmp_path, 64, kind, snapshot_interval=0, **options) as index:
        ids = index.add(codes, metadata=meta)
        items = {int(i): (None, m, c.tobytes()) for i, m, c in zip(ids, meta, codes)}
        for expr in ["ok == true", 'cat in ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", '
                     '"c10"]', 'cat == "c7"', 'cat == "c7" and year == 2007', "price < 5",
                     "year >= 2000", 'not cat == "c3"', 'tags contains "t3" and ok == false']:
            flt = parse(expr)
            want = brute(items, flt)
            res = index.search(codes[:20], 10, filter=flt)
            assert ((res.ids >= 0).sum(axis=1) == min(10, len(want))).all(), expr
            assert set(res.ids[res.ids >= 0].tolist()) <= set(want), expr
            if kind == "flat":
                for q in range(20):
                    assert res.distances[q].tolist() == sorted(
                        distances(items, want, codes[q]).tolist())[:10]


def test_old_stores_string_metadata_is_filterable(tmp_path):
    """A store written before typed metadata (strings only, and rows put there by raw SQL) opens
    and filters with == and in; its stringified values stay strings."""
    folder = tmp_path / "old"
    with open_index(folder, 64, "flat", snapshot_interval=0) as index:
        index.add(np.zeros((3, 8), np.uint8), keys=["a", "b", "c"],
                  metadata=[{"album": "2024", "n": "None"}, {"album": "2023"}, {}])
    conn = sqlite3.connect(folder / "store.sqlite3")
    conn.execute("INSERT INTO items(id, key, code, metadata, added) VALUES (99, 'raw', ?, ?, 0)",
                 (bytes(8), json.dumps({"album": "2024", "tags": "['beach', 'sea']"})))
    conn.commit()
    conn.close()
    with open_index(folder, 64, "flat", snapshot_interval=0) as index:
        assert index.select(parse('album == "2024"')).tolist() == [0, 99]
        assert index.select(parse('album in ["2023", "2024"]')).tolist() == [0, 1, 99]
        assert index.select(parse('n == "None"')).tolist() == [0]
        assert index.count(parse('tags contains "beach"')) == 0  # a string, not a list
        assert index.count(parse("album == 2024")) == 0  # strings stay strings
        res = index.search(np.zeros((1, 8), np.uint8), 5, filter=parse('album == "2024"'))
        assert sorted(res.ids[0][:2].tolist()) == [0, 99] and res.ids[0][2] == -1


def test_update_metadata_rules(tmp_path):
    with open_index(tmp_path, 64, "flat", snapshot_interval=0) as index:
        ids = index.add(np.zeros((3, 8), np.uint8), metadata=[{"a": "x", "b": 1}, {"a": "y"}, {}])
        assert index.update_metadata([ids[0], 12345], {"c": True}) == 1  # unknown id skipped
        assert index.items([ids[0]])[ids[0]].metadata == {"a": "x", "b": 1, "c": True}
        assert index.update_metadata(ids, remove_fields=["a"]) == 2
        with pytest.raises(ValueError, match="a list holds strings"):
            index.update_metadata([ids[1]], {"z": [1]})
        with pytest.raises(TypeError, match="not one string"):
            index.update_metadata([ids[1]], remove_fields="a")
        assert index.update_metadata([ids[2]], {"q": 1.5}, replace=True) == 1
        assert index.update_metadata([ids[2]], {"q": 1.5}, replace=True) == 0  # unchanged
        assert index.select(parse("exists q")).tolist() == [ids[2]]
        assert index.select(parse("c == true")).tolist() == [ids[0]]
        with pytest.raises(TypeError, match="parse the expression"):
            index.search(np.zeros((1, 8), np.uint8), 1, filter='a == "x"')
        with pytest.raises(ValueError, match="limit"):
            index.scroll(None, 0)
        stats = index.stats()["attribute_index"]
        assert stats["fields"] == 3 and stats["items"] == 3 and stats["memory_bytes"] > 0


def test_a_re_add_keeps_the_merged_fields_filterable_and_check_compares_fields(tmp_path):
    """The merged metadata of a re-add is what filters see (with new fields, none, or other
    values), through a restart; ``crossbit check`` compares the saved attribute index with the
    store field by field and ``--repair`` rebuilds it."""
    from crossbit.indexer.check import check_index

    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (4, 8), dtype=np.uint8)
    keys_ = ["a", "b", "c", "d"]
    with open_index(tmp_path, 64, "flat", snapshot_interval=0) as index:
        index.add_items(codes, keys=keys_, metadata=[{"album": "2024", "n": 1}] * 4)
        index.add_items(codes[:2] ^ 1, keys=keys_[:2])  # changed codes, no metadata
        index.add_items(codes[2:] ^ 1, keys=keys_[2:], metadata=[{"y": True}] * 2)
        assert index.count(parse('album == "2024"')) == 4
        assert index.count(parse("n == 1 and exists y")) == 2
        assert index.verify() == ""
        index.snapshot()
    assert check_index(tmp_path).ok
    with open_index(tmp_path, 64, "flat", snapshot_interval=0) as index:
        assert index.stats()["attribute_index"]["opened_from"].startswith("loaded")
        assert index.count(parse('album == "2024"')) == 4
        gone = index.store.ids_for_keys(["a"])["a"]  # break the saved copy: one item's fields
        index.attributes.remove(np.array([gone]))
        index.attributes.add(np.array([gone]), ["a"], [{"n": 1}], codes[:1] ^ 1)
        assert "field 'album'" in index.verify()
        index.snapshot()
    report = check_index(tmp_path)
    assert not report.ok and any("field 'album'" in p and f"({gone})" in p
                                 for p in report.problems), report.problems
    assert check_index(tmp_path, repair=True).repaired
    assert check_index(tmp_path).ok
    with open_index(tmp_path, 64, "flat", snapshot_interval=0) as index:
        assert index.count(parse('album == "2024"')) == 4
