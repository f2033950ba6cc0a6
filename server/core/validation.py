"""Every check of a request to the core, in one place: texts, images, batch sizes, items, queries."""

from __future__ import annotations

import json
import math

from crossbit.indexer.metadata_rule import check_metadata
from crossbit.server.config import ServerConfig
from crossbit.server.core.exceptions import LimitError
from crossbit.server.core.images import decode_image, image_pixels
from crossbit.server.core.pixels import PixelBudget, PixelPool
from crossbit.server.core.requests import MODALITIES, NewItem, Query

MAX_KEY_CHARS = 1024
MAX_METADATA_BYTES = 64 * 1024


class RequestChecks:
    """The service's limits (``ServerConfig``) applied to one request's parts; each raises
    ValueError or TypeError for bad input and LimitError for input over a limit."""

    def __init__(self, config: ServerConfig):
        self.config = config
        # every call in flight decodes from one pool; half the workers may wait on it
        self.pool = PixelPool(config.max_inflight_pixels, max_waiting=config.workers // 2)

    def text(self, text) -> str:
        if not isinstance(text, str):
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError("text is empty")
        if len(text) > self.config.max_text_chars:
            raise LimitError(f"text is {len(text)} characters; the limit is "
                             f"{self.config.max_text_chars}")
        return text

    def budget(self, images=(), timeout: float | None = None) -> PixelBudget:
        """The decoded pixels one request may cause, with what its images (the bytes among
        ``images``; anything else is skipped) decode to taken from the server's pool.

        Args:
            images: the request's payloads, in the order they will be decoded.
            timeout: the caller's time left: how long to wait for the pool.

        Raises:
            LimitError: the pool has no room for them within the timeout.
        """
        config = self.config
        budget = PixelBudget(min(config.max_request_pixels, config.max_inflight_pixels), self.pool)
        sizes = [image_pixels(data, config.max_image_bytes, config.max_pixels)
                 for data in images if isinstance(data, (bytes, bytearray, memoryview))]
        budget.reserve(budget.plan(sizes), timeout)
        return budget

    def decode(self, data: bytes, budget: PixelBudget | None = None):
        """Image bytes to RGB, within the byte, pixel and request limits."""
        return decode_image(data, self.config.max_image_bytes, self.config.max_pixels, budget)

    def batch(self, n: int, what: str) -> None:
        if n > self.config.max_batch_items:
            raise LimitError(f"{n} {what} in one request; the limit is "
                             f"{self.config.max_batch_items}")

    def item(self, item: NewItem) -> None:
        """An item to add, but its payload (checked as a text or decoded as an image)."""
        if not isinstance(item.key, str) or len(item.key) > MAX_KEY_CHARS:
            raise ValueError(f"key must be a string of at most {MAX_KEY_CHARS} characters")
        if item.id is not None and item.id < 0:
            raise ValueError(f"id must be >= 0, got {item.id}")
        self.metadata(item.metadata)

    def metadata(self, metadata) -> dict:
        """Typed metadata (strings, integers, floats, booleans, lists of strings), within the
        size limit; ValueError naming the field whose value cannot be kept as sent."""
        if not isinstance(metadata, dict):
            raise TypeError("metadata must be a map of field names to values")
        check_metadata(metadata)
        if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
            raise LimitError(f"metadata is over {MAX_METADATA_BYTES} bytes")
        return metadata

    def query(self, q: Query, bits: int) -> None:
        """A query's shape and ranges (its text, if any, is checked by :meth:`text`)."""
        given = [x is not None for x in (q.text, q.image, q.code)]
        if sum(given) != 1:
            raise ValueError("a query needs exactly one of text, image or code")
        if not isinstance(q.top_k, int) or q.top_k < 0 or q.top_k > self.config.max_top_k:
            raise ValueError(f"top_k must be between 1 and {self.config.max_top_k} "
                             f"(0 means {self.config.default_top_k}), got {q.top_k}")
        if q.radius is not None and not 0 <= q.radius <= bits:
            raise ValueError(f"radius must be between 0 and {bits}, got {q.radius}")
        if q.nprobe < 0 or q.nprobe > 65536:
            raise ValueError(f"nprobe must be between 0 and 65536, got {q.nprobe}")
        if q.code is not None and len(q.code) != bits // 8:
            raise ValueError(f"code must be {bits // 8} bytes for {bits}-bit codes in this "
                             f"collection, got {len(q.code)}")
        top_k = q.top_k or self.config.default_top_k
        if not isinstance(q.offset, int) or q.offset < 0 or \
                q.offset + top_k > self.config.max_top_k:
            raise ValueError(f"offset + top_k must be at most {self.config.max_top_k} (the "
                             f"deepest page), got {q.offset} + {top_k}")
        if q.min_score is not None and not math.isfinite(q.min_score):
            raise ValueError(f"min_score must be a finite number, got {q.min_score}")
        if q.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {q.modality!r}")

