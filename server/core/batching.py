"""Micro-batching: concurrent requests are gathered into one call of a batch function, fairly
between callers, and without the items of callers who have gone."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from crossbit.server.core.calls import CallerGone, current

log = logging.getLogger(__name__)

_STOP = object()
_NO_CALLER = object()  # items submitted outside any call scope share one queue


class MicroBatcher:
    """Gathers items submitted from many threads and runs ``fn(items) -> results`` on batches.

    A batch closes when it holds ``max_batch`` items or ``max_wait_ms`` has passed since
    its first item arrived. ``fn`` runs on ``workers`` threads (one by default, so the
    model sees one forward pass at a time); with more, one worker gathers the next batch
    while the others run theirs. A failing batch fails each of its items with the error;
    ``fn`` may also return an exception in an item's place to fail that item alone.

    Fairness: each call (its :class:`~crossbit.server.core.calls.CallScope`) has its own queue,
    and a batch takes items from the calls in turn, so one call of a thousand items
    delays another call's single item by one batch, not by the thousand. An item whose
    call has expired (deadline passed, cancelled, caller gone) is dropped, never computed.
    """

    def __init__(self, fn: Callable[[list], Sequence], max_batch: int = 64,
                 max_wait_ms: float = 3.0, name: str = "batcher",
                 on_batch: Callable[[int], None] | None = None, workers: int = 1):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.name = name
        self.on_batch = on_batch
        self.computed = 0  # items handed to fn
        self.dropped = 0  # items of expired calls, never computed
        self._calls: OrderedDict = OrderedDict()  # scope -> deque of (item, future, scope)
        self._pending = 0
        self._stops = 0
        self._cond = threading.Condition()
        self._closed = False
        self._gathering = threading.Lock()  # one worker forms a batch at a time
        self._threads = [
            threading.Thread(target=self._run, daemon=True,
                             name=f"crossbit-{name}" + (f"-{k}" if workers > 1 else ""))
            for k in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, item) -> Future:
        """Queue one item for the current call; the future resolves to its result."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        future: Future = Future()
        scope = current()
        if scope is not None:
            scope.track(future)
        with self._cond:
            self._calls.setdefault(scope if scope is not None else _NO_CALLER, deque()).append(
                (item, future, scope))
            self._pending += 1
            self._cond.notify()
        return future

    def submit_many(self, items: Sequence) -> list[Future]:
        return [self.submit(item) for item in items]

    def __call__(self, items: Sequence, timeout: float | None = None) -> list:
        """Submit items and wait for all their results (raises the first error)."""
        futures = self.submit_many(items)
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        try:
            for f in futures:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                out.append(f.result(timeout=remaining))
        except BaseException:
            for f in futures:  # nobody waits for the rest any more
                f.cancel()
            raise
        return out

    def _run(self) -> None:
        while True:
            with self._gathering:
                batch, stop = self._gather()
            live = self._live(batch)
            if live:
                self._execute(live)
            del batch, live  # the items (decoded images) go now, not when the next batch comes
            if stop:
                return

    def _live(self, batch: list) -> list:
        """The batch's items whose callers still wait; the others' futures end here."""
        live = []
        for item, f, scope in batch:
            if scope is not None and scope.expired():
                self.dropped += 1
                if f.set_running_or_notify_cancel():
                    f.set_exception(CallerGone("the caller's deadline passed or it cancelled"))
            elif f.set_running_or_notify_cancel():
                live.append((item, f))
            else:
                self.dropped += 1
        return live

    def _take(self, limit: int) -> list:
        """Up to ``limit`` items, one from each waiting call in turn (round robin)."""
        taken = []
        while len(taken) < limit and self._calls:
            scope, items = next(iter(self._calls.items()))
            taken.append(items.popleft())
            self._pending -= 1
            if items:
                self._calls.move_to_end(scope)  # its next item waits for the others' turn
            else:
                del self._calls[scope]
        return taken

    def _gather(self) -> tuple[list, bool]:
        """The next batch and whether this worker should stop after it."""
        with self._cond:
            while not self._pending and not self._stops:
                self._cond.wait()
            if not self._pending:
                self._stops -= 1
                return [], True
            batch = self._take(self.max_batch)
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                if not self._pending:
                    if remaining <= 0 or self._stops:
                        break
                    self._cond.wait(remaining)
                    continue
                batch += self._take(self.max_batch - len(batch))
            return batch, False

    def _execute(self, batch: list) -> None:
        self.computed += len(batch)
        try:
            results = self.fn([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
        except BaseException as exc:  # every waiter hears about it; the worker lives on
            for _, f in batch:
                f.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch(len(batch))
        for (_, f), result in zip(batch, results):
            if isinstance(result, BaseException):  # that item failed, the rest did not
                f.set_exception(result)
            else:
                f.set_result(result)

    def close(self) -> None:
        """Finish what is queued, then stop the workers."""
        if not self._closed:
            self._closed = True
            with self._cond:
                self._stops += len(self._threads)
                self._cond.notify_all()
            for thread in self._threads:
                thread.join(timeout=30)
