"""What both clients share: channel options, the retry policy, and the requests they send (typed
metadata included; an item the client cannot send is refused alone, by position)."""

from __future__ import annotations

import io
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence

import grpc
import numpy as np

from crossbit.v1 import crossbit_pb2 as pb

MODALITY = {"image": pb.IMAGE, "text": pb.TEXT}
RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
MAX_MESSAGE_BYTES = 64 << 20
INT64 = (-(2**63), 2**63 - 1)


def channel_options(max_message_bytes: int, round_robin: bool) -> list[tuple[str, object]]:
    """gRPC channel options of both clients: message sizes both ways (gRPC's default is
    4 MB), and client-side round robin over every address the target resolves to."""
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes)]
    if round_robin:
        options.append(("grpc.lb_policy_name", "round_robin"))
    return options


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def retry_delays(retries: int, retry: bool = True) -> Iterator[float | None]:
    """The retry policy: before each attempt, the seconds to wait first (0 for the first
    attempt, then exponential backoff with jitter, at most 2 s); the attempt after the last
    is None (give up). Only UNAVAILABLE is retried (``RETRYABLE``)."""
    attempts = 1 + max(0, retries) if retry else 1
    for attempt in range(attempts):
        yield 0.0 if attempt == 0 else min(2.0, 0.1 * 2 ** (attempt - 1)) * (0.5 + random.random())
    yield None


def modality_enum(name: str) -> int:
    if name not in MODALITY:
        raise ValueError(f"modality must be 'image' or 'text', got {name!r}")
    return MODALITY[name]


# -- typed metadata ------------------------------------------------------------------------------

def wire_value(name: str, value) -> pb.Value:
    """A metadata value as sent: str, int, float, bool or a list of str, kept as it is.

    Raises:
        ValueError: naming the field, for a value that cannot be kept (None, a dict, NaN...).
    """
    if isinstance(value, bool):
        return pb.Value(bool_value=value)
    if isinstance(value, (int, np.integer)):
        if not INT64[0] <= int(value) <= INT64[1]:
            raise ValueError(f"metadata field {name!r}: {value} does not fit 64 bits")
        return pb.Value(int_value=int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"metadata field {name!r}: {value} is not a finite number")
        return pb.Value(float_value=float(value))
    if isinstance(value, str):
        return pb.Value(string_value=value)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return pb.Value(tags=pb.StringList(values=list(value)))
    raise ValueError(f"metadata field {name!r}: a {type(value).__name__} cannot be kept (send "
                     "strings, integers, floats, booleans or lists of strings)")


def attributes(meta: dict | None) -> dict[str, pb.Value]:
    return {str(k): wire_value(str(k), v) for k, v in (meta or {}).items()}


# -- items to add ---------------------------------------------------------------------------------

class Prepared:
    """The items of an add as sent, and the positions the client refused itself, with why."""

    def __init__(self, n: int, keys: Sequence[str] | None):
        self.keys = [((keys[i] if keys is not None else "") or "") for i in range(n)]
        self.sent: list[int] = []  # caller's position of each sent item
        self.refused: dict[int, tuple[str, str]] = {}  # position -> (status name, reason)

    def refuse(self, position: int, code: str, why: str) -> None:
        self.refused[position] = (code, why)


def text_items(texts: Sequence[str], keys, metadata, prepared: Prepared) -> list[pb.TextItem]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings")
    out = []
    for n, t in enumerate(texts):
        try:
            typed = attributes(metadata[n] if metadata else None)
        except ValueError as exc:
            prepared.refuse(n, "INVALID_ARGUMENT", str(exc))
            continue
        prepared.sent.append(n)
        out.append(pb.TextItem(text=t, key=(keys[n] if keys else "") or "", attributes=typed))
    return out


