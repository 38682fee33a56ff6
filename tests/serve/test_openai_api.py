"""The OpenAI API as the official client sees it, and the SSE bytes as plain HTTP sees them."""

from __future__ import annotations

import json
import sqlite3

import httpx
import openai
import pytest

HELLO = [{"role": "user", "content": "hello there, how are you doing today?"}]


def sse_events(raw: bytes) -> list:
    frames = [f for f in raw.decode("utf-8").split("\n\n") if f.strip()]
    assert all(f.startswith("data: ") for f in frames), frames
    return [f[6:] if f[6:] == "[DONE]" else json.loads(f[6:]) for f in frames]


def test_chat_completion_matches_the_engine(live_server):
    from llmcycle.infer import GenerationSettings

    client = live_server.client()
    reply = client.chat.completions.create(model="", messages=HELLO, max_tokens=12, temperature=0)
    engine = live_server.state.host.current.engine
    [expected] = engine.chat([HELLO], GenerationSettings(max_new_tokens=12, temperature=0))
    assert reply.choices[0].message.content == expected.text  # what we serve is what the engine decodes
    assert reply.choices[0].finish_reason == ("length" if expected.finish_reason == "length" else "stop")
    assert reply.usage.prompt_tokens == len(engine.encode_chat(HELLO))
    assert reply.usage.completion_tokens == len(expected.token_ids)
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
    assert live_server.state.writer.flush(10)  # replies are recorded off the event loop
    with sqlite3.connect(live_server.db) as db:  # every reply is recorded for feedback
        row = db.execute("SELECT completion, messages FROM responses WHERE id = ?", (reply.id,)).fetchone()
    assert row[0] == expected.text and json.loads(row[1]) == HELLO


def test_stream_with_usage_and_n(live_server):
    client = live_server.client()
    chunks = list(client.chat.completions.create(model="", messages=HELLO, max_tokens=10, temperature=0.8, seed=3,
                                                 n=2, stream=True, stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    texts = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    finishes = [ch.finish_reason for c in chunks[:-1] for ch in c.choices if ch.finish_reason]
    assert sorted(finishes) and set(finishes) <= {"stop", "length"} and len(finishes) == 2
    again = client.chat.completions.create(model="", messages=HELLO, max_tokens=10, temperature=0.8, seed=3, n=2)
    assert [c.message.content for c in again.choices] == [texts[0], texts[1]]  # seeded: same replies


def test_sse_bytes(live_server):
    body = {"model": "", "messages": HELLO, "max_tokens": 6, "stream": True, "temperature": 0,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", live_server.url + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join(response.iter_bytes())
    assert raw.endswith(b"data: [DONE]\n\n")
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    assert events[0]["object"] == "chat.completion.chunk" and events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-2]["choices"] == [] and "usage" in events[-2]
    assert events[-3]["choices"][0]["finish_reason"] in ("stop", "length")


def test_completions_with_logprobs_and_stop(live_server):
    client = live_server.client()
    out = client.completions.create(model="", prompt="hello there", max_tokens=8, temperature=0, logprobs=2)
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == out.usage.completion_tokens == len(lp.token_logprobs)
    assert all(v <= 0 for v in lp.token_logprobs) and all(len(t) <= 2 for t in lp.top_logprobs)
    text = out.choices[0].text
    if len(text.strip()) > 2:
        stop = text.strip()[1:3]
        cut = client.completions.create(model="", prompt="hello there", max_tokens=8, temperature=0, stop=[stop])
        assert stop not in cut.choices[0].text and cut.choices[0].finish_reason == "stop"
    chat = client.chat.completions.create(model="", messages=HELLO, max_tokens=4, temperature=0, logprobs=True,
                                          top_logprobs=3)
    assert len(chat.choices[0].logprobs.content) == chat.usage.completion_tokens
    assert all(len(t.top_logprobs) == 3 for t in chat.choices[0].logprobs.content)


def test_models_and_extras(live_server):
    client = live_server.client()
    [model] = client.models.list().data
    reply = client.chat.completions.create(model=model.id, messages=HELLO, max_tokens=8, seed=3,
                                           extra_body={"top_k": 5, "min_p": 0.1, "repetition_penalty": 1.3,
                                                       "no_repeat_ngram_size": 2})
    assert reply.model == model.id and reply.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("kwargs,error", [
    ({"model": "no-such-model"}, openai.NotFoundError),
    ({"messages": []}, openai.BadRequestError),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, openai.BadRequestError),
    ({"max_tokens": 100000}, openai.BadRequestError),
    ({"n": 50}, openai.BadRequestError),
    ({"temperature": "hot"}, openai.BadRequestError),
    ({"messages": [{"role": "user", "content": "word " * 400}]}, openai.BadRequestError),
])
def test_errors_map_to_client_exceptions(live_server, kwargs, error):
    args = {"model": "", "messages": HELLO, "max_tokens": 4, **kwargs}
    with pytest.raises(error) as info:
        live_server.client().chat.completions.create(**args)
    assert info.value.body["message"] and "Traceback" not in info.value.body["message"]


def test_raw_http_errors(live_server):
    url = live_server.url
    bad_json = httpx.post(url + "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"
    huge = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 30000}]})
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
    assert httpx.get(url + "/v1/nowhere").status_code == 404
    assert httpx.post(url + "/admin/reload", json={}).status_code == 401  # admin key required
    unknown = httpx.post(url + "/v1/feedback", json={"response_id": "chatcmpl-none", "rating": 1})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "response_not_found"
    assert httpx.post(url + "/v1/feedback", json={"response_id": "x", "rating": 5}).status_code == 400


