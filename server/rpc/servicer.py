"""The gRPC servicer: a thin adapter that checks the caller's role, converts, calls the core and
converts back."""

from __future__ import annotations

import functools
import json
from importlib import metadata

from crossbit.server.core import RetrievalCore
from crossbit.server.core.calls import call_scope
from crossbit.server.core.tokens import TokenTable
from crossbit.server.rpc import convert
from crossbit.server.rpc.auth import principal
from crossbit.server.rpc.errors import grpc_errors, is_abort
from crossbit.server.rpc.guard import Malformed, StreamIdle
from crossbit.v1 import crossbit_pb2 as pb
from crossbit.v1 import crossbit_pb2_grpc as pb_grpc

STREAM_CHUNK = 64  # stream items committed together
VERSION = metadata.version("crossbit")
COMMITTED_KEY = "crossbit-committed-bin"  # trailing metadata of a stream that failed midway


def _timeout(context) -> float | None:
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e8 else None


def scoped(method):
    """Run an RPC in a call scope: work it queued is dropped once its caller has gone."""
    @functools.wraps(method)
    def run(self, request, context):
        with call_scope(_timeout(context), context.add_callback):
            return method(self, request, context)
    return run


class RetrievalServicer(pb_grpc.RetrievalServicer):
    """Implements ``crossbit.v1.Retrieval`` over a :class:`RetrievalCore`."""

    def __init__(self, core: RetrievalCore, tokens: TokenTable | None = None):
        self.core = core
        self.tokens = tokens

    def _allow(self, context, collection: str, action: str):
        """The caller, if its token has the role ``action`` needs on ``collection``."""
        who = principal(self.tokens, context)
        who.require(collection or "default", action)
        return who

    @grpc_errors
    @scoped
    def Encode(self, request, context):
        self._allow(context, request.collection, "encode")
        texts, images = self.core.encode(list(request.texts), list(request.images),
                                         _timeout(context), request.collection or "default")
        bits = self.core.registry.get(request.collection).bits
        return pb.EncodeResponse(bits=bits,
                                 texts=convert.encodings(texts, request.return_embeddings),
                                 images=convert.encodings(images, request.return_embeddings))

    @grpc_errors
    @scoped
    def AddImages(self, request, context):
        self._allow(context, request.collection, "add")
        items = [convert.image_item(m) for m in request.items]
        return convert.add_response(self.core.add("image", items, _timeout(context),
                                                  collection=request.collection or "default"))

    @grpc_errors
    @scoped
    def AddImagesStream(self, request_iterator, context):
        """Items are committed in chunks as they arrive; the answer has one result per
        message (an undecodable message is one refused item). The first message names the
        collection (later ones leave it empty or name the same). If the call fails midway,
        the error names the items already committed, and its trailing metadata
        ``crossbit-committed-bin`` holds their results (an AddResponse). A client that stays
        silent past ``stream_idle_s`` gets DEADLINE_EXCEEDED the same way, after the items it
        did send are committed."""
        outcomes, chunk, seen, stream = [], [], {}, {}
        size = min(self.core.config.max_batch_items, STREAM_CHUNK)
        try:
            try:
                for message in request_iterator:
                    chunk.append(message)
                    if len(chunk) >= size:
                        outcomes += self._add_chunk(chunk, len(outcomes), seen, context, stream)
                        chunk = []
            except StreamIdle:
                if chunk:  # the client went silent: what it did send is whole, keep it
                    outcomes += self._add_chunk(chunk, len(outcomes), seen, context, stream)
                raise
            if chunk:
                outcomes += self._add_chunk(chunk, len(outcomes), seen, context, stream)
        except Exception as exc:
            committed = [o for o in outcomes if o.ok]
            if not committed or is_abort(exc):
                raise
            context.set_trailing_metadata(
                ((COMMITTED_KEY, convert.add_response(outcomes).SerializeToString()),))
            raise convert.with_committed(exc, committed, len(outcomes)) from None
        return convert.add_response(outcomes)

    def _add_chunk(self, chunk, first, seen, context, stream: dict):
        if "collection" not in stream:  # the first message decides, and its role is checked
            named = next((m.collection for m in chunk if not isinstance(m, Malformed)), "")
            stream["collection"] = named or "default"
            self._allow(context, stream["collection"], "add")
        items = []
        for m in chunk:
            if isinstance(m, Malformed):
                items.append(ValueError(str(m)))
            elif m.collection and m.collection != stream["collection"]:
                items.append(ValueError(f"this stream adds to collection "
                                        f"{stream['collection']!r}, not {m.collection!r}"))
            else:
                items.append(convert.image_item(m))
        return self.core.add("image", items, _timeout(context), first=first, seen=seen,
                             collection=stream["collection"])

    @grpc_errors
    @scoped
    def AddTexts(self, request, context):
        self._allow(context, request.collection, "add")
        items = [convert.text_item(m) for m in request.items]
        return convert.add_response(self.core.add("text", items, _timeout(context),
                                                  collection=request.collection or "default"))

    @grpc_errors
    @scoped
    def Search(self, request, context):
        query = convert.query(request)
        self._allow(context, query.collection, "search")
        return convert.search_response(self.core.search(query, _timeout(context)))

    @grpc_errors
    @scoped
    def SearchBatch(self, request, context):
        queries = [convert.query(q, request.collection) for q in request.queries]
        who = principal(self.tokens, context)
        for name in {q.collection or "default" for q in queries}:
            who.require(name, "search")
        results = self.core.search_many(queries, _timeout(context))
        return pb.SearchBatchResponse(results=[convert.search_response(r) for r in results])

    @grpc_errors
    def Delete(self, request, context):
        self._allow(context, request.collection, "delete")
        deleted, missing = self.core.delete(
            list(request.ids), list(request.keys), convert.modality_name(request.modality),
            _timeout(context), request.collection or "default", request.filter)
        return pb.DeleteResponse(deleted=deleted, missing_ids=missing.ids,
                                 missing_keys=missing.keys)

    @grpc_errors
    def GetStats(self, request, context):
        self._allow(context, request.collection, "stats")
        s = self.core.stats(request.collection or "default")
        return pb.Stats(images=s["images"], texts=s["texts"], index_kind=s["index_kind"],
                        bits=s["bits"], model=s["model"], gpu=s["gpu"], uptime_s=s["uptime_s"],
                        index_params=json.dumps(s["index_params"], default=str),
                        version=VERSION, collection=s["collection"])

    @grpc_errors
    def Count(self, request, context):
        self._allow(context, request.collection, "count")
        return pb.CountResponse(count=self.core.count(convert.modality_name(request.modality),
                                                      request.filter,
                                                      request.collection or "default"))

    @grpc_errors
    def Get(self, request, context):
        self._allow(context, request.collection, "get")
        items, missing = self.core.get(list(request.ids), list(request.keys),
                                       convert.modality_name(request.modality),
                                       request.collection or "default", request.with_codes,
                                       request.with_embeddings)
        return pb.GetResponse(items=[convert.stored_item(i) for i in items],
                              missing_ids=missing.ids, missing_keys=missing.keys)

    @grpc_errors
    def Scroll(self, request, context):
        self._allow(context, request.collection, "scroll")
        items, cursor = self.core.scroll(convert.modality_name(request.modality), request.filter,
                                         request.page_size, request.cursor,
                                         request.collection or "default", request.with_codes,
                                         request.with_embeddings)
        return pb.ScrollResponse(items=[convert.stored_item(i) for i in items],
                                 next_cursor=cursor)

    @grpc_errors
    def UpdateMetadata(self, request, context):
        self._allow(context, request.collection, "update")
        updated, missing = self.core.update_metadata(
            list(request.ids), list(request.keys), convert.modality_name(request.modality),
            request.filter, convert.typed_map(request.set), list(request.remove),
            request.replace, request.collection or "default", _timeout(context))
        return pb.UpdateMetadataResponse(updated=updated, missing_ids=missing.ids,
                                         missing_keys=missing.keys)

    @grpc_errors
    def CreateCollection(self, request, context):
        self._allow(context, request.name, "create")
        info = self.core.create_collection(request.name, request.model, request.index_kind,
                                           convert.index_options(request.index_options),
                                           request.exist_ok)
        return convert.collection_info(info)

    @grpc_errors
    def ListCollections(self, request, context):
        who = principal(self.tokens, context)
        return pb.ListCollectionsResponse(collections=[
            convert.collection_info(info) for info in self.core.list_collections()
            if who.sees(info["name"])])

    @grpc_errors
    def DescribeCollection(self, request, context):
        self._allow(context, request.name, "describe")
        return convert.collection_info(self.core.describe_collection(request.name))

    @grpc_errors
    def DropCollection(self, request, context):
        self._allow(context, request.name, "drop")
        self.core.drop_collection(request.name, request.confirm_name)
        return pb.DropCollectionResponse(dropped=True)
