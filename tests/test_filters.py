"""The filter language: the issue's examples, errors with positions, the semantics on one item,
generated expressions round-tripping, generated garbage never crashing, and the typed-metadata rule."""

from __future__ import annotations

import math
import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossbit.indexer.filters import FilterError, check_metadata, parse

from filter_gen import expression, keys, metadata

EXAMPLES = int(os.environ.get("CROSSBIT_FUZZ_EXAMPLES", "0")) or 150

ISSUE = ['album == "2024"', "year >= 2020", "price < 49.5", "in_stock == true",
         'album in ["2023", "2024"]', 'album not in ["2023"]', 'tags contains "beach"',
         "exists camera", 'key like "photos/2024/%"', "id > 3 and key == \"a\"",
         '(album == "2024" or not year < 2000) and in_stock == true',
         "a == 1 && b != 2 || !(c in [1, 2.5])", "`my field` == 'it''s'".replace("''", "\\'"),
         "x == -1.5e3 AND y == 2E2 Or z == .5", "x == true AND X == False"]


@pytest.mark.parametrize("expr", ISSUE)
def test_issue_examples_parse_and_round_trip(expr):
    flt = parse(expr)
    again = parse(str(flt))
    assert again == flt and str(again) == str(flt)


@pytest.mark.parametrize("expr,position,words", [
    ("album == ", 9, "expected a value after '=='"),
    ('x == "abc', 5, "unterminated string"),
    ("x === 1", 4, "unexpected character '='"),
    ("(a == 1", 7, "expected ')'"),
    ("and == 1", 0, "keyword"),
    ("key > 5", 6, "key is a string"),
    ('id == "x"', 6, "id is an integer"),
    ("id < 1.5", 5, "id is an integer"),
    ("x like 5", 7, "like takes a string"),
    ('tags contains ["a"]', 14, "contains takes one string"),
    ("tags contains 5", 14, "contains takes a string"),
    ('x in [1, "a"]', 9, "mixes types"),
    ("x in [true, 1]", 12, "mixes types"),
    ("x > true", 4, "orders numbers only"),
    ('x >= "a"', 5, "orders numbers only"),
    ("x in []", 5, "empty"),
    ("x in 5", 5, "takes a list"),
    ('a like "a%b%"', 9, "prefix only"),
    ("x == 99999999999999999999", 5, "int64"),
    ("x == 1e400", 5, "finite"),
    ('x == "\\q"', 6, "unknown escape"),
    ("x", 1, "expected a comparison"),
    ("", 0, "empty"),
    ("x == 1 y == 2", 7, "expected 'and', 'or' or the end"),
    ("x == [1]", 5, "list is not a value"),
    ("exists", 6, "expected a field name"),
    ("``== 1", 0, "cannot be empty"),
    ("a == 1 and", 10, "expected a field name"),
    ("key contains \"a\"", 0, "list fields"),
    ('id like "1%"', 0, "id is an integer"),
    ("line1 == 1 and\n  == 2", 17, "line 2, column 3"),
])
def test_errors_name_their_position(expr, position, words):
    with pytest.raises(FilterError) as err:
        parse(expr)
    assert err.value.position == position, str(err.value)
    assert words in str(err.value)
    assert str(err.value).startswith("filter: ")
    assert isinstance(err.value, ValueError)


def test_deep_and_long_expressions_are_refused_with_a_position():
    with pytest.raises(FilterError, match="nests deeper"):
        parse("not " * 100 + "a == 1")
    with pytest.raises(FilterError, match="characters"):
        parse("a == 1 or " * 10_000 + "a == 1")
    wide = " or ".join(f"a == {i}" for i in range(500))  # wide is fine: no nesting
    assert len(parse(wide).root.parts) == 500
    with pytest.raises(TypeError):
        parse(None)


ITEM = dict(item_id=7, key="photos/2024/a.jpg",
            metadata={"album": "2024", "year": 2021, "price": 49.5, "in_stock": True,
                      "tags": ["beach", "sea"], "one": 1, "f": 5.0, "s": "tag", "n": None})


@pytest.mark.parametrize("expr,expected", [
    ('album == "2024"', True), ("album == 2024", False),  # a string is not a number
    ("year == 2021.0", True), ("f == 5", True), ("f in [5]", True),  # int and float compare
    ("in_stock == true", True), ("one == true", False), ("in_stock == 1", False),  # bool != 1
    ("missing == 1", False), ("missing != 1", False), ("not missing == 1", True),
    ('not album != "2024"', True), ('album != "x"', True), ("album != 5", False),  # type mismatch
    ('missing not in ["a"]', False), ('album not in ["x"]', True), ("year not in [1]", True),
    ('tags contains "beach"', True), ('tags contains "dog"', False),
    ('s contains "tag"', False),  # a string contains nothing
    ('tags == "beach"', False), ("exists tags", True), ("exists n", True),  # null: present
    ("n == 1", False), ("exists missing", False), ("exists key", True), ("exists id", True),
    ('key like "photos/2024/%"', True), ('key like "photos/2024/"', False),
    ('key like "photos/2024/a.jpg"', True), ('album like "20%"', True), ("price < 49.5", False),
    ("price <= 49.5", True), ("year > 2020 and year < 2022", True), ("id == 7", True),
    ("id in [1, 7]", True), ('key in ["photos/2024/a.jpg"]', True), ('key != "x"', True),
    ("year >= 2021.5 or price > 49.4", True), ('album in ["2023", "2024"]', True),
])
def test_semantics_on_one_item(expr, expected):
    assert parse(expr).matches(**ITEM) is expected


