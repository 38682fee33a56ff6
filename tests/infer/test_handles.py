"""A request's events reach an event loop with one wake-up per batch of posts, and a reader that fell behind gets the
pieces it missed as one piece, in order, with nothing lost."""

from __future__ import annotations

import asyncio
import threading

from llmcycle.infer.decode import Completion
from llmcycle.infer.handles import Failed, Handle, Piece


def read_after_posts(events: list, handles: int = 1) -> tuple[list[list], int]:
    """Post `events` to each of `handles` handles from another thread before the loop reads anything; what each
    reader then gets, and how often the decoding thread woke the loop."""

    async def main() -> tuple[list[list], int]:
        loop = asyncio.get_running_loop()
        wakeups = []
        original = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a: wakeups.append(1) or original(*a)  # this test's own loop
        made = [Handle(loop) for _ in range(handles)]

        def produce() -> None:
            for event in events:
                for handle in made:
                    handle.put(event)

        thread = threading.Thread(target=produce)
        thread.start()
        thread.join()
        return [[e async for e in handle] for handle in made], len(wakeups)

    return asyncio.run(main())


def test_pieces_a_reader_missed_arrive_joined_and_in_order():
    done = Completion("a b c", [1, 2, 3], "length", 4)
    pieces = [Piece("a ", [1], [{"token": "a"}]), Piece("b ", [2], [{"token": "b"}]), Piece("c", [3], [])]
    (got,), wakeups = read_after_posts(pieces + [done])
    assert got == [Piece("a b c", [1, 2, 3], [{"token": "a"}, {"token": "b"}]), done]
    assert wakeups == 1


def test_many_handles_share_one_wakeup_and_a_failure_ends_each():
    events = [Piece("x", [7]), Failed("generation failed: boom")]
    got, wakeups = read_after_posts(events, handles=16)
    assert got == [[Piece("x", [7]), Failed("generation failed: boom")]] * 16
    assert wakeups == 1


def test_a_thread_reader_gets_every_piece_unjoined():
    handle = Handle()
    done = Completion("ab", [1, 2], "eos", 1)
    for event in (Piece("a", [1]), Piece("b", [2]), done):
        handle.put(event)
    assert list(handle) == [Piece("a", [1]), Piece("b", [2]), done]
