"""The gRPC servicer: a thin adapter that validates, converts, calls the core and converts back."""

from __future__ import annotations

import json

from crossbit.server import convert
from crossbit.server.core import RetrievalCore
from crossbit.server.errors import LimitError, grpc_errors
from crossbit.v1 import crossbit_pb2 as pb
from crossbit.v1 import crossbit_pb2_grpc as pb_grpc


def _timeout(context) -> float | None:
    remaining = context.time_remaining()
    return remaining if remaining is not None and remaining < 1e8 else None


class RetrievalServicer(pb_grpc.RetrievalServicer):
    """Implements ``crossbit.v1.Retrieval`` over a :class:`RetrievalCore`."""

    def __init__(self, core: RetrievalCore):
        self.core = core

    @grpc_errors
    def Encode(self, request, context):
        texts, images = self.core.encode(list(request.texts), list(request.images),
                                         _timeout(context))
        return pb.EncodeResponse(bits=self.core.bits,
                                 texts=convert.encodings(texts, request.return_embeddings),
                                 images=convert.encodings(images, request.return_embeddings))

    @grpc_errors
    def AddImages(self, request, context):
        items = [convert.image_item(m) for m in request.items]
        return convert.add_response(self.core.add("image", items, _timeout(context)))

    @grpc_errors
    def AddImagesStream(self, request_iterator, context):
        outcomes, chunk, offset = [], [], 0
        limit = self.core.config.max_batch_items
        for message in request_iterator:
            chunk.append(convert.image_item(message))
            if len(chunk) >= min(limit, 64):
                outcomes += self._add_chunk(chunk, offset, context)
                offset += len(chunk)
                chunk = []
        if chunk:
            outcomes += self._add_chunk(chunk, offset, context)
        return convert.add_response(outcomes)

    def _add_chunk(self, chunk, offset, context):
        done = self.core.add("image", chunk, _timeout(context))
        for outcome in done:
            outcome.index += offset
        return done

    @grpc_errors
    def AddTexts(self, request, context):
        items = [convert.text_item(m) for m in request.items]
        return convert.add_response(self.core.add("text", items, _timeout(context)))

    @grpc_errors
    def Search(self, request, context):
        result = self.core.search(convert.query(request), _timeout(context))
        return convert.search_response(result)

    @grpc_errors
    def SearchBatch(self, request, context):
        if len(request.queries) > self.core.config.max_batch_items:
            raise LimitError(f"{len(request.queries)} queries in one request; the limit is "
                             f"{self.core.config.max_batch_items}")
        queries = [convert.query(q) for q in request.queries]
        results = self.core.search_many(queries, _timeout(context))
        return pb.SearchBatchResponse(results=[convert.search_response(r) for r in results])

    @grpc_errors
    def Delete(self, request, context):
        deleted = self.core.delete(list(request.ids), list(request.keys),
                                   convert.modality_name(request.modality))
        return pb.DeleteResponse(deleted=deleted)

    @grpc_errors
    def GetStats(self, request, context):
        s = self.core.stats()
        from crossbit import __version__

        return pb.Stats(images=s["images"], texts=s["texts"], index_kind=s["index_kind"],
                        bits=s["bits"], model=s["model"], gpu=s["gpu"], uptime_s=s["uptime_s"],
                        index_params=json.dumps(s["index_params"], default=str),
                        version=__version__)
