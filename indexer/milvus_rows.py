"""How the milvus kind writes rows: primary keys from keys and ids, chunked expressions, field
encodings, and reading Milvus's errors."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence

import numpy as np

from crossbit.indexer.items import StoreError

EXPR_BYTES = 200_000  # longest filter expression sent (lists are split to stay below it)


class MilvusUnavailable(StoreError):
    """Milvus did not answer within the deadline, or refused the call: UNAVAILABLE."""


def b64(data: bytes | None) -> str:
    return base64.b64encode(data).decode() if data else ""


def key_pk(key: str) -> str:
    return "k" + key.encode().hex()


def id_pk(item_id: int) -> str:
    return f"i{int(item_id)}"


def quoted(pks: Sequence[str]) -> str:
    return "[" + ",".join(f'"{p}"' for p in pks) + "]"  # pks are [a-z0-9-] only


def chunks(values: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def pk_chunks(pks: Sequence[str]) -> Iterator[list[str]]:
    chunk, size = [], 0
    for pk in pks:
        if chunk and size + len(pk) + 3 > EXPR_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(pk)
        size += len(pk) + 3
    if chunk:
        yield chunk


def message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split())[:300]


def connection_trouble(text: str) -> bool:
    text = text.lower()
    return any(s in text for s in ("failed to connect", "unavailable", "connection refused",
                                   "retry timeout", "deadline", "socket closed",
                                   "connection reset", "not ready", "server is stopping",
                                   "channel", "timed out", "timeout"))


def code_bytes(code) -> bytes:
    return bytes(code[0] if isinstance(code, list) else code)


def same_vector(stored, emb: list[float]) -> bool:
    return len(stored) == len(emb) and np.array_equal(np.asarray(stored, np.float32),
                                                      np.asarray(emb, np.float32))
