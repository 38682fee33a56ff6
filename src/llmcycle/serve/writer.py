"""The server's one background writer: feedback-store and request-log writes leave the event loop.

A locked, full or read-only database (or disk) must not stall every client nor turn a finished generation into an
error, so writes go to a bounded queue drained by one thread, in order (a feedback row always follows the reply it
points at). Each write returns a future: a reply's record is fire-and-forget (a failure is counted and logged), a
feedback POST awaits its row's commit, so nothing is acknowledged that was not stored. A full queue drops the write,
counted the same way.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

from llmcycle.errors import UserError

log = logging.getLogger("llmcycle.serve")
_STOP = object()


class WriterFull(Exception):
    """The write queue is full: the write was dropped."""


class BackgroundWriter:
    """`submit(kind, fn, *args)` runs `fn(*args)` on the writer thread; `on_failure(kind, exc)` hears of every
    failed or dropped write except a KeyError or UserError (a missing row or a bad value is the caller's answer,
    not a store failure)."""

    def __init__(self, on_failure: Callable[[str, BaseException], None], capacity: int = 4096):
        self.on_failure = on_failure
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="llmcycle-writer", daemon=True)
        self._thread.start()

    def submit(self, kind: str, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            self._queue.put_nowait((kind, fn, args, future))
        except queue.Full:
            exc = WriterFull(f"{self._queue.maxsize} writes already waiting")
            self._failed(kind, exc)
            future.set_exception(exc)
        return future

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every write submitted so far is done; False if `timeout` ran out first."""
        marker = self.submit("flush", lambda: None)
        try:
            marker.exception(timeout)
        except TimeoutError:
            return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued writes (at most `timeout` seconds), then stop the thread."""
        try:
            self._queue.put((None, _STOP, (), None), timeout=timeout)
        except queue.Full:
            log.error("shutdown: the writer is stuck; %d writes not done", self._queue.qsize())
            return
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            kind, fn, args, future = self._queue.get()
            if fn is _STOP:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - the writer outlives any one bad write
                if not isinstance(exc, (KeyError, UserError)):
                    self._failed(kind, exc)
                future.set_exception(exc)

    def _failed(self, kind: str, exc: BaseException) -> None:
        log.error("%s write failed: %s: %s", kind, type(exc).__name__, exc)
        try:
            self.on_failure(kind, exc)
        except Exception:  # noqa: BLE001 - counting must not stop the writer
            log.exception("counting a failed write")
