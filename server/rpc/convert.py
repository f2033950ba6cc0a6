"""Pure conversions between protobuf messages and the core's types."""

from __future__ import annotations

from crossbit.server.core.requests import AddOutcome, NewItem, Query, SearchResult
from crossbit.v1 import crossbit_pb2 as pb

MODALITY_NAMES = {pb.MODALITY_UNSPECIFIED: "image", pb.IMAGE: "image", pb.TEXT: "text"}
MODALITY_ENUMS = {"image": pb.IMAGE, "text": pb.TEXT}


def modality_name(value: int) -> str:
    try:
        return MODALITY_NAMES[value]
    except KeyError:
        raise ValueError(f"unknown modality {value}; use IMAGE or TEXT") from None


def image_item(msg: pb.ImageItem) -> NewItem:
    return NewItem(payload=msg.image, key=msg.key, id=msg.id if msg.HasField("id") else None,
                   metadata=dict(msg.metadata))


def text_item(msg: pb.TextItem) -> NewItem:
    return NewItem(payload=msg.text, key=msg.key, id=msg.id if msg.HasField("id") else None,
                   metadata=dict(msg.metadata))


def add_response(outcomes: list[AddOutcome]) -> pb.AddResponse:
    results = [pb.AddResult(index=o.index, ok=o.ok, id=o.id if o.ok else 0, key=o.key,
                            error=o.error, error_code=o.code, outcome=o.outcome)
               for o in outcomes]
    added = sum(o.ok for o in outcomes)
    return pb.AddResponse(results=results, added=added, failed=len(outcomes) - added,
                          replaced=sum(o.outcome == "replaced" for o in outcomes),
                          unchanged=sum(o.outcome == "unchanged" for o in outcomes))


def with_committed(exc: BaseException, committed: list[AddOutcome], read: int) -> BaseException:
    """The same error, its message saying which items of the stream were committed before it."""
    ids = [o.id for o in committed]
    message = (f"{exc} (after {read} items: {len(committed)} of them were committed, at "
               f"positions {committed[0].index}..{committed[-1].index}, ids {min(ids)}..{max(ids)};"
               " their results are in the trailing metadata crossbit-committed-bin)")
    try:
        return type(exc)(message)
    except Exception:  # an exception type with another signature keeps its own message
        return exc


def query(msg: pb.SearchRequest) -> Query:
    which = msg.WhichOneof("query")
    if which is None:
        raise ValueError("a query needs one of text, image or code")
    return Query(
        text=msg.text if which == "text" else None,
        image=msg.image if which == "image" else None,
        code=msg.code if which == "code" else None,
        top_k=msg.top_k,
        radius=msg.radius if msg.HasField("radius") else None,
        modality=modality_name(msg.modality),
        rerank=msg.rerank if msg.HasField("rerank") else None,
        nprobe=msg.nprobe,
        fresh=msg.fresh,
    )


def search_response(result: SearchResult) -> pb.SearchResponse:
    hits = [pb.Hit(id=h.id, key=h.key, distance=h.distance, score=h.score,
                   metadata={str(k): str(v) for k, v in h.metadata.items()},
                   modality=MODALITY_ENUMS[h.modality]) for h in result.hits]
    return pb.SearchResponse(hits=hits, bits=result.bits, encode_ms=result.encode_ms,
                             search_ms=result.search_ms, reranked=result.reranked)


def encodings(rows: list, with_embeddings: bool) -> list[pb.Encoding]:
    return [pb.Encoding(code=code.tobytes(), embedding=emb.tolist() if with_embeddings else [])
            for code, emb in rows]
