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

class EncodeRequest(_message.Message):
    __slots__ = ("texts", "images", "return_embeddings")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    RETURN_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    return_embeddings: bool
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ..., return_embeddings: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("key", "id", "image", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    key: str
    id: int
    image: bytes
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, key: _Optional[str] = ..., id: _Optional[int] = ..., image: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class TextItem(_message.Message):
    __slots__ = ("key", "id", "text", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    key: str
    id: int
    text: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, key: _Optional[str] = ..., id: _Optional[int] = ..., text: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class AddImagesRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ImageItem]
    def __init__(self, items: _Optional[_Iterable[_Union[ImageItem, _Mapping]]] = ...) -> None: ...

class AddTextsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[TextItem]
    def __init__(self, items: _Optional[_Iterable[_Union[TextItem, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("results", "added", "failed", "replaced", "unchanged")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AddResult]
    added: int
    failed: int
    replaced: int
    unchanged: int
    def __init__(self, results: _Optional[_Iterable[_Union[AddResult, _Mapping]]] = ..., added: _Optional[int] = ..., failed: _Optional[int] = ..., replaced: _Optional[int] = ..., unchanged: _Optional[int] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("text", "image", "code", "top_k", "radius", "modality", "rerank", "nprobe", "fresh")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RADIUS_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    FRESH_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    code: bytes
    top_k: int
    radius: int
    modality: Modality
    rerank: bool
    nprobe: int
    fresh: bool
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., code: _Optional[bytes] = ..., top_k: _Optional[int] = ..., radius: _Optional[int] = ..., modality: _Optional[_Union[Modality, str]] = ..., rerank: _Optional[bool] = ..., nprobe: _Optional[int] = ..., fresh: _Optional[bool] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "key", "distance", "score", "metadata", "modality")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    id: int
    key: str
    distance: int
    score: float
    metadata: _containers.ScalarMap[str, str]
    modality: Modality
    def __init__(self, id: _Optional[int] = ..., key: _Optional[str] = ..., distance: _Optional[int] = ..., score: _Optional[float] = ..., metadata: _Optional[_Mapping[str, str]] = ..., modality: _Optional[_Union[Modality, str]] = ...) -> None: ...

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
    __slots__ = ("queries",)
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[SearchRequest]
    def __init__(self, queries: _Optional[_Iterable[_Union[SearchRequest, _Mapping]]] = ...) -> None: ...

class SearchBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResponse, _Mapping]]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("ids", "keys", "modality")
    IDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    modality: Modality
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., keys: _Optional[_Iterable[str]] = ..., modality: _Optional[_Union[Modality, str]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Stats(_message.Message):
    __slots__ = ("images", "texts", "index_kind", "bits", "model", "gpu", "uptime_s", "index_params", "version")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    INDEX_KIND_FIELD_NUMBER: _ClassVar[int]
    BITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    INDEX_PARAMS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    images: int
    texts: int
    index_kind: str
    bits: int
    model: str
    gpu: bool
    uptime_s: float
    index_params: str
    version: str
    def __init__(self, images: _Optional[int] = ..., texts: _Optional[int] = ..., index_kind: _Optional[str] = ..., bits: _Optional[int] = ..., model: _Optional[str] = ..., gpu: _Optional[bool] = ..., uptime_s: _Optional[float] = ..., index_params: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...
