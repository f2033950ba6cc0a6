"""Building filter nodes from lark's parse tree: literals decoded, types checked, errors with positions."""

from __future__ import annotations

import math
import threading

from lark import Lark, Token, Transformer, UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from crossbit.indexer.filter_grammar import GRAMMAR
from crossbit.indexer.filter_nodes import (
    And,
    Compare,
    Contains,
    Exists,
    Field,
    FilterError,
    In,
    Like,
    Node,
    Not,
    Or,
    kind_of,
)

MAX_DEPTH = 64  # nesting of and / or / not
MAX_LIST = 10_000  # values in one in [...] list
INT64 = (-(2**63), 2**63 - 1)

_parser_lock = threading.Lock()
_parser: Lark | None = None


def lark_parser() -> Lark:
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = Lark(GRAMMAR, parser="lalr", lexer="basic", propagate_positions=True,
                           maybe_placeholders=False)
        return _parser


# -- errors ------------------------------------------------------------------------------------

WORDS = {"OP": "a comparison (==, !=, <, <=, >, >=)", "IN": "'in'", "NOT": "'not'",
         "LIKE": "'like'", "CONTAINS": "'contains'", "AND": "'and'", "OR": "'or'", "RPAR": "')'",
         "LPAR": "'('", "RSQB": "']'", "COMMA": "','", "EXISTS": "'exists'", "$END": "the end"}
VALUE_TOKENS = {"STRING", "NUMBER", "TRUE", "FALSE", "LSQB"}
FIELD_TOKENS = {"NAME", "QNAME"}


def _expected(names) -> str:
    names = set(names)
    words = []
    if names & VALUE_TOKENS:
        words.append("a value")
        names -= VALUE_TOKENS
    if names & FIELD_TOKENS:
        words.append("a field name")
        names -= FIELD_TOKENS
    words += sorted({WORDS.get(n, n) for n in names}, key=lambda w: (w == "the end", w[0] == "'", w))
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def syntax_error(exc: UnexpectedInput, expr: str) -> FilterError:
    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream
        ch = expr[pos]
        if ch in "\"'":
            return FilterError(f"unterminated string (it opens with {ch})", pos, expr)
        if ch == "`":
            return FilterError("unterminated backquoted field name", pos, expr)
        before = _token_before(expr, pos)
        what = f"unexpected character {ch!r}"
        if before is not None:
            what += f" after {before.value!r}"
        return FilterError(what, pos, expr)
    if isinstance(exc, UnexpectedToken):
        token = exc.token
        at_end = token.type == "$END"
        pos = len(expr) if at_end else token.start_pos
        before = _token_before(expr, pos)
        expected = _expected(getattr(exc, "accepts", None) or exc.expected)
        got = "the end of the expression" if at_end else repr(token.value)
        if not at_end and token.type in {"AND", "OR", "NOT", "IN", "CONTAINS", "EXISTS", "LIKE",
                                         "TRUE", "FALSE"} and "a field name" in expected:
            return FilterError(f"{token.value!r} is a keyword: write it in backquotes "
                               f"(`{token.value}`) to name a field", pos, expr)
        after = f" after {before.value!r}" if before is not None else ""
        return FilterError(f"expected {expected}{after}, got {got}", pos, expr)
    return FilterError(str(exc).splitlines()[0], getattr(exc, "pos_in_stream", 0) or 0, expr)


def _token_before(expr: str, pos: int):
    last = None
    try:
        for token in lark_parser().lex(expr[:pos]):
            last = token
    except UnexpectedInput:
        return None
    return last


def check_depth(tree, expr: str) -> None:
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            pos = getattr(node.meta, "start_pos", 0) if hasattr(node, "meta") else 0
            raise FilterError(f"the expression nests deeper than {MAX_DEPTH} levels", pos, expr)
        stack.extend((c, depth + 1) for c in getattr(node, "children", ()) if hasattr(c, "data"))


# -- building nodes, with the type checks ------------------------------------------------------------

ESCAPES = {"\\": "\\", '"': '"', "'": "'", "`": "`", "n": "\n", "t": "\t", "r": "\r", "0": "\0",
           "%": "%", "_": "_"}


def decode(token: Token, expr: str) -> list[tuple[str, bool]]:
    """A quoted token's characters as (character, escaped) pairs."""
    raw, base = token.value[1:-1], token.start_pos + 1
    out, i = [], 0
    while i < len(raw):
        ch = raw[i]
        if ch != "\\":
            out.append((ch, False))
            i += 1
            continue
        nxt = raw[i + 1]  # the grammar never ends a literal on a lone backslash
        if nxt in ESCAPES:
            out.append((ESCAPES[nxt], True))
            i += 2
            continue
        width = {"u": 4, "U": 8}.get(nxt)
        digits = raw[i + 2:i + 2 + width] if width else ""
        if not width or len(digits) != width or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise FilterError(f"unknown escape '\\{nxt}' in a quoted literal (known: \\\\ \\\" \\' "
                              "\\n \\t \\r \\0 \\% \\_ \\uXXXX \\UXXXXXXXX)", base + i, expr)
        code = int(digits, 16)
        if code > 0x10FFFF:
            raise FilterError(f"\\U{digits} is past the last Unicode code point", base + i, expr)
        if 0xD800 <= code <= 0xDFFF:  # no stored text holds one: UTF-8 cannot carry it
            raise FilterError(f"\\{nxt}{digits} is a surrogate, not a character (write the "
                              "character itself, or \\U and its code point)", base + i, expr)
        out.append((chr(code), True))
        i += 2 + width
    return out


