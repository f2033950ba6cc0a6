"""What a stored item is, what a write did, and the rules of a write that every index kind follows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


class StoreLimit(ValueError):
    """A read would return more than the caller allowed (see ``max_bytes``)."""


class StoreError(RuntimeError):
    """The store could not be written (read-only or full disk...); nothing was changed."""


@dataclass
class Item:
    """One stored item as returned for hits."""

    id: int
    key: str | None
    metadata: dict
    added: float
    size: int = 0  # bytes of key and metadata as stored (what a hit carries)


@dataclass
class StoreWrite:
    """What one :meth:`Store.add` did."""

    ids: np.ndarray  # int64 per item, -1 where refused
    replaced: list[int]  # stored ids whose previous contents this call replaced or removed
    refused: dict[int, str]  # item position -> why it was refused
    outcomes: list[str] = field(default_factory=list)  # per item: added, replaced, unchanged, refused


DIGEST_P, DIGEST_Q = 1_000_000_007, 1_000_000_009


def id_digest(ids: np.ndarray) -> tuple[int, int, int, int, int]:
    """The checksum :meth:`Store.id_digest` computes, for an array of ids."""
    ids = np.asarray(ids, dtype=np.int64)
    if not len(ids):
        return (0, -1, -1, 0, 0)
    return (len(ids), int(ids.min()), int(ids.max()), int((ids % DIGEST_P).sum()),
            int(((ids // DIGEST_P) % DIGEST_Q).sum()))


def takes_claimed(claimed: dict[int, int], old: int | None, item_id: int, key: str | None,
                  pos: Sequence[int]) -> str | None:
    """Why an item may not be written (None: it may): it would replace (its key's stored id
    ``old``) or overwrite (its ``item_id``) an item this call already wrote.

    ``claimed`` maps ids this call wrote to their item positions; ``pos`` numbers items in
    the caller's own numbering.
    """
    if old in claimed:
        return f"key {key!r} repeats item {pos[claimed[old]]} of this call"
    if item_id in claimed:
        return f"id {item_id} repeats item {pos[claimed[item_id]]} of this call"
    return None


def repeated_items(keys: Sequence[str | None] | None, ids: Sequence[int | None] | None,
                   positions: Sequence[int] | None = None) -> dict[int, str]:
    """Items of one call whose key or id repeats an earlier item's: position -> why.

    The rule of every add: within one call the first item with a key or id wins.
    """
    out: dict[int, str] = {}
    seen_keys: dict[str, int] = {}
    seen_ids: dict[int, int] = {}
    n = len(keys) if keys is not None else len(ids) if ids is not None else 0
    pos = list(range(n)) if positions is None else list(positions)
    for i in range(n):
        key = None if keys is None else keys[i]
        item_id = None if ids is None or ids[i] is None else int(ids[i])
        if key and key in seen_keys:
            out[i] = f"key {key!r} repeats item {pos[seen_keys[key]]} of this call"
        elif item_id is not None and item_id in seen_ids:
            out[i] = f"id {item_id} repeats item {pos[seen_ids[item_id]]} of this call"
        else:
            if key:
                seen_keys[key] = i
            if item_id is not None:
                seen_ids[item_id] = i
    return out


def merged_metadata(keys: Sequence[str | None], metadata_json: Sequence[str],
                    stored: dict[str, str]) -> list[str]:
    """The rule of a re-add: an item whose key is stored keeps the stored metadata fields it
    does not send (it overwrites the ones it does), so fields another writer set survive
    indexing a folder again. ``stored``: key -> stored metadata JSON."""
    out = []
    for key, meta in zip(keys, metadata_json):
        before = stored.get(key) if key is not None else None
        if before is None or before == meta:
            out.append(meta)
            continue
        out.append(json.dumps({**json.loads(before), **json.loads(meta)}))
    return out
