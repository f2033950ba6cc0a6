"""The gRPC servicer: a thin adapter that validates, converts, calls the core and converts back."""

from __future__ import annotations

import functools
import json
from importlib import metadata

from crossbit.server.core import RetrievalCore
from crossbit.server.core.calls import call_scope
from crossbit.server.rpc import convert
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

    def __init__(self, core: RetrievalCore):
        self.core = core

    @grpc_errors
    @scoped
    def Encode(self, request, context):
        texts, images = self.core.encode(list(request.texts), list(request.images),
                                         _timeout(context))
        return pb.EncodeResponse(bits=self.core.bits,
                                 texts=convert.encodings(texts, request.return_embeddings),
                                 images=convert.encodings(images, request.return_embeddings))

    @grpc_errors
    @scoped
    def AddImages(self, request, context):
        items = [convert.image_item(m) for m in request.items]
        return convert.add_response(self.core.add("image", items, _timeout(context)))

    @grpc_errors
    @scoped
    def AddImagesStream(self, request_iterator, context):
        """Items are committed in chunks as they arrive; the answer has one result per
        message (an undecodable message is one refused item). If the call fails midway, the
        error names the items already committed, and its trailing metadata
        ``crossbit-committed-bin`` holds their results (an AddResponse). A client that stays
        silent past ``stream_idle_s`` gets DEADLINE_EXCEEDED the same way, after the items it
        did send are committed."""
        outcomes, chunk, seen = [], [], {}
        size = min(self.core.config.max_batch_items, STREAM_CHUNK)
        try:
            try:
                for message in request_iterator:
                    chunk.append(message)
                    if len(chunk) >= size:
                        outcomes += self._add_chunk(chunk, len(outcomes), seen, context)
                        chunk = []
            except StreamIdle:
                if chunk:  # the client went silent: what it did send is whole, keep it
                    outcomes += self._add_chunk(chunk, len(outcomes), seen, context)
                raise
            if chunk:
                outcomes += self._add_chunk(chunk, len(outcomes), seen, context)
        except Exception as exc:
            committed = [o for o in outcomes if o.ok]
            if not committed or is_abort(exc):
                raise
            context.set_trailing_metadata(
                ((COMMITTED_KEY, convert.add_response(outcomes).SerializeToString()),))
            raise convert.with_committed(exc, committed, len(outcomes)) from None
        return convert.add_response(outcomes)

    def _add_chunk(self, chunk, first, seen, context):
        items = [m if isinstance(m, Malformed) else convert.image_item(m) for m in chunk]
        items = [ValueError(str(m)) if isinstance(m, Malformed) else m for m in items]
        return self.core.add("image", items, _timeout(context), first=first, seen=seen)

    @grpc_errors
    @scoped
    def AddTexts(self, request, context):
        items = [convert.text_item(m) for m in request.items]
        return convert.add_response(self.core.add("text", items, _timeout(context)))

    @grpc_errors
    @scoped
    def Search(self, request, context):
        result = self.core.search(convert.query(request), _timeout(context))
        return convert.search_response(result)

    @grpc_errors
    @scoped
    def SearchBatch(self, request, context):
        queries = [convert.query(q) for q in request.queries]
        results = self.core.search_many(queries, _timeout(context))
        return pb.SearchBatchResponse(results=[convert.search_response(r) for r in results])

    @grpc_errors
    def Delete(self, request, context):
        deleted = self.core.delete(list(request.ids), list(request.keys),
                                   convert.modality_name(request.modality), _timeout(context))
        return pb.DeleteResponse(deleted=deleted)

    @grpc_errors
    def GetStats(self, request, context):
        s = self.core.stats()
        return pb.Stats(images=s["images"], texts=s["texts"], index_kind=s["index_kind"],
                        bits=s["bits"], model=s["model"], gpu=s["gpu"], uptime_s=s["uptime_s"],
                        index_params=json.dumps(s["index_params"], default=str),
                        version=VERSION)
