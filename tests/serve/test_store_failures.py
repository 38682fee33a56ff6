"""A failing feedback store never fails a reply: writes run on the background writer, failures are counted in
/metrics, and a feedback POST is acknowledged only once its row is committed. A non-streaming request whose
client leaves is cancelled like a stream."""

from __future__ import annotations

import sqlite3
import time

import httpx

ASK = [{"role": "user", "content": "hello there, how are you doing today?"}]


def failures(live, kind: str) -> float:
    for line in httpx.get(live.url + "/metrics").text.splitlines():
        if line.startswith(f'llmcycle_store_failures_total{{kind="{kind}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_a_read_only_store_mid_run_still_completes_replies(start_live, make_tiny_model, tmp_path):
    from llmcycle.serve.config import ServeConfig

    db = tmp_path / "fb.db"
    live = start_live(ServeConfig(model=str(make_tiny_model("llama")), feedback_db=str(db), max_context=160,
                                  max_tokens=16, request_log=str(tmp_path / "requests.jsonl")))
    client = live.client()
    before = client.chat.completions.create(model="", messages=ASK, max_tokens=4, temperature=0)
    store = live.state.store
    assert live.state.writer.flush(10)
    with store._lock:  # the database turns read-only under the running server
        store._db.execute("PRAGMA query_only = ON")
    reply = client.chat.completions.create(model="", messages=ASK, max_tokens=4, temperature=0)
    streamed = list(client.chat.completions.create(model="", messages=ASK, max_tokens=4, temperature=0,
                                                   stream=True))
    assert reply.choices[0].finish_reason in ("length", "stop")
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] in ("length", "stop")
    assert live.state.writer.flush(10)
    assert failures(live, "response") == 2
    rated = httpx.post(live.url + "/v1/feedback", json={"response_id": before.id, "rating": 1})
    assert rated.status_code == 503 and rated.json()["error"]["code"] == "store_failed"  # not acknowledged
    assert failures(live, "feedback") == 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 1
    with store._lock:
        store._db.execute("PRAGMA query_only = OFF")
    rated = httpx.post(live.url + "/v1/feedback", json={"response_id": before.id, "rating": 1})
    assert rated.status_code == 200  # answered after the commit: the row is there
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == 1


def test_a_non_streaming_request_whose_client_leaves_is_cancelled(start_live, make_tiny_model):
    from llmcycle.serve.config import ServeConfig

    live = start_live(ServeConfig(model=str(make_tiny_model("llama")), feedback_db=None, max_context=4096,
                                  max_tokens=4000))
    scheduler = live.state.host.current.scheduler
    body = {"messages": ASK, "max_tokens": 4000, "min_tokens": 4000, "temperature": 0}
    try:
        httpx.post(live.url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(30, read=0.5))
    except httpx.ReadTimeout:
        pass  # the client gave up and closed its connection
    deadline = time.monotonic() + 30
    while scheduler.active and time.monotonic() < deadline:
        live.thread.join(0.01)
    assert scheduler.active == 0 and scheduler.tokens < 4000  # freed long before its 4000 tokens
