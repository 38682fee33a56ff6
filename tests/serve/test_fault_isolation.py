"""One request's failure is its own: a row that raises inside a decode step fails that request alone while the
batch's other streams run to their end, and request fields the engine cannot take are 400s naming the field."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from llmcycle.infer import continuous

POISON = 424242
STREAMS = 8
TOKENS = 40
ASK = [{"role": "user", "content": "tell me a long story about a cat"}]


def _poison(monkeypatch, live):
    """Sequence_.accept (every chosen token, alone or batched, goes through it), except that the request seeded POISON waits (in its first decode step) until the 8
    streams are queued behind it, then raises at its next step, while they share its batch."""
    scheduler = live.state.host.current.scheduler
    seen = {"blocked": threading.Event(), "running_at_raise": None}
    original = continuous.Sequence_.accept

    def accept(self, token, logits):
        if self.settings.seed == POISON and self.step == 1:
            seen["blocked"].set()
            deadline = time.monotonic() + 30
            while len(scheduler.waiting) < STREAMS and time.monotonic() < deadline:
                threading.Event().wait(0.005)
        elif self.settings.seed == POISON and self.step >= 2:
            seen["running_at_raise"] = len(scheduler.running)
            raise RuntimeError("poisoned row")
        return original(self, token, logits)

    monkeypatch.setattr(continuous.Sequence_, "accept", accept)
    return seen


def _stream(client, out: list, index: int) -> None:
    try:
        chunks = list(client.chat.completions.create(
            model="", messages=ASK, max_tokens=TOKENS, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={"min_tokens": TOKENS}))
        out[index] = chunks
    except Exception as exc:  # noqa: BLE001 - reported by the assertion below
        out[index] = exc


def test_a_poisoned_row_fails_alone_while_eight_streams_finish(live_server, monkeypatch):
    seen = _poison(monkeypatch, live_server)
    client = live_server.client()
    poisoned: dict = {}

    def poison() -> None:
        try:
            client.chat.completions.create(model="", messages=ASK, max_tokens=TOKENS, temperature=1.0,
                                           seed=POISON, extra_body={"min_tokens": TOKENS})
        except openai.APIStatusError as exc:
            poisoned["error"] = exc

    first = threading.Thread(target=poison)
    first.start()
    assert seen["blocked"].wait(30)
    results: list = [None] * STREAMS
    threads = [threading.Thread(target=_stream, args=(client, results, i)) for i in range(STREAMS)]
    for t in threads:
        t.start()
    for t in threads + [first]:
        t.join(60)
    assert seen["running_at_raise"] == STREAMS + 1  # it failed inside a step the 8 shared
    error = poisoned["error"]
    assert error.status_code == 500 and error.body["code"] == "generation_failed"
    assert "poisoned row" in error.body["message"]
    for chunks in results:
        assert not isinstance(chunks, Exception), chunks
        assert chunks[-1].usage.completion_tokens == TOKENS
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    # the server keeps serving afterwards
    monkeypatch.undo()
    reply = client.chat.completions.create(model="", messages=ASK, max_tokens=4, temperature=0)
    assert reply.choices[0].finish_reason in ("length", "stop")


@pytest.mark.parametrize("field,value", [("seed", 2 ** 64), ("seed", -(2 ** 63) - 1), ("top_k", -1),
                                         ("max_tokens", 10 ** 12), ("n", 10 ** 6), ("top_logprobs", 10 ** 6)])
def test_out_of_range_fields_are_400s_naming_them(live_server, field, value):
    body = {"messages": ASK, "max_tokens": 4, field: value}
    if field == "top_logprobs":
        body["logprobs"] = True
    reply = httpx.post(live_server.url + "/v1/chat/completions", json=body, timeout=30)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == field


@pytest.mark.parametrize("extra", [{"seed": 2 ** 63 - 1, "n": 3, "temperature": 1.0}, {"top_k": 10 ** 12},
                                   {"no_repeat_ngram_size": 10 ** 9}, {"repetition_penalty": 1e300},
                                   {"temperature": 1e300}, {"min_p": 0.999999}, {"stop": ["x" * 5000]}])
def test_extreme_in_range_values_are_served(live_server, extra):
    body = {"messages": ASK, "max_tokens": 4, **extra}
    reply = httpx.post(live_server.url + "/v1/chat/completions", json=body, timeout=30)
    assert reply.status_code == 200, reply.text


def test_shutdown_drains_then_cancels_what_is_in_flight(start_live, make_tiny_model, tmp_path):
    from llmcycle.serve.config import ServeConfig

    live = start_live(ServeConfig(model=str(make_tiny_model("llama")), feedback_db=None, max_context=4096,
                                  max_tokens=4000, drain_seconds=1))
    scheduler = live.state.host.current.scheduler
    events = live.client().chat.completions.create(model="", messages=ASK, max_tokens=4000, temperature=0,
                                                   stream=True, extra_body={"min_tokens": 4000})
    next(iter(events))  # generating
    live.stop()  # what SIGTERM does: stop accepting, drain for drain_seconds, cancel the rest
    assert not live.thread.is_alive()
    assert not scheduler._thread.is_alive() and scheduler.active == 0
    received = 0
    try:
        for chunk in events:  # what was sent before the cut, then the end: nothing hangs
            received += bool(chunk.choices and chunk.choices[0].delta.content)
    except (httpx.HTTPError, openai.APIError):
        pass
    assert received < 4000  # cancelled, not run to its end


def test_a_request_failing_at_prefill_fails_alone(live_server, monkeypatch):
    original = continuous.Sequence_.accept

    def accept(self, token, logits):
        if self.settings.seed == POISON:
            raise ValueError("poisoned prompt")
        return original(self, token, logits)

    monkeypatch.setattr(continuous.Sequence_, "accept", accept)
    client = live_server.client()
    outcomes: list = [None] * 4

    def ask(i: int) -> None:
        try:
            outcomes[i] = client.chat.completions.create(model="", messages=ASK, max_tokens=8, temperature=1.0,
                                                         seed=POISON if i == 0 else i)
        except openai.APIStatusError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes[0].status_code == 500 and "poisoned prompt" in outcomes[0].body["message"]
    assert all(o.choices[0].finish_reason in ("length", "stop") for o in outcomes[1:])
