"""Micro-batching: concurrent requests are gathered into one call of a batch function."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

log = logging.getLogger(__name__)

_STOP = object()


class MicroBatcher:
    """Gathers items submitted from many threads and runs ``fn(items) -> results`` on batches.

    A batch closes when it holds ``max_batch`` items or ``max_wait_ms`` has passed since
    its first item arrived. ``fn`` runs on ``workers`` threads (one by default, so the
    model sees one forward pass at a time); with more, one worker gathers the next batch
    while the others run theirs, in arrival order. A failing batch fails each of its items
    with the error; ``fn`` may also return an exception in an item's place to fail that
    item alone.
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
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._gathering = threading.Lock()  # one worker forms a batch at a time
        self._threads = [
            threading.Thread(target=self._run, daemon=True,
                             name=f"crossbit-{name}" + (f"-{k}" if workers > 1 else ""))
            for k in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, item) -> Future:
        """Queue one item; the future resolves to its result."""
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        future: Future = Future()
        self._queue.put((item, future))
        return future

    def submit_many(self, items: Sequence) -> list[Future]:
        return [self.submit(item) for item in items]

    def __call__(self, items: Sequence, timeout: float | None = None) -> list:
        """Submit items and wait for all their results (raises the first error)."""
        futures = self.submit_many(items)
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for f in futures:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            out.append(f.result(timeout=remaining))
        return out

    def _run(self) -> None:
        while True:
            with self._gathering:
                batch, stop = self._gather()
            live = [(item, f) for item, f in batch if f.set_running_or_notify_cancel()]
            if live:
                self._execute(live)
            del batch, live  # the items (decoded images) go now, not when the next batch comes
            if stop:
                return

    def _gather(self) -> tuple[list, bool]:
        """The next batch and whether this worker should stop after it."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        batch = [first]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=max(0.0, remaining)) if remaining > 0 \
                    else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _execute(self, batch: list) -> None:
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
            for _ in self._threads:  # each worker takes one
                self._queue.put(_STOP)
            for thread in self._threads:
                thread.join(timeout=30)
