"""What an index call may know of its caller: the deadline, and whether it must see every write."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)
_fresh: contextvars.ContextVar[bool] = contextvars.ContextVar("fresh", default=False)


@contextmanager
def within(deadline: float | None = None, fresh: bool = False) -> Iterator[None]:
    """Index calls inside see ``deadline`` (``time.monotonic()`` seconds, None: none) and
    ``fresh`` (read every write acknowledged before the call, by any server).

    The in-process FAISS kinds are always fresh and never wait; the milvus kind bounds
    its retries by the deadline and reads with Strong consistency when fresh.
    """
    d, f = _deadline.set(deadline), _fresh.set(fresh)
    try:
        yield
    finally:
        _deadline.reset(d)
        _fresh.reset(f)


def remaining(default: float) -> float:
    """Seconds left before the caller's deadline (``default`` when it has none)."""
    deadline = _deadline.get()
    return default if deadline is None else deadline - time.monotonic()


def fresh() -> bool:
    return _fresh.get()
