"""A parsed filter written as a Milvus boolean expression over ``id``, ``key`` and the JSON field
``metadata``, with crossbit's semantics (docs/milvus.md): every literal and field name is written
by this module from the parsed value, never pasted from the user's text.

Milvus's own ``!=`` and ``not in`` are the complements of ``==`` and ``in`` (true for an item
without the field, or with a value of another type), where crossbit's are false there: they
are written as ``(f < v or f > v)`` and as a type guard with ``not in``. ``like`` becomes a
range of strings (every string starting with p lies in [p, successor(p))), so no pattern
escaping is involved. milvus-lite (2.5.1) has neither ``not`` nor ``exists``: a negation is
pushed down to the leaves where a complement exists (``==``, ``in``, id and key predicates)
and refused elsewhere; ``exists`` becomes a guard of value types (strings, numbers, bools,
and lists whose first element is one).
"""

from __future__ import annotations

from crossbit.indexer.attribute_columns import successor
from crossbit.indexer.filter_nodes import And, Compare, Contains, Exists, In, Like, Node, Not, Or
from crossbit.indexer.filters import Filter

TRUE, FALSE = "(id >= 0 or id < 0)", "(id < 0 and id > 0)"
MAX_TERMS = 256
FLIP = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}


class Unsupported(ValueError):
    """A filter this Milvus cannot evaluate with crossbit's semantics (milvus-lite's limits)."""


def to_milvus(flt: Filter, lite: bool = False) -> str:
    """The Milvus expression of a filter.

    Args:
        flt: a parsed filter.
        lite: write for milvus-lite (no ``not``, no ``exists``).

    Returns:
        the expression, for ``filter=`` of a Milvus search, query or delete.

    Raises:
        Unsupported: (milvus-lite) a negation without a complement, or a string with a line
            break.
    """
    terms = _terms(flt.root)
    if terms > MAX_TERMS:
        raise Unsupported(f"the filter has {terms} comparisons; the milvus kind takes at most "
                          f"{MAX_TERMS} (Milvus took 0.8 s for 300 and 4.8 s for 1,000 here): "
                          "write a list of values as `field in [...]`, one comparison")
    return _Writer(lite).pos(flt.root)


def _terms(node) -> int:
    """The comparisons of a filter (an ``in`` list is one)."""
    count, stack = 0, [node]
    while stack:
        n = stack.pop()
        kids = n.children()
        if kids:
            stack.extend(kids)
        elif hasattr(n, "part"):
            stack.append(n.part)
        else:
            count += 1
    return count