def image_items(images, keys, metadata, prepared: Prepared,
                collection: str = "") -> Iterator[pb.ImageItem]:
    """The stream of an add: a file that cannot be read, or metadata that cannot be sent,
    refuses that image alone (named in its refusal) and the others go on."""
    first = True
    for n, image in enumerate(images):
        key = prepared.keys[n] if keys is not None else _key_for(image)
        prepared.keys[n] = key
        try:
            typed = attributes(metadata[n] if metadata is not None else None)
            data = _image_bytes(image)
        except (OSError, ValueError, TypeError) as exc:
            what = f"{image}: " if isinstance(image, (str, os.PathLike)) else ""
            prepared.refuse(n, "INVALID_ARGUMENT", f"{what}{_reason(exc)}")
            continue
        prepared.sent.append(n)
        yield pb.ImageItem(key=key or "", image=data, attributes=typed,
                           collection=collection if first else "")
        first = False


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "a folder, not an image file"
    if isinstance(exc, PermissionError):
        return "not readable (permission denied)"
    return str(exc)


def _image_bytes(image) -> bytes:
    """Bytes, a path, or a PIL image (encoded as PNG) -> bytes."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as f:
            return f.read()
    if hasattr(image, "save"):  # a PIL image, without importing PIL here
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue()
    raise TypeError(f"expected image bytes, a path or a PIL image, got {type(image).__name__}")


def _key_for(image) -> str:
    """A default key: the file's absolute path (so two folders' IMG_0001.jpg stay two items,
    and adding the same file again replaces it); none for bytes and PIL images."""
    if isinstance(image, (str, os.PathLike)):
        return os.path.realpath(image)
    return ""


# -- other requests -------------------------------------------------------------------------------

def search_request(text=None, image=None, code=None, top_k=10, radius=None, modality="image",
                   rerank=None, nprobe=0, fresh=False, filter=None, collection=None,
                   offset=0, min_score=None) -> pb.SearchRequest:
    given = [x is not None for x in (text, image, code)]
    if sum(given) != 1:
        raise ValueError("search needs exactly one of text=, image= or code=")
    request = pb.SearchRequest(top_k=top_k, modality=modality_enum(modality),
                               nprobe=nprobe, fresh=fresh, filter=filter or "",
                               collection=collection or "", offset=offset)
    if text is not None:
        if not isinstance(text, str):
            raise TypeError("text must be a string")
        request.text = text
    elif image is not None:
        request.image = _image_bytes(image)
    else:
        request.code = np.asarray(code, dtype=np.uint8).tobytes() \
            if not isinstance(code, bytes) else code
    if radius is not None:
        request.radius = radius
    if rerank is not None:
        request.rerank = rerank
    if min_score is not None:
        request.min_score = min_score
    return request


def encode_request(texts, images, embeddings: bool, collection: str = "") -> pb.EncodeRequest:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings")
    return pb.EncodeRequest(texts=list(texts), images=[_image_bytes(i) for i in images],
                            return_embeddings=embeddings, collection=collection)


def named(ids, keys) -> tuple[list[int], list[str]]:
    if isinstance(keys, str):
        raise TypeError("keys must be a list of strings, not one string")
    return [int(i) for i in ids], list(keys)


class Progress:
    """A small progress line on stderr, only on a terminal (tqdm is not a client dependency);
    or a caller's own ``progress(n)`` callback."""

    def __init__(self, total: int, progress):
        self.callback = progress if callable(progress) else None
        self.total, self.done = total, 0
        self.enabled = self.callback is None and bool(progress) and total > 0 and \
            sys.stderr.isatty()
        self.start = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(n)
        elif self.enabled:
            rate = self.done / max(time.monotonic() - self.start, 1e-9)
            sys.stderr.write(f"\r\x1b[Kadding images: {self.done}/{self.total} ({rate:.1f}/s)")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def credentials(tls: bool | str | None):
    if not tls:
        return None
    root = None
    if isinstance(tls, (str, os.PathLike)):
        with open(tls, "rb") as f:
            root = f.read()
    return grpc.ssl_channel_credentials(root_certificates=root)
