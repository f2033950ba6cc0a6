"""Whether an attribute index says what the store holds: its ids, and field by field which items
have the field and which items a value of few-valued fields selects."""

from __future__ import annotations

import numpy as np

from crossbit.indexer.attributes import AttributeIndex, metadata_of
from crossbit.indexer.snapshot import id_differences

FEW = 64  # a field's string and bool values are compared one by one up to this many


def _ids(attrs: AttributeIndex, slots) -> np.ndarray:
    return attrs.ids[np.frombuffer(slots.to_array(), np.uint32)]


def _scalar_kind(value) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "str"
    return None


def attribute_differences(attrs: AttributeIndex, store, stored: np.ndarray | None = None,
                          deep: bool = True) -> list[str]:
    """What differs between ``attrs`` and the store ([] when they agree): its live ids against
    ``stored`` (the store's sorted ids, read when not given); with ``deep``, each field's items
    and each string or bool value's items (fields of up to FEW values), from every stored
    row (a JSON parse per item: about 10 s at 1M items here)."""
    stored = store.all_ids() if stored is None else stored
    problems = id_differences(_ids(attrs, attrs.live), stored, "the attribute index")
    if not deep:
        return problems
    present: dict[str, list[int]] = {}
    values: dict[tuple[str, str, object], list[int]] = {}
    for ids, _keys, _codes, metas in store.iter_rows():
        for item_id, raw in zip(ids, metas):
            for name, value in metadata_of(raw).items():
                present.setdefault(name, []).append(item_id)
                kind = _scalar_kind(value)
                if kind:
                    values.setdefault((name, kind, value), []).append(item_id)
    for name in sorted(set(present) | set(attrs.fields)):
        want = np.array(present.get(name, []), np.int64)
        got = _ids(attrs, attrs.fields[name].present) if name in attrs.fields else want[:0]
        found = id_differences(got, want, f"field {name!r} of the attribute index")
        if found:
            problems += found
            continue
        mine = {k: v for k, v in values.items() if k[0] == name}
        if len(mine) > FEW or name not in attrs.fields:
            continue
        for (_, kind, value), ids in mine.items():
            column = getattr(attrs.fields[name], kind)
            got = _ids(attrs, column.equal(value if kind == "str" else int(value)))
            problems += id_differences(got, np.array(ids, np.int64),
                                       f"{name} == {value!r} in the attribute index")
    return problems