def text(value: str, lite: bool) -> str:
    """A Milvus string literal: backslash and double quote escaped, the rest as it is (Milvus
    reads raw characters; a line break is the one that must be escaped, and milvus-lite reads
    no escape for it)."""
    if "\n" in value or "\r" in value:
        if lite:
            raise Unsupported("milvus-lite cannot compare strings with a line break; a Milvus "
                              "server can")
        value = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + value.replace("\n", "\\n").replace("\r", "\\r") + '"'
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(value, lite: bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return text(value, lite)
    if value == -(2**63) and isinstance(value, int):  # Milvus reads "-" then 2**63: too big
        raise Unsupported("Milvus cannot read the int64 minimum -9223372036854775808 as a "
                          "literal (it reads the minus sign apart from 2**63); on the milvus "
                          "kind write -9223372036854775807 and adjust the comparison")
    return repr(value)  # an int, or a finite float (Milvus reads 1e+20, -0.0)


class _Writer:
    def __init__(self, lite: bool):
        self.lite = lite

    def field(self, name: str) -> str:
        return name if name in ("id", "key") else f"metadata[{text(name, self.lite)}]"

    def lit(self, value) -> str:
        return literal(value, self.lite)

    def guard(self, f: str, kind: str) -> str:
        """True exactly for values of ``kind`` (Milvus compares across types as false)."""
        if kind == "str":
            return f'{f} >= ""'
        if kind == "bool":
            return f"({f} == true or {f} == false)"
        return f"({f} >= 0 or {f} < 0)"

    def values(self, f: str, values: tuple, negated: bool) -> str:
        """``f in values`` (or Milvus's complement ``not in``); a list of ints and floats is
        split, as Milvus wants one type per list."""
        word, join = ("not in", " and ") if negated else ("in", " or ")
        groups = [[v for v in values if isinstance(v, t)] for t in (bool, str, int, float)]
        groups[2] = [v for v in groups[2] if not isinstance(v, bool)]
        parts = [f"{f} {word} [{', '.join(self.lit(v) for v in g)}]" for g in groups if g]
        return parts[0] if len(parts) == 1 else "(" + join.join(parts) + ")"

    # -- the positive form, and the complement where Milvus has one without not --------------
    def pos(self, node: Node) -> str:
        if isinstance(node, (And, Or)):
            word = " and " if isinstance(node, And) else " or "
            return "(" + word.join(self.pos(p) for p in node.parts) + ")"
        if isinstance(node, Not):
            return self.neg(node.part)
        return self.leaf(node, negate=False)

    def neg(self, node: Node) -> str:
        if isinstance(node, (And, Or)):  # De Morgan
            word = " or " if isinstance(node, And) else " and "
            return "(" + word.join(self.neg(p) for p in node.parts) + ")"
        if isinstance(node, Not):
            return self.pos(node.part)
        done = self.leaf(node, negate=True)
        if done is not None:
            return done
        if self.lite:
            raise Unsupported(f"milvus-lite cannot evaluate not ({node.text()}) (it has no not); "
                              "a Milvus server can")
        return f"not ({self.leaf(node, negate=False)})"

    def leaf(self, node: Node, negate: bool) -> str | None:
        name = node.field.name
        f = self.field(name)
        if isinstance(node, Exists):
            if name == "id":
                return FALSE if negate else TRUE
            if name == "key":
                return 'key == ""' if negate else 'key != ""'
            if negate:
                return None
            if not self.lite:  # in parentheses: Milvus 2.3 reads "exists a and b" as exists (a and b)
                return f"(exists {f})"
            return (f"({self.guard(f, 'str')} or {self.guard(f, 'num')[1:-1]} or "
                    f"{self.guard(f, 'bool')[1:-1]} or {self.guard(f + '[0]', 'str')} or "
                    f"{self.guard(f + '[0]', 'num')[1:-1]} or {self.guard(f + '[0]', 'bool')[1:-1]})")
        if isinstance(node, Contains):
            return None if negate else f"json_contains({f}, {self.lit(node.value)})"
        if isinstance(node, Like):
            if not node.wildcard:
                return self.leaf(Compare(node.field, "==", node.prefix), negate)
            return self.prefix(f, name, node.prefix, negate)
        if name == "key":
            return self.key(node, negate)
        if name == "id":
            if isinstance(node, In):
                return self.values("id", node.values, node.negated != negate)
            return f"id {FLIP[node.op] if negate else node.op} {node.value}"
        if isinstance(node, In):
            if not node.negated:
                return self.values(f, node.values, negated=negate)
            if negate:
                return None
            kind = "bool" if isinstance(node.values[0], bool) else \
                "str" if isinstance(node.values[0], str) else "num"
            return f"({self.guard(f, kind)} and {self.values(f, node.values, negated=True)})"
        op, value = node.op, self.lit(node.value)
        if op == "==":
            return f"{f} {'!=' if negate else '=='} {value}"
        if negate:
            return None
        if op == "!=":
            if isinstance(node.value, bool):
                return f"{f} == {self.lit(not node.value)}"
            return f"({f} < {value} or {f} > {value})"
        return f"{f} {op} {value}"

    def prefix(self, f: str, name: str, prefix: str, negate: bool) -> str | None:
        """``like "prefix%"`` as the range of strings it is."""
        if not prefix:
            if name == "key":
                return 'key == ""' if negate else 'key != ""'
            return None if negate else self.guard(f, "str")
        upper = successor(prefix)
        if negate:
            if name != "key":
                return None
            low = f"key < {self.lit(prefix)}"
            return low if upper is None else f"({low} or key >= {self.lit(upper)})"
        low = f"{f} >= {self.lit(prefix)}"
        return low if upper is None else f"({low} and {f} < {self.lit(upper)})"

    def key(self, node: Node, negate: bool) -> str:
        """Predicates on the key column, where no key is stored as "" (crossbit: missing)."""
        if isinstance(node, In):
            values = tuple(v for v in node.values if v)  # "" is no key: in no list
            inside = self.values("key", values, negated=False) if values else FALSE
            outside = self.values("key", values, negated=True) if values else TRUE
            if not node.negated:  # Milvus's not in is the complement of in
                return outside if negate else inside
            return f'(key == "" or {inside})' if negate else f'(key != "" and {outside})'
        value = node.value
        equal = f"key == {self.lit(value)}" if value else FALSE
        if node.op == "==":
            return (f"key != {self.lit(value)}" if value else TRUE) if negate else equal
        present_other = f'(key != "" and key != {self.lit(value)})' if value else 'key != ""'
        if negate:  # not (key != v): no key, or v
            return f'(key == "" or {equal})'
        return present_other
