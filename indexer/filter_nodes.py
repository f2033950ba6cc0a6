"""The parsed filter: one node class per predicate and connective, each evaluating itself on one item."""

from __future__ import annotations

import re
from dataclasses import dataclass

MISSING = object()  # what a field an item does not have evaluates to
RESERVED = ("id", "key")  # fields that are the item's own id and key, never its metadata
KEYWORDS = frozenset({"and", "or", "not", "in", "contains", "exists", "like", "true", "false"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class FilterError(ValueError):
    """A filter that does not parse or does not type-check; ``position`` is the 0-based offset."""

    def __init__(self, message: str, position: int, expression: str = ""):
        line = expression.count("\n", 0, position) + 1
        column = position - (expression.rfind("\n", 0, position) + 1) + 1
        where = f"position {position} (line {line}, column {column})" if line > 1 else \
            f"position {position} (column {column})"
        super().__init__(f"filter: {message} at {where}")
        self.position = position
        self.reason = message


def kind_of(value) -> str | None:
    """The filter type of a value: "str", "num" (int or float, never bool), "bool", "list"
    (a list: what ``contains`` looks into) or None (null, an object: nothing compares to it)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "num"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    return None


def quote(text: str, mark: str = '"') -> str:
    """A literal the grammar reads back as ``text``: backslash escapes for the quote mark, the
    backslash and control characters."""
    out = []
    for ch in text:
        if ch in (mark, "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return mark + "".join(out) + mark


def literal_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value)
    return repr(value)  # int, or a finite float (repr reads back to the same float)


@dataclass(frozen=True)
class Field:
    """A field a predicate reads: ``id`` and ``key`` are the item's own, any other name its metadata's."""

    name: str

    @property
    def kind(self) -> str:
        return self.name if self.name in RESERVED else "meta"

    def value(self, item_id: int, key: str | None, metadata: dict):
        if self.name == "id":
            return item_id
        if self.name == "key":
            return key if key else MISSING  # an empty key is no key (as on the milvus kind)
        return metadata.get(self.name, MISSING)

    def text(self) -> str:
        if _NAME.match(self.name) and self.name.lower() not in KEYWORDS:
            return self.name
        return quote(self.name, "`")


class Node:
    """A filter node: ``test`` evaluates it on one item, ``text`` writes it back in the grammar."""

    def test(self, item_id: int, key: str | None, metadata: dict) -> bool:
        raise NotImplementedError

    def text(self) -> str:
        raise NotImplementedError

    def children(self) -> tuple:
        return ()


@dataclass(frozen=True)
class Compare(Node):
    """``field OP literal``: false unless the field holds a value of the literal's type."""

    field: Field
    op: str  # ==, !=, <, <=, >, >=
    value: object

    def test(self, item_id, key, metadata):
        v = self.field.value(item_id, key, metadata)
        if v is MISSING or kind_of(v) != kind_of(self.value):
            return False
        return compare(v, self.op, self.value)

    def text(self):
        return f"{self.field.text()} {self.op} {literal_text(self.value)}"


def compare(a, op: str, b) -> bool:
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


@dataclass(frozen=True)
class In(Node):
    """``field in [...]`` / ``field not in [...]``: false unless the field holds a value of the
    list's type (``not in`` included: a missing field is in no list and outside none)."""

    field: Field
    values: tuple
    negated: bool = False

    def test(self, item_id, key, metadata):
        v = self.field.value(item_id, key, metadata)
        if v is MISSING or kind_of(v) != kind_of(self.values[0]):
            return False
        return (v in self.values) != self.negated

    def text(self):
        items = ", ".join(literal_text(v) for v in self.values)
        return f"{self.field.text()} {'not in' if self.negated else 'in'} [{items}]"


@dataclass(frozen=True)
class Contains(Node):
    """``field contains "x"``: the field is a list holding the string "x" (a string field
    contains nothing: ``contains`` looks into lists only)."""

    field: Field
    value: str

    def test(self, item_id, key, metadata):
        v = self.field.value(item_id, key, metadata)
        return isinstance(v, list) and any(isinstance(e, str) and e == self.value for e in v)

    def text(self):
        return f"{self.field.text()} contains {quote(self.value)}"


@dataclass(frozen=True)
class Exists(Node):
    """``exists field``: the item has the field, whatever its type."""

    field: Field

    def test(self, item_id, key, metadata):
        return self.field.value(item_id, key, metadata) is not MISSING

    def text(self):
        return f"exists {self.field.text()}"


@dataclass(frozen=True)
class Like(Node):
    """``field like "prefix%"``: a string starting with ``prefix``; without the trailing ``%``,
    a string equal to the pattern."""

    field: Field
    prefix: str
    wildcard: bool = True

    def test(self, item_id, key, metadata):
        v = self.field.value(item_id, key, metadata)
        if not isinstance(v, str):
            return False
        return v.startswith(self.prefix) if self.wildcard else v == self.prefix

    def text(self):
        body = quote(self.prefix)[1:-1].replace("%", "\\%")
        return f'{self.field.text()} like "{body}{"%" if self.wildcard else ""}"'


@dataclass(frozen=True)
class And(Node):
    parts: tuple

    def test(self, item_id, key, metadata):
        return all(p.test(item_id, key, metadata) for p in self.parts)

    def text(self):
        return " and ".join(_grouped(p) for p in self.parts)

    def children(self):
        return self.parts


@dataclass(frozen=True)
class Or(Node):
    parts: tuple

    def test(self, item_id, key, metadata):
        return any(p.test(item_id, key, metadata) for p in self.parts)

    def text(self):
        return " or ".join(_grouped(p) for p in self.parts)

    def children(self):
        return self.parts


@dataclass(frozen=True)
class Not(Node):
    """``not x``: the negation of x's result (true for an item without x's field)."""

    part: Node

    def test(self, item_id, key, metadata):
        return not self.part.test(item_id, key, metadata)

    def text(self):
        return f"not {_grouped(self.part)}"

    def children(self):
        return (self.part,)


def _grouped(node: Node) -> str:
    return f"({node.text()})" if isinstance(node, (And, Or)) else node.text()


def fields_of(node: Node) -> set[str]:
    """The field names a filter reads (reserved ones included)."""
    out: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if hasattr(n, "field"):
            out.add(n.field.name)
        stack.extend(n.children())
    return out
