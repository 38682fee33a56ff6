"""What a request's reader receives from the decoding thread, and how it gets there.

A `Handle` carries one request's events: `Piece`s of text as they decode, then its `Completion` (or `Failed`). The
decoding thread must never wait for a reader, and a reader on an event loop must not be woken once per token per
request: events bound for a loop go through its `Mailbox`, one wake-up for all that were posted before it drained.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator

from llmcycle.infer.decode import Completion


@dataclass
class Piece:
    """Text decoded since the previous piece, and the tokens behind it (with log-probs when asked for)."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict] = field(default_factory=list)

    def joined(self, later: "Piece") -> "Piece":
        return Piece(self.text + later.text, self.token_ids + later.token_ids, self.logprobs + later.logprobs)


@dataclass
class Failed:
    message: str


class Mailbox:
    """Events bound for one event loop: the decoding thread appends, and wakes the loop once for everything
    posted before the loop drains (not once per event), so 16 rows cost one wake-up per step, not 16."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = weakref.ref(loop)  # the registry is keyed weakly by the loop: hold no strong reference
        self.pending: deque[tuple[asyncio.Queue, Any]] = deque()
        self.scheduled = False

    def post(self, target: asyncio.Queue, event: Any) -> None:
        self.pending.append((target, event))  # appended before the flag is read: a drain cannot miss it
        if not self.scheduled:
            loop = self._loop()
            if loop is None:
                raise RuntimeError("the event loop is gone")
            self.scheduled = True
            try:
                loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # closed: the next post tries (and fails) again
                self.scheduled = False
                raise

    def _drain(self) -> None:
        self.scheduled = False
        while self.pending:
            target, event = self.pending.popleft()
            target.put_nowait(event)


_MAILBOXES: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Mailbox]" = weakref.WeakKeyDictionary()
_MAILBOX_LOCK = threading.Lock()


def mailbox(loop: asyncio.AbstractEventLoop) -> Mailbox:
    with _MAILBOX_LOCK:
        box = _MAILBOXES.get(loop)
        if box is None:
            box = _MAILBOXES[loop] = Mailbox(loop)
        return box


class Handle:
    """One request's events, in order: Pieces, then its Completion (or Failed). Iterate it in a thread, or
    `async for` it on the event loop it was made for; `cancel()` frees its batch row at the next step.
    Pieces that arrived while the reader was busy come as one (the text, ids and log-probs joined), so a reader
    that falls behind the decoding catches up in one go instead of paying its per-piece cost for each."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None):
        self.loop = loop
        self.cancelled = False
        self._sync: queue.SimpleQueue = queue.SimpleQueue()
        self._async: asyncio.Queue | None = asyncio.Queue() if loop is not None else None
        self._mailbox = mailbox(loop) if loop is not None else None

    def put(self, event: Any) -> None:
        if self._async is None:
            self._sync.put(event)
            return
        try:
            self._mailbox.post(self._async, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled = True

    def cancel(self) -> None:
        self.cancelled = True

    def __iter__(self) -> Iterator[Any]:
        while True:
            event = self._sync.get()
            yield event
            if isinstance(event, (Completion, Failed)):
                return

    async def __aiter__(self):
        while True:
            event = await self._async.get()
            while isinstance(event, Piece) and not self._async.empty():
                later = self._async.get_nowait()
                if not isinstance(later, Piece):
                    yield event
                    event = later
                    break
                event = event.joined(later)
            yield event
            if isinstance(event, (Completion, Failed)):
                return