def test_feedback_rating_and_pair_land_in_sqlite(live_server):
    client = live_server.client()
    pair = client.chat.completions.create(model="", messages=HELLO, max_tokens=6, n=2, temperature=1.0, seed=1)
    ids = [c.model_extra["response_id"] for c in pair.choices]
    up = httpx.post(live_server.url + "/v1/feedback", json={"response_id": ids[0], "rating": -1, "comment": "meh"})
    choice = httpx.post(live_server.url + "/v1/feedback", json={"chosen_id": ids[1], "rejected_id": ids[0]})
    assert up.status_code == 200 and choice.status_code == 200
    with sqlite3.connect(live_server.db) as db:
        rows = db.execute("SELECT kind, response_id, rating, rejected_id, comment FROM feedback WHERE response_id IN "
                          "(?, ?) ORDER BY id", ids).fetchall()
    assert rows[-2:] == [("rating", ids[0], -1, None, "meh"), ("pairwise", ids[1], None, ids[0], "")]


def test_health_metrics_and_request_log(live_server):
    live_server.client().chat.completions.create(model="", messages=[{"role": "user", "content":
                                                 "mail me at jo.doe@example.com"}], max_tokens=3)
    health = httpx.get(live_server.url + "/health").json()
    assert health["status"] == "ok" and health["continuous_batching"] is True
    metrics = httpx.get(live_server.url + "/metrics").text
    for name in ("llmcycle_requests_total", "llmcycle_completion_tokens_total", "llmcycle_time_to_first_token_seconds",
                 "llmcycle_queue_depth", "llmcycle_batch_occupancy", "llmcycle_moderation_decisions_total"):
        assert name in metrics
    assert 'category="S7"' in metrics  # the email was redacted on the way in, and counted
    log = live_server.state.cfg.request_log
    assert live_server.state.writer.flush(10)
    lines = [json.loads(line) for line in open(log, encoding="utf-8")]
    assert lines and all("jo.doe@example.com" not in json.dumps(r) for r in lines)
    assert any("<EMAIL>" in json.dumps(r) and "input:S7:redact" in r["moderation"] for r in lines)
