"""One call's scope: its deadline and whether its caller is still there, so queued work for a caller
who has gone (deadline passed, cancelled, disconnected) is dropped instead of computed."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager

_current: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar("call", default=None)


class CallerGone(TimeoutError):
    """The caller's deadline passed or it cancelled: its queued work was dropped."""


class CallScope:
    """The work one call queued (futures of the micro-batchers) and when it stops mattering.

    A batcher asks :meth:`expired` before it computes an item and drops the item when it is;
    :meth:`cancel` (the caller gave up, the call failed, or the client disconnected) cancels
    every future of the call that has not started.
    """

    __slots__ = ("deadline", "_cancelled", "_futures", "_lock")

    def __init__(self, deadline: float | None = None):
        self.deadline = deadline  # time.monotonic() seconds, or None
        self._cancelled = False
        self._futures: list[Future] = []
        self._lock = threading.Lock()

    def expired(self) -> bool:
        return self._cancelled or (self.deadline is not None and time.monotonic() >= self.deadline)

    def track(self, future: Future) -> None:
        with self._lock:
            if self._cancelled:
                future.cancel()
            else:
                self._futures.append(future)

    def cancel(self, *_) -> None:
        """Stop every queued item of this call (callable as a gRPC termination callback)."""
        with self._lock:
            self._cancelled = True
            futures, self._futures = self._futures, []
        for future in futures:
            future.cancel()


def current() -> CallScope | None:
    """The scope of the call running on this thread (None outside any)."""
    return _current.get()


def check_caller() -> None:
    """Raise CallerGone when the call running on this thread has expired or was cancelled
    (asked between the items of a call, before each decode)."""
    scope = _current.get()
    if scope is not None and scope.expired():
        raise CallerGone("the caller's deadline passed or it cancelled: the rest of its items "
                         "were not computed")


@contextmanager
def call_scope(timeout: float | None = None, on_done=None) -> Iterator[CallScope]:
    """Run one call in a scope: work it queues is tracked, and cancelled when the block ends
    by an exception (a deadline, a refusal, the caller gone) so no one computes it for nobody.

    Args:
        timeout: seconds the caller allows (None: no deadline).
        on_done: a function that registers a callback for when the caller goes away (gRPC's
            ``context.add_callback``); the scope's :meth:`CallScope.cancel` is given to it.
    """
    scope = CallScope(None if timeout is None else time.monotonic() + timeout)
    if on_done is not None:
        on_done(scope.cancel)
    token = _current.set(scope)
    try:
        yield scope
    except BaseException:
        scope.cancel()
        raise
    finally:
        _current.reset(token)


@contextmanager
def ensure_scope(timeout: float | None = None) -> Iterator[CallScope]:
    """The current call's scope, or a new one for ``timeout`` when the caller made none (the
    core called directly, the web API)."""
    scope = current()
    if scope is not None:
        yield scope
        return
    with call_scope(timeout) as scope:
        yield scope
