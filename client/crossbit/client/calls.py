"""Every call of the crossbit API, written once for both clients: each builds its request, names
the RPC and says how to read the answer; the blocking client runs it, the asyncio one awaits it."""

from __future__ import annotations

import json
from collections.abc import Sequence

from crossbit.client import results
from crossbit.client.messages import (
    Prepared,
    encode_request,
    modality_enum,
    named,
    search_request,
    text_items,
)
from crossbit.v1 import crossbit_pb2 as pb


class Calls:
    """The API over ``self._run(rpc, request, read, timeout)`` and ``self.collection``."""

    collection: str

    def _coll(self, collection: str | None) -> str:
        return collection if collection is not None else self.collection

    def _run(self, rpc: str, request, read, timeout=None, retry: bool = True):
        """Call ``rpc`` and return ``read(answer)`` (the asyncio client: a coroutine of it)."""
        raise NotImplementedError

    def _then(self, result, read):
        """``read`` of a result of :meth:`_run` (awaited first by the asyncio client)."""
        raise NotImplementedError

    def _value(self, value):
        """A value as :meth:`_run` returns one (a coroutine of it for the asyncio client)."""
        raise NotImplementedError

    def encode(self, texts: Sequence[str] = (), images: Sequence = (), embeddings: bool = False,
               timeout: float | None = None, collection: str | None = None):
        """Codes (and optionally float embeddings) of texts and images, made by a collection's
        model (its own bits)."""
        request = encode_request(texts, images, embeddings, self._coll(collection))
        return self._run("Encode", request, lambda r: results.encoded(r, embeddings), timeout)

    def add_texts_detailed(self, texts: Sequence[str], keys: Sequence[str] | None = None,
                           metadata: Sequence[dict] | None = None, timeout: float | None = None,
                           collection: str | None = None):
        """The server's answer: a result per text (ok, id, outcome added/replaced/unchanged,
        or error) and the counts; texts whose metadata cannot be sent are refused here."""
        prepared = Prepared(len(texts), keys)
        request = pb.AddTextsRequest(items=text_items(texts, keys, metadata, prepared),
                                     collection=self._coll(collection))

        def read(response):
            return results.merged(response, prepared.sent, prepared.refused, prepared.keys)

        if not request.items:  # nothing to send: every text was refused here
            return self._value(read(pb.AddResponse()))
        return self._run("AddTexts", request, read, timeout)

    def add_texts(self, texts: Sequence[str], keys: Sequence[str] | None = None,
                  metadata: Sequence[dict] | None = None, timeout: float | None = None,
                  collection: str | None = None):
        """Add texts; returns an id per text (None where refused; ``.refusals`` says why).
        Metadata values keep their types: str, int, float, bool or a list of str."""
        return self._then(self.add_texts_detailed(texts, keys, metadata, timeout, collection),
                          results.Added)

    def search(self, text: str | None = None, image=None, code=None, top_k: int = 10,
               radius: int | None = None, modality: str = "image", rerank: bool | None = None,
               nprobe: int = 0, timeout: float | None = None, fresh: bool = False,
               filter: str | None = None, collection: str | None = None, offset: int = 0,
               min_score: float | None = None):
        """Search by one of text, image (path, bytes, PIL) or code (bytes or uint8 array).

        Args:
            filter: only items this expression selects (README: Filters), e.g.
                ``'album == "2024" and tags contains "beach"'``.
            offset: skip this many hits (the next page: offset=10 with top_k=10).
            min_score: only hits scoring at least this.
            fresh: see every write acknowledged before this call, through any server of a
                scaled-out deployment (one Milvus time tick slower; see docs/milvus.md).
        """
        request = search_request(text, image, code, top_k, radius, modality, rerank, nprobe,
                                 fresh, filter, self._coll(collection), offset, min_score)
        return self._run("Search", request, results.hits, timeout)

    def search_batch(self, queries: Sequence[dict], timeout: float | None = None,
                     collection: str | None = None):
        """Many queries in one call; each query is a dict of :meth:`search`'s arguments (its
        own filter and collection included)."""
        request = pb.SearchBatchRequest(queries=[search_request(**q) for q in queries],
                                        collection=self._coll(collection))
        return self._run("SearchBatch", request,
                         lambda r: [results.hits(x) for x in r.results], timeout)

    def delete(self, ids: Sequence[int] = (), keys: Sequence[str] = (), modality: str = "image",
               timeout: float | None = None, filter: str | None = None,
               collection: str | None = None):
        """Delete items by id, key or filter; returns how many were deleted (an int), with
        ``.missing_ids`` and ``.missing_keys`` for those that were not stored (no error)."""
        ids, keys = named(ids, keys)
        request = pb.DeleteRequest(ids=ids, keys=keys, modality=modality_enum(modality),
                                   filter=filter or "", collection=self._coll(collection))
        return self._run("Delete", request, lambda r: results.Count(
            r.deleted, r.missing_ids, r.missing_keys), timeout)

    def count(self, filter: str | None = None, modality: str = "image",
              timeout: float | None = None, collection: str | None = None) -> int:
        """How many items a filter selects (every item without one)."""
        request = pb.CountRequest(filter=filter or "", modality=modality_enum(modality),
                                  collection=self._coll(collection))
        return self._run("Count", request, lambda r: r.count, timeout)

    def get(self, ids: Sequence[int] = (), keys: Sequence[str] = (), modality: str = "image",
            with_codes: bool = False, with_embeddings: bool = False,
            timeout: float | None = None, collection: str | None = None):
        """Stored items by id and key (ids first, in the order given); ``.missing_ids`` and
        ``.missing_keys`` name what was not found."""
        ids, keys = named(ids, keys)
        request = pb.GetRequest(ids=ids, keys=keys, modality=modality_enum(modality),
                                with_codes=with_codes, with_embeddings=with_embeddings,
                                collection=self._coll(collection))
        return self._run("Get", request, lambda r: results.Items(
            [results.item(i, with_codes, with_embeddings) for i in r.items], r.missing_ids,
            r.missing_keys), timeout)

    def scroll_page(self, cursor: str = "", filter: str | None = None, modality: str = "image",
                    page_size: int = 100, with_codes: bool = False,
                    with_embeddings: bool = False, timeout: float | None = None,
                    collection: str | None = None):
        """One page of items in id order and the cursor of the next ("" after the last)."""
        request = pb.ScrollRequest(cursor=cursor, filter=filter or "",
                                   modality=modality_enum(modality), page_size=page_size,
                                   with_codes=with_codes, with_embeddings=with_embeddings,
                                   collection=self._coll(collection))
        return self._run("Scroll", request, lambda r: (
            [results.item(i, with_codes, with_embeddings) for i in r.items], r.next_cursor),
            timeout)

    def update_metadata(self, ids: Sequence[int] = (), keys: Sequence[str] = (),
                        set: dict | None = None, remove: Sequence[str] = (),
                        replace: bool = False, filter: str | None = None,
                        modality: str = "image", timeout: float | None = None,
                        collection: str | None = None):
        """Set fields (merged into what is there), remove fields, or ``replace`` the whole
        metadata, of items by id, key or filter, without sending them again. Returns how many
        changed, with ``.missing_ids`` / ``.missing_keys``."""
        from crossbit.client.messages import attributes

        ids, keys = named(ids, keys)
        request = pb.UpdateMetadataRequest(ids=ids, keys=keys, set=attributes(set),
                                           remove=list(remove), replace=replace,
                                           filter=filter or "", modality=modality_enum(modality),
                                           collection=self._coll(collection))
        return self._run("UpdateMetadata", request, lambda r: results.Count(
            r.updated, r.missing_ids, r.missing_keys), timeout)

    def stats(self, timeout: float | None = None, collection: str | None = None):
        return self._run("GetStats", pb.GetStatsRequest(collection=self._coll(collection)),
                         results.stats, timeout)

    # -- collections -----------------------------------------------------------------------
    def create_collection(self, name: str, model: str = "", index: str = "",
                          options: dict | None = None, exist_ok: bool = False,
                          timeout: float | None = None):
        """A new collection with its own model (``default``, ``mpnet-64`` or a model folder on
        the server), index kind and options; returns its description."""
        request = pb.CreateCollectionRequest(name=name, model=model or "", index_kind=index or "",
                                             index_options=json.dumps(options or {}),
                                             exist_ok=exist_ok)
        return self._run("CreateCollection", request, results.collection, timeout)

    def list_collections(self, timeout: float | None = None):
        """The collections this client's token has a role on."""
        return self._run("ListCollections", pb.ListCollectionsRequest(),
                         lambda r: [results.collection(c) for c in r.collections], timeout)

    def describe_collection(self, name: str, timeout: float | None = None):
        return self._run("DescribeCollection", pb.DescribeCollectionRequest(name=name),
                         results.collection, timeout)

    def drop_collection(self, name: str, confirm: str, timeout: float | None = None):
        """Remove a collection and every item in it; ``confirm`` must repeat the name."""
        request = pb.DropCollectionRequest(name=name, confirm_name=confirm)
        return self._run("DropCollection", request, lambda r: r.dropped, timeout)
