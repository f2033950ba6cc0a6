"""The typed-metadata rule: what one item's metadata may hold, checked before it is written."""

from __future__ import annotations

import math

MAX_FIELD_CHARS = 256  # the longest metadata field name
MAX_TAGS = 1_024  # strings in one list value
INT64 = (-(2**63), 2**63 - 1)


def check_metadata(metadata: dict | None) -> dict:
    """The typed-metadata rule for one item: what it may store, checked before it is written.

    Keys are non-empty strings of at most 256 characters; values are strings, ints (int64,
    not bool), finite floats, bools, or lists of at most 1,024 strings (tags). Old stores'
    metadata (all strings) passes.

    Args:
        metadata: the item's metadata (None: none).

    Returns:
        a new dict with the same fields, float subclasses as plain floats.

    Raises:
        ValueError: naming the first field that breaks the rule, and why.
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict of fields, got {type(metadata).__name__}")
    out = {}
    for name, value in metadata.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"metadata field names are non-empty strings, got {name!r}")
        if len(name) > MAX_FIELD_CHARS:
            raise ValueError(f"metadata field {name[:40]!r}...: the name is over {MAX_FIELD_CHARS} "
                             "characters")
        out[name] = _checked_value(name, value)
    return out


def _checked_value(name: str, value):
    if value is None:
        raise ValueError(f"metadata field {name!r}: None is not a value (leave the field out)")
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise ValueError(f"metadata field {name!r}: {value} is outside the int64 range")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"metadata field {name!r}: {value} is not a finite number")
        return float(value)
    if isinstance(value, list):
        if len(value) > MAX_TAGS:
            raise ValueError(f"metadata field {name!r}: a list holds at most {MAX_TAGS} strings, "
                             f"this one {len(value)}")
        for n, element in enumerate(value):
            if not isinstance(element, str):
                raise ValueError(f"metadata field {name!r}: a list holds strings only; element {n} "
                                 f"is {type(element).__name__}")
        return list(value)
    raise ValueError(f"metadata field {name!r}: {type(value).__name__} is not a metadata type "
                     "(string, int, float, bool or a list of strings)")
