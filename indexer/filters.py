"""Filter expressions: ``parse`` one into a :class:`Filter`, and the typed-metadata rule ``check_metadata``.

The language is the subset of Milvus's boolean expressions that users already know::

    album == "2024"            year >= 2020 and price < 49.5       in_stock == true
    album in ["2023", "2024"]  album not in ["x"]                  tags contains "beach"
    exists camera              key like "photos/2024/%"            id > 100 or not (a == 1)

Syntax (the lark grammar is ``filter_grammar.py``):

- comparisons ``== != < <= > >=``; ``in [...]`` and ``not in [...]`` (a non-empty list of one
  type); ``contains "x"``; ``exists field``; ``like "pattern"``; ``and``/``&&``, ``or``/``||``,
  ``not``/``!`` (tightest first: not, and, or) and parentheses. Keywords are case-insensitive.
- literals: strings in double or single quotes with backslash escapes (``\\" \\' \\\\ \\n \\t \\r
  \\uXXXX \\UXXXXXXXX``; ``\\%`` and ``\\_`` are a literal ``%`` and ``_``); integers (int64) and
  floats (``-1.5``, ``2e3``; finite); ``true``/``false``.
- fields: names ``[A-Za-z_][A-Za-z0-9_]*``, or anything in backquotes (`` `my field` ``, with
  ``\\``` for a backquote); a field named like a keyword needs the backquotes.
- ``id`` (the item's int64 id) and ``key`` (its key) are reserved, backquoted or not: a metadata
  field named ``id`` or ``key`` cannot be reached by a filter.
- ``like`` matches a prefix: the pattern's only unescaped ``%`` may be its last character
  (``"photos/2024/%"``); without one the pattern must equal the string. ``_`` is an ordinary
  character (Milvus reads it as a wildcard; crossbit escapes it there).

Semantics:

- A predicate on a field the item does not have is false, never an error (``!=`` and
  ``not in`` included). ``not`` negates the result, so ``not album == "x"`` is true for an
  item without ``album`` while ``album != "x"`` is false for it (as in Milvus).
- Values compare only with literals of their own type: a string literal matches string
  values, a number literal numbers (int and float compare numerically: ``5 == 5.0``), a bool
  literal bools (``true`` is not ``1``). A value of another type makes the predicate false.
- Ordering (``< <= > >=``) takes a number literal: strings and bools have no order here.
- ``contains "x"`` is true when the field is a list holding the string ``"x"``; a string
  field contains nothing (use ``==`` or ``like``).
- ``key`` is missing for an item without a key (an empty key counts as none).

Static errors (a bad type for the field or the operator, a malformed literal, a syntax error)
raise :class:`FilterError` with the 0-based position they were found at.
"""

from __future__ import annotations

from lark import UnexpectedInput
from lark.exceptions import VisitError

from crossbit.indexer.filter_build import Build, check_depth, lark_parser, syntax_error
from crossbit.indexer.filter_nodes import FilterError, Node, fields_of
from crossbit.indexer.metadata_rule import check_metadata

MAX_FILTER_CHARS = 65_536  # the longest expression parsed


class Filter:
    """A parsed, type-checked filter. ``str(f)`` is its canonical text (it parses back to an
    equal filter); filters with equal text are equal."""

    def __init__(self, root: Node, expression: str = ""):
        self.root = root
        self.expression = expression or root.text()
        self.text = root.text()

    def matches(self, item_id: int, key: str | None, metadata: dict) -> bool:
        """The reference evaluation on one item (what every index kind must agree with).

        Args:
            item_id: the item's id.
            key: its key (None or "" when it has none).
            metadata: its metadata as stored.

        Returns:
            True when the item matches.
        """
        return self.root.test(int(item_id), key, metadata or {})

    @property
    def fields(self) -> set[str]:
        return fields_of(self.root)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Filter) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def parse(expr: str) -> Filter:
    """Parse and type-check a filter expression.

    Args:
        expr: the expression (an empty one is an error: callers treat "" as no filter).

    Returns:
        the :class:`Filter`.

    Raises:
        FilterError: a syntax or type error, naming its position.
    """
    if not isinstance(expr, str):
        raise TypeError(f"a filter is a string, got {type(expr).__name__}")
    if len(expr) > MAX_FILTER_CHARS:
        raise FilterError(f"the expression is over {MAX_FILTER_CHARS} characters", MAX_FILTER_CHARS,
                          expr)
    if not expr.strip():
        raise FilterError("the expression is empty", 0, expr)
    bad = next((i for i, c in enumerate(expr) if "\ud800" <= c <= "\udfff"), None)
    if bad is not None:  # not text (UTF-8 cannot carry it): only a Python caller can send one
        raise FilterError("a lone surrogate is not a character", bad, expr)
    try:
        tree = lark_parser().parse(expr)
    except UnexpectedInput as exc:
        raise syntax_error(exc, expr) from None
    check_depth(tree, expr)
    try:
        root = Build(expr).transform(tree)
    except VisitError as exc:  # lark wraps what a rule raised
        if isinstance(exc.orig_exc, FilterError):
            raise exc.orig_exc from None
        raise
    if not isinstance(root, Node):  # the grammar has no such sentence; never trust it blind
        raise FilterError("expected a comparison", 0, expr)
    return Filter(root, expr)



__all__ = ["Filter", "FilterError", "check_metadata", "parse"]
