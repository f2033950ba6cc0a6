"""The core's calls on what is stored, beside search: delete, count, get, scroll, update metadata,
stats, and the collections themselves (mixed into ``RetrievalCore``)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Sequence

import numpy as np

from crossbit.indexer.call_context import within
from crossbit.server.core.collections import DEFAULT, Collection
from crossbit.server.core.exceptions import NotFoundError, UnavailableError
from crossbit.server.core.filtering import parse_filter
from crossbit.server.core.requests import MODALITIES, Missing, StoredItem

DEFAULT_PAGE = 100  # Scroll's page size when the request leaves it 0


class CatalogCalls:
    """Reads and writes of stored items by id, key or filter, and collection management; uses
    the core's ``registry``, ``config``, ``checks``, ``closing`` and ``started``."""

    # -- writes by id, key or filter ---------------------------------------------------------
    def _writable(self) -> None:
        if self.closing:
            raise UnavailableError("the server is shutting down")

    def _targets(self, coll: Collection, modality: str, ids: Sequence[int], keys: Sequence[str],
                 filter_expr: str | None) -> tuple[list[int], Missing]:
        """The stored ids named by ids, keys and a filter, and what of them is not stored."""
        index = coll.indexes[_modality(modality)]
        self.checks.batch(len(ids) + len(keys), "ids and keys")
        filter_ = parse_filter(filter_expr)
        if not ids and not keys and filter_ is None:
            raise ValueError("give ids, keys or a filter")
        found_keys = index.ids_for_keys(list(keys)) if keys else {}
        present = set(index.items(sorted({int(i) for i in ids}))) if ids else set()
        missing = Missing([int(i) for i in ids if int(i) not in present],
                          [k for k in keys if k not in found_keys])
        targets = present | set(found_keys.values())
        if filter_ is not None:
            targets |= {int(i) for i in index.select(filter_)}
        return sorted(targets), missing

    def delete(self, ids: Sequence[int] = (), keys: Sequence[str] = (), modality: str = "image",
               timeout: float | None = None, collection: str = DEFAULT,
               filter: str | None = None) -> tuple[int, Missing]:
        """Delete by ids, keys and a filter; ids and keys that are not stored are reported, not
        an error (a delete sent again after a timeout succeeds). Returns (deleted, missing)."""
        self._writable()
        with within(_deadline(timeout)), self.registry.get(collection).use() as coll:
            for _ in range(3):  # an item deleted by another call meanwhile: look again
                targets, missing = self._targets(coll, modality, ids, keys, filter)
                if not targets:
                    return 0, missing
                try:
                    return coll.indexes[modality].remove(targets), missing
                except KeyError:
                    continue
            raise UnavailableError("the items kept changing under this delete: try again")

    def update_metadata(self, ids: Sequence[int] = (), keys: Sequence[str] = (),
                        modality: str = "image", filter: str | None = None,
                        set_fields: dict | None = None, remove: Sequence[str] = (),
                        replace: bool = False, collection: str = DEFAULT,
                        timeout: float | None = None) -> tuple[int, Missing]:
        """Set, merge (``set_fields`` into what is there) or remove metadata fields, or replace
        the whole dict, without encoding anything again. Returns (updated, missing)."""
        self._writable()
        set_fields = dict(set_fields or {})
        self.checks.metadata(set_fields)
        if not set_fields and not remove and not replace:
            raise ValueError("give fields to set or remove (or replace)")
        if modality == "text" and ("text" in set_fields or "text" in remove or replace):
            raise ValueError("a text item's 'text' field is its text: add the text again instead")
        with within(_deadline(timeout)), self.registry.get(collection).use() as coll:
            targets, missing = self._targets(coll, modality, ids, keys, filter)
            if not targets:
                return 0, missing
            updated = coll.indexes[modality].update_metadata(targets, set_fields, list(remove),
                                                             replace)
            return updated, missing

    # -- reads -------------------------------------------------------------------------------
    def count(self, modality: str = "image", filter: str | None = None,
              collection: str = DEFAULT) -> int:
        """How many items a filter selects (every item without one)."""
        filter_ = parse_filter(filter)
        with self.registry.get(collection).use() as coll:
            index = coll.indexes[_modality(modality)]
            return int(index.count(filter_)) if filter_ is not None else len(index)

    def get(self, ids: Sequence[int] = (), keys: Sequence[str] = (), modality: str = "image",
            collection: str = DEFAULT, with_codes: bool = False,
            with_embeddings: bool = False) -> tuple[list[StoredItem], Missing]:
        """Items by id, then by key, in the order asked (each once); what was not found."""
        self.checks.batch(len(ids) + len(keys), "ids and keys")
        with self.registry.get(collection).use() as coll:
            index = coll.indexes[_modality(modality)]
            by_key = index.ids_for_keys(list(keys)) if keys else {}
            order = list(dict.fromkeys([int(i) for i in ids] +
                                       [by_key[k] for k in keys if k in by_key]))
            found = index.items(order, max_bytes=self.config.max_response_bytes)
            items = self._stored(index, modality, [found[i] for i in order if i in found],
                                 with_codes, with_embeddings)
        return items, Missing([int(i) for i in ids if int(i) not in found],
                              [k for k in keys if k not in by_key])

    def scroll(self, modality: str = "image", filter: str | None = None, page_size: int = 0,
               cursor: str = "", collection: str = DEFAULT, with_codes: bool = False,
               with_embeddings: bool = False) -> tuple[list[StoredItem], str]:
        """One page of items in ascending id order, and the cursor of the next ("" at the end).

        Keyset paging by id: an item that exists for the whole scroll is seen exactly once,
        whatever is added or deleted meanwhile.
        """
        modality = _modality(modality)
        page_size = page_size or DEFAULT_PAGE
        if not 1 <= page_size <= self.config.max_top_k:
            raise ValueError(f"page_size must be between 1 and {self.config.max_top_k}")
        filter_ = parse_filter(filter)
        coll_name = collection or DEFAULT
        after = read_cursor(cursor, coll_name, modality, filter or "")
        with self.registry.get(coll_name).use() as coll:
            index = coll.indexes[modality]
            page = index.scroll(after, page_size + 1, filter_)
            more = len(page) > page_size
            page = page[:page_size]
            items = self._stored(index, modality, page, with_codes, with_embeddings)
        next_cursor = make_cursor(page[-1].id, coll_name, modality, filter or "") \
            if more and page else ""
        return items, next_cursor

    @staticmethod
    def _stored(index, modality: str, found: list, with_codes: bool,
                with_embeddings: bool) -> list[StoredItem]:
        ids = [i.id for i in found]
        codes = {}
        if with_codes and ids:
            got_ids, got_codes = index.codes(ids)
            codes = {int(i): c.tobytes() for i, c in zip(got_ids, got_codes)}
        embeddings = index.embeddings(ids) if with_embeddings and ids else {}
        return [StoredItem(i.id, i.key or "", modality, i.metadata, i.added, codes.get(i.id),
                           None if i.id not in embeddings else
                           np.asarray(embeddings[i.id], np.float32).tolist())
                for i in found]

    def stats(self, collection: str = DEFAULT) -> dict:
        with self.registry.get(collection).use() as coll:
            # each index counted once (a count is a Strong read, about a time tick, on Milvus)
            image_stats, text_stats = (coll.indexes[m].stats() for m in MODALITIES)
            return {"images": image_stats["items"], "texts": text_stats["items"],
                    "index_kind": image_stats["kind"], "bits": coll.bits,
                    "model": coll.record.model, "collection": coll.name,
                    "gpu": coll.encoders.model.device.type == "cuda"
                    or image_stats["kind"] == "gpu",
                    "uptime_s": time.time() - self.started,
                    "index_params": {"image": image_stats, "text": text_stats}}

    # -- collections -------------------------------------------------------------------------
    def create_collection(self, name: str, model: str | None = None, index: str | None = None,
                          options: dict | None = None, exist_ok: bool = False) -> dict:
        self._writable()
        return self.registry.create(name, model or None, index or None, options,
                                    exist_ok).describe()

    def list_collections(self) -> list[dict]:
        out = []
        for c in sorted(self.registry.all(), key=lambda c: c.name):
            try:
                out.append(c.describe())
            except NotFoundError:  # dropped meanwhile: no longer listed
                pass
        return out

    def describe_collection(self, name: str) -> dict:
        return self.registry.get(name).describe()

    def drop_collection(self, name: str, confirm: str) -> None:
        self._writable()
        self.registry.drop(name, confirm)


def _modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    return modality


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _scope(collection: str, modality: str, filter_expr: str) -> str:
    return hashlib.sha256(f"{collection}\0{modality}\0{filter_expr.strip()}".encode()).hexdigest()[:16]


def make_cursor(after: int, collection: str, modality: str, filter_expr: str) -> str:
    """An opaque cursor: the last id seen, bound to the scroll it belongs to."""
    raw = json.dumps({"after": int(after), "scroll": _scope(collection, modality, filter_expr)})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def read_cursor(cursor: str, collection: str, modality: str, filter_expr: str) -> int | None:
    """The id a cursor continues after (None: from the start).

    Raises:
        ValueError: not a cursor of this server, or of another scroll (collection, modality
            or filter changed).
    """
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        after, scope = int(data["after"]), data["scroll"]
    except Exception:
        raise ValueError("cursor is not one this server gave (pass a page's next_cursor as it "
                         "came)") from None
    if scope != _scope(collection, modality, filter_expr):
        raise ValueError("cursor belongs to another scroll (collection, modality or filter "
                         "changed): start again without a cursor")
    return after
