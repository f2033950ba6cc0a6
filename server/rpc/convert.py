"""Pure conversions between protobuf messages and the core's types (typed metadata included)."""

from __future__ import annotations

import json

from crossbit.server.core.requests import AddOutcome, NewItem, Query, SearchResult, StoredItem
from crossbit.v1 import crossbit_pb2 as pb

MODALITY_NAMES = {pb.MODALITY_UNSPECIFIED: "image", pb.IMAGE: "image", pb.TEXT: "text"}
MODALITY_ENUMS = {"image": pb.IMAGE, "text": pb.TEXT}


def modality_name(value: int) -> str:
    try:
        return MODALITY_NAMES[value]
    except KeyError:
        raise ValueError(f"unknown modality {value}; use IMAGE or TEXT") from None


def python_value(value: pb.Value, name: str = "value"):
    """A typed metadata value as Python: str, int, float, bool or a list of str."""
    kind = value.WhichOneof("kind")
    if kind is None:
        raise ValueError(f"metadata field {name!r} has no value (set one of string_value, "
                         "int_value, float_value, bool_value, tags)")
    if kind == "tags":
        return list(value.tags.values)
    return getattr(value, kind)


def wire_value(value) -> pb.Value:
    """A Python metadata value (as stored) as a typed wire value."""
    if isinstance(value, bool):
        return pb.Value(bool_value=value)
    if isinstance(value, int):
        return pb.Value(int_value=value)
    if isinstance(value, float):
        return pb.Value(float_value=value)
    if isinstance(value, (list, tuple)):
        return pb.Value(tags=pb.StringList(values=[str(v) for v in value]))
    return pb.Value(string_value=str(value))


def string_view(value) -> str:
    """How a typed value reads in the string map (strings as they are, others as JSON)."""
    return value if isinstance(value, str) else json.dumps(value)


def typed_map(values) -> dict:
    return {str(k): python_value(v, k) for k, v in values.items()}


def item_metadata(msg) -> dict:
    """An item's metadata: its string map and its typed map; a name in both is refused."""
    both = set(msg.metadata) & set(msg.attributes)
    if both:
        raise ValueError(f"metadata field {sorted(both)[0]!r} is given twice (metadata and "
                         "attributes): send it once")
    return {**dict(msg.metadata), **typed_map(msg.attributes)}


def image_item(msg: pb.ImageItem) -> NewItem | ValueError:
    """The item, or the reason it cannot be one (that item alone is refused)."""
    try:
        return NewItem(payload=msg.image, key=msg.key,
                       id=msg.id if msg.HasField("id") else None, metadata=item_metadata(msg),
                       code=msg.code or None, embedding=list(msg.embedding) or None)
    except ValueError as exc:
        return exc


def text_item(msg: pb.TextItem) -> NewItem | ValueError:
    try:
        return NewItem(payload=msg.text, key=msg.key,
                       id=msg.id if msg.HasField("id") else None, metadata=item_metadata(msg))
    except ValueError as exc:
        return exc


def add_response(outcomes: list[AddOutcome]) -> pb.AddResponse:
    results = [pb.AddResult(index=o.index, ok=o.ok, id=o.id if o.ok else 0, key=o.key,
                            error=o.error, error_code=o.code, outcome=o.outcome)
               for o in outcomes]
    stored = sum(o.ok for o in outcomes)
    return pb.AddResponse(results=results, added=sum(o.outcome == "added" for o in outcomes),
                          failed=len(outcomes) - stored, stored=stored,
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


def query(msg: pb.SearchRequest, collection: str = "") -> Query:
    """The query of a SearchRequest (``collection``: the batch's, for a query naming none)."""
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
        filter=msg.filter,
        collection=msg.collection or collection,
        offset=msg.offset,
        min_score=msg.min_score if msg.HasField("min_score") else None,
    )


def search_response(result: SearchResult) -> pb.SearchResponse:
    hits = [pb.Hit(id=h.id, key=h.key, distance=h.distance, score=h.score,
                   metadata={str(k): string_view(v) for k, v in h.metadata.items()},
                   attributes={str(k): wire_value(v) for k, v in h.metadata.items()},
                   modality=MODALITY_ENUMS[h.modality]) for h in result.hits]
    return pb.SearchResponse(hits=hits, bits=result.bits, encode_ms=result.encode_ms,
                             search_ms=result.search_ms, reranked=result.reranked)


def encodings(rows: list, with_embeddings: bool) -> list[pb.Encoding]:
    return [pb.Encoding(code=code.tobytes(), embedding=emb.tolist() if with_embeddings else [])
            for code, emb in rows]


def stored_item(item: StoredItem) -> pb.Item:
    return pb.Item(id=item.id, key=item.key, modality=MODALITY_ENUMS[item.modality],
                   metadata={str(k): string_view(v) for k, v in item.metadata.items()},
                   attributes={str(k): wire_value(v) for k, v in item.metadata.items()},
                   code=item.code or b"", embedding=item.embedding or [], added=item.added)


def collection_info(info: dict) -> pb.CollectionInfo:
    return pb.CollectionInfo(
        name=info["name"], model=info["model"], model_fingerprint=info["model_fingerprint"],
        index_kind=info["index_kind"], bits=info["bits"], images=info["images"],
        texts=info["texts"], size_bytes=info["size_bytes"],
        index_options=json.dumps(info["index_options"]), created=info["created"])


def index_options(text: str) -> dict:
    """CreateCollectionRequest.index_options: a JSON object (empty: none)."""
    if not text.strip():
        return {}
    try:
        options = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"index_options is not JSON: {exc}") from None
    if not isinstance(options, dict):
        raise ValueError("index_options must be a JSON object, e.g. {\"nprobe\": 32}")
    return options
