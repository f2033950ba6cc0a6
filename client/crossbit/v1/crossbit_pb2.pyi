from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    IMAGE: _ClassVar[Modality]
    TEXT: _ClassVar[Modality]
MODALITY_UNSPECIFIED: Modality
IMAGE: Modality
TEXT: Modality

class Value(_message.Message):
    __slots__ = ("string_value", "int_value", "float_value", "bool_value", "tags")
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    string_value: str
    int_value: int
    float_value: float
    bool_value: bool
    tags: StringList
    def __init__(self, string_value: _Optional[str] = ..., int_value: _Optional[int] = ..., float_value: _Optional[float] = ..., bool_value: _Optional[bool] = ..., tags: _Optional[_Union[StringList, _Mapping]] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("texts", "images", "return_embeddings", "collection")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    RETURN_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    return_embeddings: bool
    collection: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ..., return_embeddings: _Optional[bool] = ..., collection: _Optional[str] = ...) -> None: ...

class Encoding(_message.Message):
    __slots__ = ("code", "embedding")
    CODE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    code: bytes
    embedding: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, code: _Optional[bytes] = ..., embedding: _Optional[_Iterable[float]] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("bits", "texts", "images")
    BITS_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    bits: int
    texts: _containers.RepeatedCompositeFieldContainer[Encoding]
    images: _containers.RepeatedCompositeFieldContainer[Encoding]
    def __init__(self, bits: _Optional[int] = ..., texts: _Optional[_Iterable[_Union[Encoding, _Mapping]]] = ..., images: _Optional[_Iterable[_Union[Encoding, _Mapping]]] = ...) -> None: ...

class ImageItem(_message.Message):
    __slots__ = ("key", "id", "image", "metadata", "attributes", "collection", "code", "embedding")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    key: str
    id: int
    image: bytes
    metadata: _containers.ScalarMap[str, str]
    attributes: _containers.MessageMap[str, Value]
    collection: str
    code: bytes
    embedding: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, key: _Optional[str] = ..., id: _Optional[int] = ..., image: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., attributes: _Optional[_Mapping[str, Value]] = ..., collection: _Optional[str] = ..., code: _Optional[bytes] = ..., embedding: _Optional[_Iterable[float]] = ...) -> None: ...

class TextItem(_message.Message):
    __slots__ = ("key", "id", "text", "metadata", "attributes")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    key: str
    id: int
    text: str
    metadata: _containers.ScalarMap[str, str]
    attributes: _containers.MessageMap[str, Value]
    def __init__(self, key: _Optional[str] = ..., id: _Optional[int] = ..., text: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., attributes: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class AddImagesRequest(_message.Message):
    __slots__ = ("items", "collection")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ImageItem]
    collection: str
    def __init__(self, items: _Optional[_Iterable[_Union[ImageItem, _Mapping]]] = ..., collection: _Optional[str] = ...) -> None: ...

class AddTextsRequest(_message.Message):
    __slots__ = ("items", "collection")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[TextItem]
    collection: str
    def __init__(self, items: _Optional[_Iterable[_Union[TextItem, _Mapping]]] = ..., collection: _Optional[str] = ...) -> None: ...

class AddResult(_message.Message):
    __slots__ = ("index", "ok", "id", "key", "error", "error_code", "outcome")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    index: int
    ok: bool
    id: int
    key: str
    error: str
    error_code: str
    outcome: str
    def __init__(self, index: _Optional[int] = ..., ok: _Optional[bool] = ..., id: _Optional[int] = ..., key: _Optional[str] = ..., error: _Optional[str] = ..., error_code: _Optional[str] = ..., outcome: _Optional[str] = ...) -> None: ...

