"""Generated typed metadata and filter expressions for the filter tests, and the brute force they
are checked against (each item tested with ``Filter.matches``)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

FIELDS = ["album", "year", "price", "in_stock", "tags", "x"]
STRINGS = ["2023", "2024", "a", "b", "", "é ü", 'q"uo\\te', "photos/2024/x", "photos/2023"]
INTS = [-3, 0, 1, 2, 3, 2020, 2024, 2**53 + 1, -(2**62)]
FLOATS = [0.5, 2.0, 2.5, -0.0, -1.5, 1e20, 49.5, 3.0000000000000004]
TAGS = ["beach", "sea", "dog", "x"]

strings = st.sampled_from(STRINGS)
numbers = st.sampled_from(INTS) | st.sampled_from(FLOATS)
values = strings | numbers | st.booleans() | st.lists(st.sampled_from(TAGS), max_size=3)
metadata = st.dictionaries(st.sampled_from(FIELDS), values, max_size=4)
keys = st.none() | st.sampled_from(["k1", "k2", "photos/2024/a", "photos/2024/b", "photos/2023/c",
                                    "x%y", "x_y"])


def _lit(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


fields = st.sampled_from(FIELDS + ["missing"])
ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">="])


@st.composite
def leaf(draw) -> str:
    """One predicate's text, type-correct."""
    which = draw(st.sampled_from(["cmp", "cmp", "in", "contains", "exists", "like", "id", "key"]))
    name = draw(fields)
    if which == "cmp":
        op = draw(ops)
        value = draw(numbers) if op not in ("==", "!=") else draw(strings | numbers | st.booleans())
        return f"{name} {op} {_lit(value)}"
    if which == "in":
        kind = draw(st.sampled_from([strings, numbers, st.booleans()]))
        items = draw(st.lists(kind, min_size=1, max_size=3))
        neg = draw(st.booleans())
        return f"{name} {'not in' if neg else 'in'} [{', '.join(_lit(v) for v in items)}]"
    if which == "contains":
        return f"{name} contains {_lit(draw(st.sampled_from(TAGS)))}"
    if which == "exists":
        return f"exists {draw(fields | st.just('key'))}"
    if which == "like":
        prefix = draw(st.sampled_from(["photos/", "photos/2024", "", "2", "x\\%", "k"]))
        target = draw(st.sampled_from([name, "key"]))
        return f'{target} like "{prefix}{draw(st.sampled_from(["%", ""]))}"'
    if which == "id":
        op = draw(ops)
        return draw(st.sampled_from([f"id {op} {draw(st.integers(-1, 40))}",
                                     f"id in [{draw(st.integers(0, 40))}, {draw(st.integers(0, 40))}]"]))
    return draw(st.sampled_from(['key == "k1"', 'key != "k2"', 'key in ["k1", "photos/2024/a"]',
                                 'key not in ["k1"]']))


def expression(max_leaves: int = 6):
    """Expressions of up to ``max_leaves`` predicates joined by and / or / not and parentheses,
    in any of the spellings the grammar accepts."""
    return st.recursive(
        leaf(),
        lambda inner: st.one_of(
            st.builds(lambda a, b, op: f"({a}) {op} ({b})", inner, inner,
                      st.sampled_from(["and", "or", "AND", "&&", "||", "Or"])),
            st.builds(lambda a, op: f"{op} ({a})", inner, st.sampled_from(["not", "!", "NOT"]))),
        max_leaves=max_leaves)


def brute(items: dict, flt) -> list[int]:
    """The ids of ``items`` (id -> (key, metadata, code)) that match, ascending."""
    return sorted(i for i, (key, meta, _) in items.items() if flt.matches(i, key, meta))


def scroll_all(index, flt, page: int) -> list[int]:
    """The ids of every page of a scroll with ``flt``, ``page`` items at a time."""
    ids, after = [], None
    while True:
        got = index.scroll(after, page, flt)
        ids += [i.id for i in got]
        if len(got) < page:
            return ids
        after = got[-1].id


def distances(items: dict, ids: list[int], query: np.ndarray) -> np.ndarray:
    if not ids:
        return np.zeros(0, np.int64)
    codes = np.stack([np.frombuffer(items[i][2], np.uint8) for i in ids])
    return np.bitwise_count(codes ^ query[None, :]).sum(axis=1)