def test_key_missing_and_like_escapes():
    assert not parse('key == "a"').matches(1, None, {})
    assert not parse("exists key").matches(1, "", {})  # an empty key is no key
    assert not parse('key != "a"').matches(1, None, {})
    assert parse('x like "50\\%%"').matches(1, None, {"x": "50% off"})
    assert not parse('x like "50\\%%"').matches(1, None, {"x": "500"})
    assert parse('x like "a_b%"').matches(1, None, {"x": "a_bc"})  # _ is not a wildcard
    assert not parse('x like "a_b%"').matches(1, None, {"x": "axbc"})
    assert parse('x == "é\\u00e9\\U0001F600"').matches(1, None, {"x": "éé😀"})
    assert parse("`a b` == 'x\\'y'").matches(1, None, {"a b": "x'y"})
    assert not parse("`id` == 5").matches(1, None, {"id": 5})  # the reserved id, not metadata
    assert parse("big > 9007199254740992").matches(1, None, {"big": 2**53 + 1})
    assert not parse("big > 9007199254740992.0").matches(1, None, {"big": 2**53})
    assert parse("x == 1").matches(1, None, {"x": 1.0}) and not parse("x < 1").matches(
        1, None, {"x": math.nan})


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(expr=expression(), items=st.lists(st.tuples(st.integers(0, 40), keys, metadata),
                                         max_size=12))
def test_generated_expressions_round_trip_into_the_evaluator(expr, items):
    flt = parse(expr)
    again = parse(str(flt))
    assert again == flt
    for item_id, key, meta in items:
        assert flt.matches(item_id, key, meta) == again.matches(item_id, key, meta)


ALPHABET = string.ascii_letters[:8] + string.digits[:4] + " ()[],.\"'`\\=!<>&|%-_eE\n" + "é"
WORDS = ["and ", "or ", "not ", " in ", "contains ", "exists ", " like ", "true", "false", "==",
         "!=", "<=", "[", "]", "(", ")", '"a"', "1.5", "-3", "x", "id", "key", "`f g`", ","]


@settings(max_examples=EXAMPLES * 2, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(ALPHABET, max_size=40) | st.lists(st.sampled_from(WORDS), max_size=12).map(
    " ".join))
def test_garbage_never_crashes_and_errors_carry_positions(text):
    try:
        flt = parse(text)
    except FilterError as exc:
        assert 0 <= exc.position <= len(text), (text, exc.position)
        assert str(exc).startswith("filter: ") and f"position {exc.position}" in str(exc)
        return
    assert parse(str(flt)) == flt  # whatever parses, round-trips


def test_check_metadata():
    good = {"album": "2024", "year": 2024, "price": 49.5, "in_stock": False, "tags": ["a", "b"],
            "empty": [], "text": "x" * 10_000}
    assert check_metadata(good) == good and check_metadata(None) == {}
    assert check_metadata({"n": "None", "x": "2024"}) == {"n": "None", "x": "2024"}  # old stores
    import numpy as np

    assert type(check_metadata({"f": np.float64(1.5)})["f"]) is float
    for bad, words in [({"x": None}, "'x': None"), ({"": 1}, "non-empty"), ({1: "a"}, "non-empty"),
                       ({"k" * 257: 1}, "over 256"), ({"x": 2**63}, "int64"),
                       ({"x": math.inf}, "finite"), ({"x": math.nan}, "finite"),
                       ({"x": ["a", 1]}, "element 1 is int"), ({"x": ["a"] * 1025}, "at most 1024"),
                       ({"x": {"a": 1}}, "dict is not a metadata type"),
                       ({"x": ("a",)}, "tuple is not"), ({"x": b"a"}, "bytes is not"),
                       ({"x": np.int64(3)}, "int64 is not")]:
        with pytest.raises(ValueError, match=words):
            check_metadata(bad)
    with pytest.raises(ValueError, match="dict of fields"):
        check_metadata(["a"])


@pytest.mark.parametrize("expr, position", [('album == "\\uD800"', 10), ('t contains "\\udfff"', 12),
                                            ('a == "\ud800"', 6), ("a == 1 or \udc00", 10)])
def test_surrogates_are_refused_with_their_position(expr, position):
    """A surrogate (escaped, or raw from a Python caller) is no character: no stored text
    holds one, and Milvus could not be sent one; refused where it stands."""
    with pytest.raises(FilterError) as info:
        parse(expr)
    assert info.value.position == position, str(info.value)