class AddResponse(_message.Message):
    __slots__ = ("results", "added", "failed", "replaced", "unchanged", "stored")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AddResult]
    added: int
    failed: int
    replaced: int
    unchanged: int
    stored: int
    def __init__(self, results: _Optional[_Iterable[_Union[AddResult, _Mapping]]] = ..., added: _Optional[int] = ..., failed: _Optional[int] = ..., replaced: _Optional[int] = ..., unchanged: _Optional[int] = ..., stored: _Optional[int] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("text", "image", "code", "top_k", "radius", "modality", "rerank", "nprobe", "fresh", "filter", "collection", "offset", "min_score")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RADIUS_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    FRESH_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    code: bytes
    top_k: int
    radius: int
    modality: Modality
    rerank: bool
    nprobe: int
    fresh: bool
    filter: str
    collection: str
    offset: int
    min_score: float
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., code: _Optional[bytes] = ..., top_k: _Optional[int] = ..., radius: _Optional[int] = ..., modality: _Optional[_Union[Modality, str]] = ..., rerank: _Optional[bool] = ..., nprobe: _Optional[int] = ..., fresh: _Optional[bool] = ..., filter: _Optional[str] = ..., collection: _Optional[str] = ..., offset: _Optional[int] = ..., min_score: _Optional[float] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "key", "distance", "score", "metadata", "modality", "attributes")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    id: int
    key: str
    distance: int
    score: float
    metadata: _containers.ScalarMap[str, str]
    modality: Modality
    attributes: _containers.MessageMap[str, Value]
    def __init__(self, id: _Optional[int] = ..., key: _Optional[str] = ..., distance: _Optional[int] = ..., score: _Optional[float] = ..., metadata: _Optional[_Mapping[str, str]] = ..., modality: _Optional[_Union[Modality, str]] = ..., attributes: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "bits", "encode_ms", "search_ms", "reranked")
    HITS_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_MS_FIELD_NUMBER: _ClassVar[int]
    RERANKED_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    bits: int
    encode_ms: float
    search_ms: float
    reranked: bool
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., bits: _Optional[int] = ..., encode_ms: _Optional[float] = ..., search_ms: _Optional[float] = ..., reranked: _Optional[bool] = ...) -> None: ...

class SearchBatchRequest(_message.Message):
    __slots__ = ("queries", "collection")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[SearchRequest]
    collection: str
    def __init__(self, queries: _Optional[_Iterable[_Union[SearchRequest, _Mapping]]] = ..., collection: _Optional[str] = ...) -> None: ...

class SearchBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResponse, _Mapping]]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("ids", "keys", "modality", "filter", "collection")
    IDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    modality: Modality
    filter: str
    collection: str
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., keys: _Optional[_Iterable[str]] = ..., modality: _Optional[_Union[Modality, str]] = ..., filter: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted", "missing_ids", "missing_keys")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    MISSING_KEYS_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    missing_ids: _containers.RepeatedScalarFieldContainer[int]
    missing_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted: _Optional[int] = ..., missing_ids: _Optional[_Iterable[int]] = ..., missing_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("images", "texts", "index_kind", "bits", "model", "gpu", "uptime_s", "index_params", "version", "collection")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    INDEX_KIND_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    INDEX_PARAMS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    images: int
    texts: int
    index_kind: str
    bits: int
    model: str
    gpu: bool
    uptime_s: float
    index_params: str
    version: str
    collection: str
    def __init__(self, images: _Optional[int] = ..., texts: _Optional[int] = ..., index_kind: _Optional[str] = ..., bits: _Optional[int] = ..., model: _Optional[str] = ..., gpu: _Optional[bool] = ..., uptime_s: _Optional[float] = ..., index_params: _Optional[str] = ..., version: _Optional[str] = ..., collection: _Optional[str] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ("collection", "modality", "filter")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    modality: Modality
    filter: str
    def __init__(self, collection: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., filter: _Optional[str] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "key", "modality", "metadata", "attributes", "code", "embedding", "added")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    id: int
    key: str
    modality: Modality
    metadata: _containers.ScalarMap[str, str]
    attributes: _containers.MessageMap[str, Value]
    code: bytes
    embedding: _containers.RepeatedScalarFieldContainer[float]
    added: float
    def __init__(self, id: _Optional[int] = ..., key: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., attributes: _Optional[_Mapping[str, Value]] = ..., code: _Optional[bytes] = ..., embedding: _Optional[_Iterable[float]] = ..., added: _Optional[float] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("collection", "modality", "ids", "keys", "with_codes", "with_embeddings")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    WITH_CODES_FIELD_NUMBER: _ClassVar[int]
    WITH_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    modality: Modality
    ids: _containers.RepeatedScalarFieldContainer[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    with_codes: bool
    with_embeddings: bool
    def __init__(self, collection: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., ids: _Optional[_Iterable[int]] = ..., keys: _Optional[_Iterable[str]] = ..., with_codes: _Optional[bool] = ..., with_embeddings: _Optional[bool] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("items", "missing_ids", "missing_keys")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    MISSING_KEYS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    missing_ids: _containers.RepeatedScalarFieldContainer[int]
    missing_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., missing_ids: _Optional[_Iterable[int]] = ..., missing_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class ScrollRequest(_message.Message):
    __slots__ = ("collection", "modality", "filter", "page_size", "cursor", "with_codes", "with_embeddings")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    WITH_CODES_FIELD_NUMBER: _ClassVar[int]
    WITH_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    modality: Modality
    filter: str
    page_size: int
    cursor: str
    with_codes: bool
    with_embeddings: bool
    def __init__(self, collection: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., filter: _Optional[str] = ..., page_size: _Optional[int] = ..., cursor: _Optional[str] = ..., with_codes: _Optional[bool] = ..., with_embeddings: _Optional[bool] = ...) -> None: ...

class ScrollResponse(_message.Message):
    __slots__ = ("items", "next_cursor")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    next_cursor: str
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class UpdateMetadataRequest(_message.Message):
    __slots__ = ("collection", "modality", "ids", "keys", "filter", "set", "remove", "replace")
    class SetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    modality: Modality
    ids: _containers.RepeatedScalarFieldContainer[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    filter: str
    set: _containers.MessageMap[str, Value]
    remove: _containers.RepeatedScalarFieldContainer[str]
    replace: bool
    def __init__(self, collection: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., ids: _Optional[_Iterable[int]] = ..., keys: _Optional[_Iterable[str]] = ..., filter: _Optional[str] = ..., set: _Optional[_Mapping[str, Value]] = ..., remove: _Optional[_Iterable[str]] = ..., replace: _Optional[bool] = ...) -> None: ...

class UpdateMetadataResponse(_message.Message):
    __slots__ = ("updated", "missing_ids", "missing_keys")
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    MISSING_KEYS_FIELD_NUMBER: _ClassVar[int]
    updated: int
    missing_ids: _containers.RepeatedScalarFieldContainer[int]
    missing_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, updated: _Optional[int] = ..., missing_ids: _Optional[_Iterable[int]] = ..., missing_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("name", "model", "index_kind", "index_options", "exist_ok")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_KIND_FIELD_NUMBER: _ClassVar[int]
    INDEX_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    EXIST_OK_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    index_kind: str
    index_options: str
    exist_ok: bool
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., index_kind: _Optional[str] = ..., index_options: _Optional[str] = ..., exist_ok: _Optional[bool] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "model", "model_fingerprint", "index_kind", "bits", "images", "texts", "size_bytes", "index_options", "created")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    INDEX_KIND_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    INDEX_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    model_fingerprint: str
    index_kind: str
    bits: int
    images: int
    texts: int
    size_bytes: int
    index_options: str
    created: float
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., model_fingerprint: _Optional[str] = ..., index_kind: _Optional[str] = ..., bits: _Optional[int] = ..., images: _Optional[int] = ..., texts: _Optional[int] = ..., size_bytes: _Optional[int] = ..., index_options: _Optional[str] = ..., created: _Optional[float] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class DescribeCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("name", "confirm_name")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    confirm_name: str
    def __init__(self, name: _Optional[str] = ..., confirm_name: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    def __init__(self, dropped: _Optional[bool] = ...) -> None: ...
