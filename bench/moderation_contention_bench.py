"""Moderation beside a busy Python thread: what a server's event loop pays while the decoding thread runs Python.

Moderation runs on the event loop; the scheduler thread decodes beside it, mostly in Python between torch calls.
Any numpy call that releases the GIL (fancy indexing, sorting, BLAS) makes the event loop wait for the GIL to come
back, up to the other thread's switch interval. This times `Moderator.check` on a prompt and a streamed reply
through `OutputGuard` (one piece at a time, as a server streams it), alone and beside a thread that spins in
Python, with the shipped code and with the numpy calls it replaced (fancy indexing for the weight rows, np.unique
for the features), in one run. Prints a table and writes JSON.

    python bench/moderation_contention_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from llmcycle.safety import classifier, growing
from llmcycle.safety.policy import Moderator
from llmcycle.serve.generation import OutputGuard

REPLY = ("The sea is a vast and beautiful body of water that covers most of our planet. It is home to countless "
         "creatures, from tiny plankton to enormous whales, and its waves shape the coastlines of every continent.")
PROMPT = ("Please summarise the following meeting notes for my team and list the action items. " * 60)[:4000]


def numpy_rows(weights, ids):
    return weights[ids]


def numpy_bucketed(crcs, buckets):
    if not crcs:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    ids = np.fromiter(crcs, np.int64, len(crcs)) % buckets
    uniq, counts = np.unique(ids, return_counts=True)
    vals = 1.0 + np.log(counts.astype(np.float32))
    return uniq, vals / np.linalg.norm(vals)


@contextmanager
def replaced_by_numpy():
    saved = classifier.weight_rows, growing.weight_rows, classifier.bucketed
    classifier.weight_rows = growing.weight_rows = numpy_rows
    classifier.bucketed = numpy_bucketed
    try:
        yield
    finally:
        classifier.weight_rows, growing.weight_rows, classifier.bucketed = saved


@contextmanager
def busy_thread(on: bool):
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            for i in range(1000):
                x += i

    thread = threading.Thread(target=spin, daemon=True)
    if on:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if on:
            thread.join()


def timed(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "moderation_contention.json"))
    args = parser.parse_args()
    moderator = Moderator()
    pieces = [w + " " for w in REPLY.split()]

    def stream() -> None:
        guard = OutputGuard(moderator)
        for piece in pieces:
            guard.feed(piece)
        guard.feed("", final=True)

    def prompt() -> None:
        moderator.check(PROMPT, "user")

    rows = []
    for code in ("shipped", "numpy calls"):
        for busy in (False, True):
            with busy_thread(busy), (replaced_by_numpy() if code != "shipped" else _nothing()):
                rows.append({"code": code, "beside a busy thread": busy,
                             "streamed reply ms (p50)": round(timed(stream, args.runs), 3),
                             "4,000-char prompt ms (p50)": round(timed(prompt, args.runs), 3)})
    for row in rows:
        print(row)
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average": os.getloadavg(),
              "reply_pieces": len(pieces), "runs": args.runs, "switch_interval_s": sys.getswitchinterval(),
              "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1))


@contextmanager
def _nothing():
    yield


if __name__ == "__main__":
    main()
