"""Whether an attribute index says what the store holds: its ids, and field by field which items
have the field and which items a value of few-valued fields selects."""

from __future__ import annotations

import numpy as np

from crossbit.indexer.attributes import AttributeIndex, metadata_of

SHOWN = 5  # differing ids named per problem
FEW = 64  # a field's string and bool values are compared one by one up to this many


def _ids(attrs: AttributeIndex, slots) -> set[int]:
    return set(attrs.ids[np.frombuffer(slots.to_array(), np.uint32)].tolist())


def _scalar_kind(value) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "str"
    return None


def attribute_differences(attrs: AttributeIndex, store) -> list[str]:
    """What differs between ``attrs`` and the store's rows ([] when they agree): the live ids,
    each field's items, and each string or bool value's items (fields of up to FEW values).
    Reads every stored row (a JSON parse per item: about 10 s at 1M items here)."""
    present: dict[str, set[int]] = {}
    values: dict[tuple[str, str, object], set[int]] = {}
    stored: set[int] = set()
    for ids, _keys, _codes, metas in store.iter_rows():
        stored.update(ids)
        for item_id, raw in zip(ids, metas):
            for name, value in metadata_of(raw).items():
                present.setdefault(name, set()).add(item_id)
                kind = _scalar_kind(value)
                if kind:
                    values.setdefault((name, kind, value), set()).add(item_id)
    problems = []
    held = _ids(attrs, attrs.live)
    if held != stored:
        problems.append(_say("the attribute index's ids", held, stored))
    for name in sorted(set(present) | set(attrs.fields)):
        want = present.get(name, set())
        got = _ids(attrs, attrs.fields[name].present) if name in attrs.fields else set()
        if got != want:
            problems.append(_say(f"field {name!r} in the attribute index", got, want))
            continue
        mine = {k: v for k, v in values.items() if k[0] == name}
        if len(mine) > FEW or name not in attrs.fields:
            continue
        for (_, kind, value), ids in mine.items():
            column = getattr(attrs.fields[name], kind)
            lookup = value if kind == "str" else int(value)
            found = column.equal(lookup)
            if _ids(attrs, found) != ids:
                problems.append(_say(f"{name} == {value!r} in the attribute index",
                                     _ids(attrs, found), ids))
    return problems


def _say(what: str, got: set[int], want: set[int]) -> str:
    extra, missing = sorted(got - want), sorted(want - got)
    parts = []
    if missing:
        parts.append(f"{len(missing)} stored items missing ({', '.join(map(str, missing[:SHOWN]))})")
    if extra:
        parts.append(f"{len(extra)} not in the store ({', '.join(map(str, extra[:SHOWN]))})")
    return f"{what}: " + "; ".join(parts)
