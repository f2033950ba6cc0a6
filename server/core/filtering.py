"""Filter expressions as the core takes them: parsed once per distinct expression (the grammar and
the evaluation are the indexer's, ``crossbit.indexer.filters``)."""

from __future__ import annotations

from functools import lru_cache


def parse_filter(expr: str | None):
    """The parsed filter, or None for no filter (None, empty or only spaces).

    Raises:
        ValueError: a syntax or type error, naming its position (INVALID_ARGUMENT).
    """
    if expr is None or not expr.strip():
        return None
    if len(expr) > 64 * 1024:
        raise ValueError("filter is over 64 KiB")
    return _parse(expr.strip())


@lru_cache(maxsize=1024)
def _parse(expr: str):
    from crossbit.indexer.filters import parse

    return parse(expr)