class Build(Transformer):
    """Lark tree -> filter nodes, checking types with the tokens' positions at hand."""

    def __init__(self, expr: str):
        super().__init__()
        self.expr = expr

    def error(self, message: str, at) -> FilterError:
        pos = at.start_pos if isinstance(at, Token) else getattr(at, "pos", 0)
        return FilterError(message, pos if pos is not None else 0, self.expr)

    # -- leaves --
    def field(self, children):
        token = children[0]
        if token.type == "QNAME":
            name = "".join(c for c, _ in decode(token, self.expr))
            if not name:
                raise self.error("a field name cannot be empty", token)
        else:
            name = token.value
        return _Located(Field(name), token)

    def list(self, children):
        return _Located(tuple(children[1:]), children[0])

    # -- predicates --
    def compare(self, children):
        field, op, token = children
        value = self.literal(token)
        kind = kind_of(value)
        name = field.value.name
        if name == "id" and kind != "num":
            raise self.error(f"id is an integer: compare it with an integer, not {_a(kind)}", token)
        if name == "id" and not isinstance(value, int):
            raise self.error("id is an integer: compare it with an integer, not a float", token)
        if name == "key" and kind != "str":
            raise self.error(f"key is a string: compare it with a string, not {_a(kind)}", token)
        if op.value not in ("==", "!=") and kind != "num":
            raise self.error(f"{op.value} orders numbers only, not {_a(kind)} (strings: use == "
                             "or like; bools: ==)", token)
        return Compare(field.value, op.value, value)

    def in_list(self, children, negated=False):
        field, token = children[0], children[-1]
        if not isinstance(token, _Located) or not isinstance(token.value, tuple):
            raise self.error(f"{'not in' if negated else 'in'} takes a list: [value, ...]", token)
        values = tuple(self.literal(t) for t in token.value)
        if not values:
            raise self.error("the list is empty: give at least one value", token.token)
        if len(values) > MAX_LIST:
            raise self.error(f"the list has over {MAX_LIST} values", token.token)
        kinds = {kind_of(v) for v in values}
        if len(kinds) > 1:
            at = next(t for t, v in zip(token.value, values) if kind_of(v) != kind_of(values[0]))
            raise self.error(f"the list mixes types ({' and '.join(sorted(kinds))}): one type per "
                             "list", at)
        kind, name = kinds.pop(), field.value.name
        if name == "id" and not all(isinstance(v, int) and kind == "num" for v in values):
            raise self.error("id is an integer: its list holds integers", token.token)
        if name == "key" and kind != "str":
            raise self.error("key is a string: its list holds strings", token.token)
        return In(field.value, values, negated)

    def not_in_list(self, children):
        return self.in_list(children, negated=True)

    def contains(self, children):
        field, token = children[0], children[-1]
        if isinstance(token, _Located):
            raise self.error("contains takes one string, not a list (write a or b for several)",
                             token.token)
        value = self.literal(token)
        if field.value.kind != "meta":
            raise self.error(f"contains looks into list fields; {field.value.name} is not one",
                             field.token)
        if kind_of(value) != "str":
            raise self.error(f"contains takes a string (lists hold strings), not {_a(kind_of(value))}",
                             token)
        return Contains(field.value, value)

    def exists(self, children):
        return Exists(children[-1].value)

    def like(self, children):
        field, token = children[0], children[-1]
        if isinstance(token, _Located) or token.type != "STRING":
            raise self.error("like takes a string pattern, e.g. \"photos/%\"",
                             token.token if isinstance(token, _Located) else token)
        if field.value.name == "id":
            raise self.error("like matches strings; id is an integer", field.token)
        chars = decode(token, self.expr)
        wildcard = bool(chars) and chars[-1] == ("%", False)
        if wildcard:
            chars = chars[:-1]
        for n, (ch, escaped) in enumerate(chars):
            if ch == "%" and not escaped:
                raise FilterError("like matches a prefix only ('prefix%'): this % is not the "
                                  "pattern's last character (write \\% for a literal %)",
                                  token.start_pos + 1 + _raw_offset(token, n), self.expr)
        return Like(field.value, "".join(c for c, _ in chars), wildcard)

    def not_expr(self, children):
        return Not(self.node(children[-1]))

    def and_expr(self, children):
        return And(tuple(self.node(c) for c in children if not _is_op(c)))

    def or_expr(self, children):
        return Or(tuple(self.node(c) for c in children if not _is_op(c)))

    # -- helpers --
    def node(self, child) -> Node:
        if isinstance(child, Node):
            return child
        at = child.token if isinstance(child, _Located) else child
        raise self.error("expected a comparison here, not a single value", at)

    def literal(self, token):
        if isinstance(token, _Located):
            raise self.error("a list is not a value here", token.token)
        if token.type == "STRING":
            return "".join(c for c, _ in decode(token, self.expr))
        if token.type == "TRUE":
            return True
        if token.type == "FALSE":
            return False
        text = token.value
        if any(c in text for c in ".eE"):
            value = float(text)
            if not math.isfinite(value):
                raise self.error(f"{text} is not a finite float", token)
            return value
        value = int(text)
        if not INT64[0] <= value <= INT64[1]:
            raise self.error(f"{text} is outside the int64 range", token)
        return value


class _Located:
    """A value built from tokens, remembering the first token (for error positions)."""

    def __init__(self, value, token):
        self.value, self.token = value, token


def _is_op(child) -> bool:
    return isinstance(child, Token) and child.type in ("AND", "OR")


def _a(kind: str | None) -> str:
    return {"str": "a string", "num": "a number", "bool": "a bool"}.get(kind, "that")


def _raw_offset(token: Token, n: int) -> int:
    """The offset in a quoted token's body of its n-th decoded character."""
    raw, i = token.value[1:-1], 0
    for _ in range(n):
        if raw[i] == "\\":
            i += {"u": 6, "U": 10}.get(raw[i + 1], 2)
        else:
            i += 1
    return i


