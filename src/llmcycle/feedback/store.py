"""The feedback store: every served reply and what users said of it, in one SQLite file (WAL).

`llmcycle serve` records each reply it returns (`record_response`), then thumbs (`add_rating`) and pairwise
choices (`add_preference`) that point at those replies. A row keeps the full conversation, the decoding settings
and the served model's artifact hash, so it can become a training record later (`data --source feedback`). A
commit is durable against the process being killed (WAL, synchronous=NORMAL): an acknowledged row survives.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from llmcycle.errors import DataError

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,            -- the API response id (chatcmpl-..., cmpl-...)
    created REAL NOT NULL,
    model TEXT NOT NULL,            -- the served model's name
    model_hash TEXT NOT NULL,       -- its artifact hash (manifest outputs), '' when unknown
    messages TEXT NOT NULL,         -- JSON: the conversation the reply answers (system/user/assistant turns)
    completion TEXT NOT NULL,       -- the reply's text
    settings TEXT NOT NULL,         -- JSON: the decoding settings used
    finish_reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('rating', 'pairwise')),
    response_id TEXT NOT NULL REFERENCES responses(id),   -- rated reply, or the chosen one of a pair
    rating INTEGER,                                       -- +1 up, -1 down (kind = rating)
    rejected_id TEXT REFERENCES responses(id),            -- the other reply of a pair (kind = pairwise)
    comment TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS feedback_response ON feedback(response_id);
"""


@dataclass(frozen=True)
class Response:
    id: str
    created: float
    model: str
    model_hash: str
    messages: list[dict]
    completion: str
    settings: dict
    finish_reason: str


@dataclass(frozen=True)
class Feedback:
    id: int
    created: float
    kind: str  # "rating" | "pairwise"
    response_id: str
    rating: int | None
    rejected_id: str | None
    comment: str


class FeedbackStore:
    """Thread-safe: one connection guarded by a lock (SQLite serialises writers anyway)."""

    def __init__(self, path: str | Path, timeout: float = 30.0):
        """`timeout`: seconds a statement waits for another process's lock before it fails."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                       timeout=timeout)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DataError(f"{self.path}: not a feedback database ({exc})") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "FeedbackStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- writes -------------------------------------------------------------------------------------------
    def record_response(self, response_id: str, model: str, messages: list[dict], completion: str,
                        settings: dict, finish_reason: str, model_hash: str = "") -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (response_id, time.time(), model, model_hash, json.dumps(messages, ensure_ascii=False), completion,
                 json.dumps(settings, sort_keys=True, default=str), finish_reason))

    def add_rating(self, response_id: str, rating: int, comment: str = "") -> int:
        if rating not in (1, -1):
            raise DataError(f"rating must be 1 (up) or -1 (down), got {rating!r}")
        return self._add("rating", response_id, rating, None, comment)

    def add_preference(self, chosen_id: str, rejected_id: str, comment: str = "") -> int:
        if chosen_id == rejected_id:
            raise DataError("a pairwise choice needs two different responses")
        return self._add("pairwise", chosen_id, None, rejected_id, comment)

    def _add(self, kind: str, response_id: str, rating: int | None, rejected_id: str | None, comment: str) -> int:
        with self._lock:
            for rid in (response_id, rejected_id):
                if rid is not None and not self._db.execute("SELECT 1 FROM responses WHERE id = ?",
                                                            (rid,)).fetchone():
                    raise KeyError(rid)  # the server maps it to a 404; callers that want a message catch it
            cur = self._db.execute(
                "INSERT INTO feedback (created, kind, response_id, rating, rejected_id, comment) "
                "VALUES (?, ?, ?, ?, ?, ?)", (time.time(), kind, response_id, rating, rejected_id, comment))
            return int(cur.lastrowid)

    # ---- reads --------------------------------------------------------------------------------------------
    def response(self, response_id: str) -> Response | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM responses WHERE id = ?", (response_id,)).fetchone()
        return None if row is None else _response(row)

    def responses(self) -> Iterator[Response]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM responses ORDER BY created, id").fetchall()
        return (_response(r) for r in rows)

    def feedback(self, kind: str | None = None) -> Iterator[Feedback]:
        query, args = "SELECT * FROM feedback", ()
        if kind is not None:
            query, args = query + " WHERE kind = ?", (kind,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return (Feedback(*r) for r in rows)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, rating, COUNT(*) FROM feedback GROUP BY kind, rating").fetchall()
            responses = self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        out = {"responses": int(responses), "up": 0, "down": 0, "pairwise": 0}
        for kind, rating, n in rows:
            key = "pairwise" if kind == "pairwise" else ("up" if rating == 1 else "down")
            out[key] += int(n)
        return out


def _response(row: tuple) -> Response:
    rid, created, model, model_hash, messages, completion, settings, finish = row
    return Response(rid, created, model, model_hash, json.loads(messages), completion, json.loads(settings), finish)
