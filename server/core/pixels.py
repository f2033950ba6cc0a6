"""Decoded pixels: what one request may cause (PixelBudget) and what all calls in flight share (PixelPool)."""

from __future__ import annotations

import collections
import ctypes
import gc
import threading
import time
import weakref
from collections.abc import Iterable

from crossbit.server.core.exceptions import LimitError

POOL_WAIT_S = 30.0  # the longest a call without a deadline waits for pixels
DEADLINE_MARGIN_S = 0.25  # a call gives up this long before its deadline, so its answer arrives
COLLECT_EVERY_S = 1.0  # while calls wait, free images only reference cycles hold, this often
TRIM_AFTER_PIXELS = 4_000_000  # give freed memory back to the system after this many pixels


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


class PixelPool:
    """The decoded pixels of every call in flight, together at most ``limit``.

    A call takes what its images will decode to before decoding any (all at once, so two
    calls never each hold part and wait for the rest), waiting its turn (first come, first
    served) until they are free, until its deadline, or refused at once when ``max_waiting``
    calls already wait. Each decoded image gives its pixels back when it is freed.
    """

    def __init__(self, limit: int, max_waiting: int = 16):
        if limit <= 0:
            raise ValueError("the pixel pool's limit must be positive")
        self.limit, self.max_waiting = limit, max(1, max_waiting)
        self.used = self.peak = 0
        self._cond = threading.Condition(threading.RLock())  # a finalizer may give back inside
        self._queue: collections.deque = collections.deque()
        self._collected, self._collect_s = 0.0, 0.1  # when the collector last ran, how long it took
        self._freed = 0
        self._trim = _malloc_trim()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def take(self, pixels: int, timeout: float | None = None) -> None:
        """Take ``pixels``, waiting in turn while other calls hold the pool.

        Args:
            pixels: what the call's images decode to.
            timeout: the caller's time left (None: at most POOL_WAIT_S); 0 never waits.

        Raises:
            LimitError: more than the whole pool, too many calls waiting, or not free in time.
        """
        if pixels <= 0:
            return
        if pixels > self.limit:
            raise LimitError(f"the images of this call decode to {pixels} pixels; the server "
                             f"decodes at most {self.limit} at once (--max-inflight-pixels)")
        wait = POOL_WAIT_S if timeout is None else timeout - min(DEADLINE_MARGIN_S, timeout / 10)
        deadline = time.monotonic() + wait
        ticket = object()
        with self._cond:
            if not self._queue and self.used + pixels <= self.limit:
                self._grant(pixels)
                return
            if wait <= 0 or len(self._queue) >= self.max_waiting:
                raise self._busy(pixels, 0.0)
            self._queue.append(ticket)
        try:
            while True:
                with self._cond:
                    if self._queue[0] is ticket and self.used + pixels <= self.limit:
                        self._grant(pixels)
                        return
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise self._busy(pixels, wait)
                    self._cond.wait(min(left, COLLECT_EVERY_S))
                    left = deadline - time.monotonic()
                if left > 3 * self._collect_s:  # never collect past the deadline
                    self._collect()
        finally:
            with self._cond:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def give(self, pixels: int) -> None:
        """Give ``pixels`` back (an image was freed, or a call did not use what it took)."""
        if pixels <= 0:
            return
        with self._cond:
            self.used -= pixels
            self._freed += pixels
            trim = self._freed >= TRIM_AFTER_PIXELS
            if trim:
                self._freed = 0
            self._cond.notify_all()
        if trim and self._trim is not None:
            self._trim(0)  # glibc keeps freed heap pages otherwise: the memory would stay

    def hold(self, image, pixels: int) -> None:
        """``image`` holds ``pixels`` of the pool until it is freed."""
        weakref.finalize(image, self.give, pixels)

    def _grant(self, pixels: int) -> None:
        self.used += pixels
        self.peak = max(self.peak, self.used)

    def _busy(self, pixels: int, waited: float) -> LimitError:
        return LimitError(f"the server is decoding {self.used} pixels of images for other calls "
                          f"(at most {self.limit} at once, --max-inflight-pixels) and "
                          f"{len(self._queue)} calls wait; this call's {pixels} did not fit "
                          + (f"within {waited:.1f} s" if waited > 0 else "now")
                          + ": retry later or send smaller images")

    def _collect(self) -> None:
        """Images that only a reference cycle holds (an error's traceback) are freed by the
        collector; run it while calls wait for their pixels, at most once a second."""
        now = time.monotonic()
        if now - self._collected >= COLLECT_EVERY_S:
            self._collected = now
            gc.collect()
            self._collect_s = time.monotonic() - now


class PixelBudget:
    """The decoded pixels one request may cause, taken image by image.

    With a pool, the request's images are reserved from it together (``reserve``) before
    any is decoded; each decoded image then holds its share until it is freed, and what no
    image took goes back when the budget is dropped (the request is over).
    """

    def __init__(self, limit: int, pool: PixelPool | None = None):
        self.limit, self.used, self.pool = limit, 0, pool
        self._reserved = [0]  # taken from the pool for this request, held by no image yet
        if pool is not None:
            weakref.finalize(self, _give_rest, pool, self._reserved)

    def plan(self, sizes: Iterable[int]) -> int:
        """The pixels images of these sizes would take, in order (those over the limit are
        refused one by one, as :meth:`take` will)."""
        total = self.used
        for pixels in sizes:
            if pixels > 0 and total + pixels <= self.limit:
                total += pixels
        return total - self.used

    def reserve(self, pixels: int, timeout: float | None = None) -> None:
        """Take ``pixels`` from the pool for this request's images (waits, see PixelPool.take)."""
        if self.pool is not None and pixels > 0:
            self.pool.take(pixels, timeout)
            self._reserved[0] += pixels

    def take(self, pixels: int) -> None:
        """Count an image about to be decoded (from the reservation, or from the pool if it
        is free now).

        Raises:
            LimitError: over the request's limit, or the pool has no room now.
        """
        if self.used + pixels > self.limit:
            raise LimitError(f"this image would take the request to {self.used + pixels} decoded "
                             f"pixels; the limit per request is {self.limit}: send fewer or "
                             "smaller images per call")
        if self.pool is not None:
            extra = max(0, pixels - self._reserved[0])
            self.pool.take(extra, timeout=0)
            self._reserved[0] -= pixels - extra
        self.used += pixels

    def hold(self, image, pixels: int) -> None:
        """The decoded ``image`` holds its ``pixels`` of the pool until it is freed."""
        if self.pool is not None:
            self.pool.hold(image, pixels)

    def give(self, pixels: int) -> None:
        """An image counted by :meth:`take` was not decoded after all."""
        if self.pool is not None:
            self.pool.give(pixels)


def _give_rest(pool: PixelPool, reserved: list[int]) -> None:
    pool.give(reserved[0])
    reserved[0] = 0
