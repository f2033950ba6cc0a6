"""Filters on the milvus kind (a real Milvus 2.3 server, and milvus-lite where it can): the same
answers as the flat kind for generated typed metadata and expressions, after metadata updates too;
the expressions are written from parsed values (no user text reaches Milvus as it was typed)."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

pytest.importorskip("pymilvus", reason="pymilvus not installed: pip install 'crossbit[milvus]'")
pytest.importorskip("milvus_lite", reason="milvus-lite not installed: pip install 'crossbit[milvus]'")

from crossbit.indexer import open_index  # noqa: E402
from crossbit.indexer.filter_nodes import Exists, fields_of  # noqa: E402
from crossbit.indexer.filters import parse  # noqa: E402
from crossbit.indexer.milvus_filters import Unsupported, to_milvus  # noqa: E402
from crossbit.indexer.milvus_rows import key_id  # noqa: E402

from filter_gen import expression, keys, metadata, scroll_all  # noqa: E402

FUZZ = int(os.environ.get("CROSSBIT_FUZZ_EXAMPLES", "0"))
names = itertools.count()


def has_meta_exists(flt) -> bool:
    stack = [flt.root]
    while stack:
        node = stack.pop()
        if isinstance(node, Exists) and node.field.kind == "meta":
            return True
        stack.extend(node.children())
    return False


def same_answers(milvus, flat, flt, rng, lite: bool) -> bool:
    """Every read with ``flt`` on both kinds; False when milvus-lite cannot take the filter."""
    try:
        to_milvus(flt, lite=lite)
    except Unsupported:
        return False
    if lite and has_meta_exists(flt):  # lite's exists is a guard of value types (docs/milvus.md)
        return False
    want = flat.select(flt).tolist()
    assert milvus.count(flt) == len(want), str(flt)
    assert milvus.select(flt).tolist() == want, str(flt)
    query = rng.integers(0, 256, (2, 8), dtype=np.uint8)
    query[:, 1:] = 0
    k = int(rng.integers(1, 6))
    a, b = milvus.search(query, k, filter=flt), flat.search(query, k, filter=flt)
    assert np.array_equal(a.distances, b.distances), str(flt)
    assert ((a.ids >= 0).sum(axis=1) == min(k, len(want))).all()
    assert set(a.ids[a.ids >= 0].tolist()) <= set(want)
    for (ia, da), (ib, db) in zip(milvus.range_search(query, 3, filter=flt),
                                  flat.range_search(query, 3, filter=flt)):
        assert sorted(ia.tolist()) == sorted(ib.tolist()) and sorted(da.tolist()) == sorted(db.tolist())
    assert scroll_all(milvus, flt, 4) == want, str(flt)
    return True


items_st = st.lists(st.tuples(keys, metadata, st.integers(0, 7)), min_size=1, max_size=14)
update_st = st.tuples(metadata, st.lists(st.sampled_from(["album", "tags", "year"]), max_size=2),
                      st.booleans())


@pytest.mark.parametrize("backend_examples", [("lite", FUZZ or 25), ("server", max(4, FUZZ // 4))],
                         ids=["lite", "server"])
def test_same_answers_as_the_flat_kind(backend_examples, request, tmp_path):
    backend, examples = backend_examples
    lite = backend == "lite"
    uri = str(tmp_path / "m.db") if lite else request.getfixturevalue("milvus_server").uri
    milvus = open_index(tmp_path / "m", 64, "milvus", uri=uri,
                        collection=f"crossbit_filters_{backend}_{next(names)}")
    ran = []

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(items=items_st, exprs=st.lists(expression(4), min_size=2, max_size=4), update=update_st,
           seed=st.integers(0, 100))
    def check(items, exprs, update, seed):
        rng = np.random.default_rng(seed)
        milvus._client.delete(milvus.collection, filter="id >= 0")
        seen, rows = set(), []
        for n, (key, meta, code) in enumerate(items):
            item_id = key_id(key) if key else 10**12 + n
            if item_id not in seen:
                seen.add(item_id)
                rows.append((item_id, key, meta, code))
        codes = np.zeros((len(rows), 8), np.uint8)
        codes[:, 0] = [r[3] for r in rows]
        with open_index(tmp_path / f"f{next(names)}", 64, "flat", snapshot_interval=0) as flat:
            flat.add(codes, ids=[r[0] for r in rows], keys=[r[1] for r in rows],
                     metadata=[r[2] for r in rows])
            plain = [r[1] is None for r in rows]
            if any(plain):
                milvus.add(codes[plain], ids=[r[0] for r in rows if r[1] is None],
                           metadata=[r[2] for r in rows if r[1] is None])
            keyed = [r for r in rows if r[1] is not None]
            if keyed:
                assert milvus.add(codes[[r[1] is not None for r in rows]],
                                  keys=[r[1] for r in keyed],
                                  metadata=[r[2] for r in keyed]).tolist() == [r[0] for r in keyed]
            filters = [parse(e) for e in exprs]
            for flt in filters:
                ran.append(same_answers(milvus, flat, flt, rng, lite))
            ids = [r[0] for r in rows[::2]]
            fields, dropped, replace = update
            assert milvus.update_metadata(ids, fields, dropped, replace) == \
                flat.update_metadata(ids, fields, dropped, replace)
            for flt in filters:
                ran.append(same_answers(milvus, flat, flt, rng, lite))

    with milvus:
        check()
    assert sum(ran) >= len(ran) // 2, "most generated filters must run on this backend"


def test_expressions_are_written_not_pasted():
    """A field name or string that looks like Milvus syntax stays one literal."""
    flt = parse('`x"] or id >= 0 or metadata["y` == "a\\" or id >= 0 or \\"" and key like "p\\"%"')
    expr = to_milvus(flt)
    assert expr.count('metadata["') == 1
    assert 'metadata["x\\"] or id >= 0 or metadata[\\"y"] == "a\\" or id >= 0 or \\""' in expr
    assert 'key >= "p\\""' in expr and 'key < "p#"' in expr
    assert to_milvus(parse("not a == 1"), lite=True) == 'metadata["a"] != 1'
    assert to_milvus(parse("a != 1")) == '(metadata["a"] < 1 or metadata["a"] > 1)'
    assert to_milvus(parse("not a < 1")) == 'not (metadata["a"] < 1)'
    assert to_milvus(parse("a in [1, 2.5]")) == '(metadata["a"] in [1] or metadata["a"] in [2.5])'
    with pytest.raises(Unsupported, match="milvus-lite"):
        to_milvus(parse("not a < 1"), lite=True)
    with pytest.raises(Unsupported, match="line break"):
        to_milvus(parse('a == "x\\ny"'), lite=True)
    # what Milvus cannot take is refused here (INVALID_ARGUMENT), never sent (UNAVAILABLE)
    for expr in ("year == -9223372036854775808", "year > -9223372036854775808 or x == 1",
                 'tags contains "a" and not p <= -9223372036854775808'):
        with pytest.raises(Unsupported, match="int64 minimum"):
            to_milvus(parse(expr))
    assert "-9223372036854775807" in to_milvus(parse("year > -9223372036854775807"))
    for n, joiner in ((257, " or "), (300, " and "), (257, " or not ")):
        with pytest.raises(Unsupported, match=f"has {n} comparisons"):
            to_milvus(parse(joiner.join(f"(year == {i})" for i in range(n))))
    to_milvus(parse(" or ".join(f"year == {i}" for i in range(256))))
    to_milvus(parse("year in [" + ", ".join(map(str, range(3000))) + "]"))  # one comparison
    assert fields_of(flt.root) == {'x"] or id >= 0 or metadata["y', "key"}


SEMANTICS = [{"s": "a", "n": 5}, {"s": "b", "n": 5.0}, {"n": 2.5, "b": True}, {"s": 5}, {"b": False},
             {"t": ["x", "y"], "s": "x"}, {"t": [], "z": None}, {}, {"n": 2**53 + 1}, {"s": 'q"u\\o'}]
CASES = ['s != "a"', 'n != 5', 'b != true', 's not in ["a"]', "n not in [5, 2.5]", "b not in [true]",
         'not s == "a"', "not n in [5]", 's == 5', "n == true", "b < 5", "n == 5", "n in [5, 2.5]",
         'n == 9007199254740992', "n > 9007199254740992", 't contains "x"', 's contains "x"',
         's like "q\\"%"', 's like ""', "not (n > 3)", "not exists t", "exists z", "exists t",
         'key like "k%"', 'not key like "k1%"', 'key != "k1"', 'not key != "k1"', "exists key",
         'key not in ["k1"]', 'not key in ["k1"]', "id > 3 and not id in [5]", "not (n < 3 or s == \"a\")",
         "exists missing and exists key", 'exists t and s == "x"']


@pytest.mark.parametrize("backend", ["lite", "server"])
def test_semantics_where_milvus_differs(backend, request, tmp_path):
    """Missing fields under !=, not in and not, int and float, bools and numbers, empty keys:
    crossbit's answer on both, written case by case."""
    lite = backend == "lite"
    uri = str(tmp_path / "m.db") if lite else request.getfixturevalue("milvus_server").uri
    codes = np.arange(len(SEMANTICS), dtype=np.uint8).repeat(8).reshape(-1, 8)
    key_of = {n: f"k{n}" for n in range(0, len(SEMANTICS), 2)}
    ids = [key_id(key_of[n]) if n in key_of else n for n in range(len(SEMANTICS))]
    with open_index(tmp_path / "m", 64, "milvus", uri=uri, collection=f"crossbit_sem_{backend}") \
            as milvus, open_index(tmp_path / "f", 64, "flat", snapshot_interval=0) as flat:
        flat.add(codes, ids=ids, keys=[key_of.get(n) for n in range(len(ids))], metadata=SEMANTICS)
        plain = [n not in key_of for n in range(len(ids))]
        milvus.add(codes[plain], ids=[i for i, p in zip(ids, plain) if p],
                   metadata=[m for m, p in zip(SEMANTICS, plain) if p])
        milvus.add(codes[[not p for p in plain]], keys=list(key_of.values()),
                   metadata=[SEMANTICS[n] for n in key_of])
        checked = 0
        for expr in CASES:
            flt = parse(expr)
            try:
                to_milvus(flt, lite=lite)
            except Unsupported:
                assert lite
                continue
            if lite and has_meta_exists(flt):
                continue
            assert milvus.select(flt).tolist() == flat.select(flt).tolist(), expr
            checked += 1
        assert checked >= (22 if lite else len(CASES))
