"""How the milvus kind writes rows: primary keys from keys and ids, chunked expressions, field
encodings, and reading Milvus's errors."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator, Sequence

import numpy as np

from crossbit.indexer.items import StoreError


class MilvusUnavailable(StoreError):
    """Milvus did not answer within the deadline, or refused the call: UNAVAILABLE."""


def b64(data: bytes | None) -> str:
    return base64.b64encode(data).decode() if data else ""


def key_id(key: str) -> int:
    """The id of a keyed item on the milvus kind: 63 bits of SHA-256 of the key's UTF-8.

    Every server computes the same id for a key without asking anyone, so two servers adding
    one key at the same moment write the same primary key and leave one row (a collision of
    two keys needs about 3e9 keys for a one-in-a-billion chance).
    """
    digest = hashlib.sha256(b"crossbit-key\0" + key.encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def chunks(values: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


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
