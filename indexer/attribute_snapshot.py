"""The attribute index saved beside the backend's snapshot (numpy arrays, JSON strings and roaring
bytes in an npz: no pickle), and opening it: loaded and brought up to the store through its change
log, or None (then it is rebuilt from the store) whenever it cannot be trusted."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
from pyroaring import BitMap

from crossbit.indexer.attribute_columns import Column
from crossbit.indexer.attribute_values import Values
from crossbit.indexer.attributes import AttributeIndex, FieldColumns
from crossbit.indexer.items import id_digest
from crossbit.indexer.snapshot import read_snapshot, store_behind, write_snapshot

log = logging.getLogger(__name__)

ATTRIBUTES = "attributes.snapshot"
FORMAT = 1


def _strings(values) -> np.ndarray:
    return np.frombuffer(json.dumps(list(values), ensure_ascii=False).encode(), np.uint8)


def _unstrings(raw: np.ndarray) -> np.ndarray:
    values = json.loads(raw.tobytes().decode())
    out = np.empty(len(values), object)
    out[:] = values
    return out


def _bitmap(raw: np.ndarray) -> BitMap:
    return BitMap.deserialize(raw.tobytes()) if len(raw) else BitMap()


def _column_parts(column, name: str, parts: dict) -> dict:
    """Arrays of one column into ``parts``; returns its description."""
    text = column.dtype.kind == "O"
    if isinstance(column, Column):
        if len(column.dvals) or column.dead:
            column.merge()  # the caller holds the write lock
        parts[name + ".vals"] = _strings(column.vals.tolist()) if text else column.vals
        parts[name + ".slots"] = column.slots
        return {"type": "column", "dtype": column.dtype.str}
    keys = list(column.maps)
    maps = [column.maps[k].serialize() for k in keys]
    parts[name + ".vals"] = _strings(keys) if text else np.array(keys, column.dtype)
    parts[name + ".maps"] = np.frombuffer(b"".join(maps), np.uint8)
    parts[name + ".sizes"] = np.array([len(m) for m in maps], np.int64)
    return {"type": "values", "dtype": column.dtype.str}


def _column_from(desc: dict, name: str, parts) -> Column | Values:
    dtype = np.dtype(desc["dtype"]) if desc["dtype"] != "|O" else np.dtype(object)
    vals = _unstrings(parts[name + ".vals"]) if dtype.kind == "O" else parts[name + ".vals"]
    if desc["type"] == "column":
        column = Column(dtype)
        column.load(vals, parts[name + ".slots"], presorted=True)
        return column
    column = Values(dtype)
    raw, ends = parts[name + ".maps"], np.cumsum(parts[name + ".sizes"])
    for value, start, end in zip(vals.tolist(), np.concatenate([[0], ends[:-1]]), ends):
        column.maps[value] = _bitmap(raw[start:end])
        column.every |= column.maps[value]
    return column


def to_bytes(attrs: AttributeIndex) -> bytes:
    """The attribute index as one npz (the caller holds the index's write lock)."""
    parts: dict = {"ids": attrs.ids[:attrs.n], "codes": attrs.codes[:, :attrs.n],
                   "live": np.frombuffer(attrs.live.serialize(), np.uint8),
                   "free": np.frombuffer(attrs.free.serialize(), np.uint8)}
    desc = {"format": FORMAT, "n": attrs.n, "bits": attrs.bits,
            "keys": _column_parts(attrs.key_col, "keys", parts), "fields": []}
    for n, (name, field) in enumerate(attrs.fields.items()):
        parts[f"f{n}.present"] = np.frombuffer(field.present.serialize(), np.uint8)
        desc["fields"].append({
            "name": name, "odd": [[int(s), str(v)] for s, v in field.odd.items()],
            "columns": {kind: _column_parts(getattr(field, kind), f"f{n}.{kind}", parts)
                        for kind, _ in FieldColumns.TYPES}})
    parts["desc"] = _strings([json.dumps(desc)])
    out = io.BytesIO()
    np.savez(out, **parts)
    return out.getvalue()


def from_bytes(payload: bytes, bits: int) -> AttributeIndex:
    parts = np.load(io.BytesIO(payload), allow_pickle=False)
    desc = json.loads(_unstrings(parts["desc"])[0])
    if desc["format"] != FORMAT or desc["bits"] != bits:
        raise ValueError(f"attribute snapshot format {desc['format']} / {desc['bits']} bits")
    attrs = AttributeIndex(bits)
    n = int(desc["n"])
    attrs._take_slots(n)
    attrs.ids[:n] = parts["ids"]
    attrs.codes[:, :n] = parts["codes"]
    attrs.live, attrs.free = _bitmap(parts["live"]), _bitmap(parts["free"])
    live = np.frombuffer(attrs.live.to_array(), np.uint32)
    attrs.id_col.load(attrs.ids[live], live, presorted=False)
    attrs.key_col = _column_from(desc["keys"], "keys", parts)
    for n, fdesc in enumerate(desc["fields"]):
        field = FieldColumns()
        field.present = _bitmap(parts[f"f{n}.present"])
        for kind, cdesc in fdesc["columns"].items():
            setattr(field, kind, _column_from(cdesc, f"f{n}.{kind}", parts))
        field.odd = {int(s): int(v) for s, v in fdesc["odd"]}
        attrs.fields[fdesc["name"]] = field
    return attrs


def snapshot_of(attrs: AttributeIndex, seq: int) -> tuple[dict, bytes]:
    """(header, payload) of the attribute index at the store's log position ``seq`` (under the
    index's write lock; :func:`save` writes them after it)."""
    live = attrs.ids[np.frombuffer(attrs.live.to_array(), np.uint32)]
    return {"kind": "attributes", "seq": seq, "digest": list(id_digest(live))}, to_bytes(attrs)


def save(directory: Path, header: dict, payload: bytes) -> None:
    """Write it (OSError: the disk refused; nothing is replaced then)."""
    write_snapshot(directory, header, payload, ATTRIBUTES)


def load(directory: Path, store, bits: int, index_rows) -> tuple[AttributeIndex | None, str]:
    """The saved attribute index brought up to the store, or (None, why it cannot be trusted).

    ``index_rows(attrs, rows)`` puts stored rows into it (the replay of the change log).
    """
    path = directory / ATTRIBUTES
    if not path.exists():
        return None, "no attribute snapshot"
    try:
        header, payload = read_snapshot(path)
        seq = int(header["seq"])
        behind = store_behind(store, seq)
        if behind:
            return None, behind
        if seq < store.max_seq() and store.log_floor() > seq + 1:
            return None, "the store's change log no longer reaches back to the attribute snapshot"
        attrs = from_bytes(payload, bits)
        entries = store.log_since(seq)
        touched = np.unique(np.array([e[2] for e in entries], np.int64))
        if len(touched):
            attrs.remove(touched)
            index_rows(attrs, store.rows_for(touched.tolist()))
        live = attrs.ids[np.frombuffer(attrs.live.to_array(), np.uint32)]
        if id_digest(live) != store.id_digest():
            return None, "the attribute snapshot's ids disagree with the store's"
        return attrs, f"loaded at seq {seq}, replayed {len(entries)} changes"
    except Exception as exc:  # any unreadable snapshot: the store has everything
        log.warning("index %s: attribute snapshot unusable (%s)", directory, exc)
        return None, f"attribute snapshot unusable ({exc})"
