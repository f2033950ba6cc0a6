"""Evaluating a filter on the attribute index: a bitmap of the matching slots. Within an ``and`` the
parts run from the most selective (estimated from the bitmaps' sizes) and each later part only
looks inside what the earlier ones left; bounds on one number field are merged into one range."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crossbit.indexer.attribute_columns import EMPTY, bitmap, union
from crossbit.indexer.filter_nodes import (
    And,
    Compare,
    Contains,
    Exists,
    Field,
    In,
    Like,
    Node,
    Not,
    Or,
    kind_of,
)

INT64_MAX = 2**63 - 1
ORDER = ("<", "<=", ">", ">=")


@dataclass(frozen=True)
class Span:
    """Merged bounds of ``and``-ed comparisons on one number field (or on id), per column type."""

    field: Field
    bounds: dict  # column type ("num", "big", "id") -> (lo, lo_incl, hi, hi_incl) or None
    nodes: tuple  # the comparisons (tested in Python on values no column holds)


def evaluate(attrs, node: Node, within=None):
    """The slots of the items that match ``node`` (only those ``within`` a bitmap, when given)."""
    if isinstance(node, And):
        return _and(attrs, node.parts, within)
    if isinstance(node, Or):
        return union([evaluate(attrs, p, within) for p in node.parts])
    if isinstance(node, Not):
        return (attrs.live if within is None else within) - evaluate(attrs, node.part, within)
    found = _span(attrs, node, within) if isinstance(node, Span) else _leaf(attrs, node, within)
    return found if within is None else found & within


def _and(attrs, parts: tuple, within):
    parts = _merged(parts)
    for part in sorted(parts, key=lambda p: _size(attrs, p)):
        within = evaluate(attrs, part, within)
        if not within:
            return EMPTY
    return within


def _merged(parts: tuple) -> list:
    """Ordering comparisons of one number field (or of id) become one Span."""
    groups: dict[str, list] = {}
    rest = []
    for part in parts:
        if isinstance(part, Compare) and part.op in ORDER and part.field.kind != "key":
            groups.setdefault(part.field.name, []).append(part)
        else:
            rest.append(part)
    for nodes in groups.values():
        if len(nodes) == 1:
            rest.append(nodes[0])
            continue
        kinds = ("id",) if nodes[0].field.kind == "id" else ("num", "big")
        spans = {}
        for kind in kinds:
            span = (None, True, None, True)
            for node in nodes:
                span = _intersect(span, bounds(node.op, node.value, kind))
            spans[kind] = span
        rest.append(Span(nodes[0].field, spans, tuple(nodes)))
    return rest


def _intersect(a, b):
    if a is None or b is None:
        return None
    lo, lo_incl = a[0], a[1]
    if b[0] is not None and (lo is None or b[0] > lo):
        lo, lo_incl = b[0], b[1]
    elif b[0] is not None and b[0] == lo:
        lo_incl = lo_incl and b[1]
    hi, hi_incl = a[2], a[3]
    if b[2] is not None and (hi is None or b[2] < hi):
        hi, hi_incl = b[2], b[3]
    elif b[2] is not None and b[2] == hi:
        hi_incl = hi_incl and b[3]
    if lo is not None and hi is not None and (lo > hi or (lo == hi and not (lo_incl and hi_incl))):
        return None
    return lo, lo_incl, hi, hi_incl


def _size(attrs, node) -> int:
    """A cheap estimate of how many items match (to run the most selective part first)."""
    if isinstance(node, (And, Or, Not, Span)) or node.field.kind != "meta":
        return len(attrs.live)
    columns = attrs.fields.get(node.field.name)
    if columns is None:
        return 0
    if isinstance(node, Contains):
        return columns.tag.count(node.value)
    if isinstance(node, (Compare, In)) and not (isinstance(node, In) and node.negated) and \
            getattr(node, "op", "==") == "==":
        values = node.values if isinstance(node, In) else (node.value,)
        kind = kind_of(values[0])
        column = columns.str if kind == "str" else columns.bool if kind == "bool" else columns.num
        try:
            return sum(column.count(int(v) if kind == "bool" else float(v) if kind == "num" else v)
                       for v in values)
        except (OverflowError, TypeError, ValueError):
            return len(columns.present)
    return len(columns.present)


def _span(attrs, span: Span, within):
    if span.field.kind == "id":
        b = span.bounds["id"]
        return EMPTY if b is None else attrs.id_col.range(*b, within=within)
    columns = attrs.fields.get(span.field.name)
    if columns is None:
        return EMPTY
    parts = [columns.num.range(*span.bounds["num"], within=within) if span.bounds["num"] else EMPTY,
             columns.big.range(*span.bounds["big"], within=within) if span.bounds["big"] else EMPTY]
    if columns.odd:
        parts.append(bitmap(np.array([s for s, v in columns.odd.items() if all(
            n.test(0, None, {n.field.name: v}) for n in span.nodes)], np.uint32)))
    return union(parts)


def _leaf(attrs, node: Node, within):
    field = node.field
    if field.kind == "id":
        return _on_column(node, attrs.id_col, "id", within)
    if field.kind == "key":
        return _on_column(node, attrs.key_col, "str", within)
    columns = attrs.fields.get(field.name)
    if columns is None:
        return EMPTY
    if isinstance(node, Exists):
        return columns.present
    if isinstance(node, Contains):
        return columns.tag.equal(node.value)
    if isinstance(node, Like):
        return _like(node, columns.str, within)
    kind = kind_of(node.value if isinstance(node, Compare) else node.values[0])
    if kind == "str":
        return _on_column(node, columns.str, "str", within)
    if kind == "bool":
        return _on_column(node, columns.bool, "bool", within)
    found = union([_on_column(node, columns.num, "num", within),
                   _on_column(node, columns.big, "big", within)])
    if columns.odd:
        found = union([found, bitmap(np.array([s for s, v in columns.odd.items()
                                               if node.test(0, None, {field.name: v})],
                                              np.uint32))])
    return found


def _like(node: Like, column, within):
    return column.prefix(node.prefix, within) if node.wildcard else column.equal(node.prefix)


def _on_column(node: Node, column, kind: str, within):
    """Compare / In / Exists / Like on one typed column."""
    if not len(column):
        return EMPTY
    if isinstance(node, Exists):
        return column.every
    if isinstance(node, Like):
        return _like(node, column, within)
    if isinstance(node, In):
        found = union([_equal(column, v, kind, within) for v in node.values])
        return column.every - found if node.negated else found
    op, value = node.op, node.value
    if op in ("==", "!="):
        found = _equal(column, value, kind, within if op == "==" else None)
        return column.every - found if op == "!=" else found
    span = bounds(op, value, kind)
    return EMPTY if span is None else column.range(*span, within=within)


def _equal(column, value, kind: str, within=None):
    if kind == "str":
        return column.equal(value, within)
    if kind == "bool":
        return column.equal(int(value), within)
    span = bounds("==", value, kind)
    return EMPTY if span is None else column.range(*span, within=within)


def bounds(op: str, value, kind: str):
    """(lo, lo_incl, hi, hi_incl) of ``x op value`` over a column of ``kind`` ("num": float64;
    "big" or "id": int64), exact for every int and float literal; None when nothing can match."""
    if kind == "num":
        lo, hi = _float_near(value)  # the least float >= value, the greatest <= value
    elif isinstance(value, float):
        lo, hi = math.ceil(value), math.floor(value)  # the least int >= value, the greatest <=
    else:
        lo = hi = value
    if op == "==":
        if lo != hi:
            return None  # no value of the column's type equals it
        out = (lo, True, hi, True)
    elif op in ("<", "<="):
        out = (None, True, hi, not (op == "<" and hi == value))
    else:
        out = (lo, not (op == ">" and lo == value), None, True)
    if kind == "num":
        return out
    lo, lo_incl, hi, hi_incl = out
    if (lo is not None and lo > INT64_MAX) or (hi is not None and hi < -INT64_MAX - 1):
        return None
    if lo is not None and lo < -INT64_MAX - 1:
        lo, lo_incl = None, True
    if hi is not None and hi > INT64_MAX:
        hi, hi_incl = None, True
    return lo, lo_incl, hi, hi_incl


def _float_near(value) -> tuple[float, float]:
    """(the least float >= value, the greatest float <= value): equal when value is a float
    or an int exact as one."""
    if isinstance(value, float):
        return value, value
    f = float(value)
    if int(f) == value:
        return f, f
    if int(f) > value:
        return f, math.nextafter(f, -math.inf)
    return math.nextafter(f, math.inf), f
