"""Safety against a live server: streamed redaction leaks no digit of a phone or card number (checked on the SSE
bytes, the feedback store and the request log), and a huge hostile prompt neither stalls the server nor takes
long to answer."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time

import httpx
import pytest

from llmcycle.infer.continuous import Piece
from llmcycle.infer.engine import Completion

PHONE, CARD = "415-555-0132", "4111 1111 1111 1111"
REPLY = f"Sure! Call me at {PHONE} or pay with card {CARD} before noon."


# Numbers split across many one- and two-character pieces, right after ordinary text, and the IBAN and
# international phone forms: (reply, the pieces a tokenizer would send, what the client must see).
SHAPES = {
    "one_char_pieces": ("Dial 415 555 0132 or use 5500 0000 0000 0004 now.", r".", "Dial <PHONE> or use <CARD> now."),
    "after_text": ("Number:4111111111111111, phone:415-555-0132.", r"\S{1,3}|\s",
                   "Number:<CARD>, phone:<PHONE>."),
    "iban": ("Pay GB82 WEST 1234 5698 7654 32 by Friday.", r"\s?\S{1,2}|\s", "Pay <IBAN> by Friday."),
    "international": ("Ring +44 20 7946 0958 or +1 (415) 555-0132 later.", r"\s?\S{1,2}|\s",
                      "Ring <PHONE> or <PHONE> later."),
}


class ScriptedHandle:
    """What the scheduler hands back, saying REPLY a few characters at a time (as a tokenizer would)."""

    def __init__(self, text: str, logprobs: bool, split: str = r"\s?\S{1,2}|\s"):
        self.text, self.logprobs, self.cancelled, self.split = text, logprobs, False, split

    def cancel(self) -> None:
        self.cancelled = True

    async def __aiter__(self):
        tokens = re.findall(self.split, self.text)
        for i, token in enumerate(tokens):
            entries = [{"token": token, "logprob": -0.5, "top_logprobs": [{"token": token, "logprob": -0.5}]}]
            yield Piece(token, [i], entries if self.logprobs else [])
        yield Completion(self.text, list(range(len(tokens))), "eos", 3)


@pytest.fixture
def scripted(start_live, make_tiny_model, tmp_path):
    from llmcycle.serve.config import ServeConfig

    cfg = ServeConfig(model=str(make_tiny_model("llama")), feedback_db=str(tmp_path / "feedback.db"),
                      request_log=str(tmp_path / "requests.jsonl"), max_context=160, max_tokens=64,
                      max_body_bytes=400_000)
    live = start_live(cfg)
    live.script = (REPLY, r"\s?\S{1,2}|\s")
    scheduler = live.state.host.current.scheduler
    scheduler.submit = lambda ids, settings, logprobs, loop: ScriptedHandle(live.script[0], logprobs is not None,
                                                                            live.script[1])
    return live


def sse_payloads(raw: bytes) -> list[dict]:
    lines = [line[6:] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


def strings(value) -> list[str]:
    """Every text a client can read in a choice: strings, and the UTF-8 `bytes` lists of chat log-probs."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in (strings(v) if k != "bytes" else [bytes(v).decode()])]
    if isinstance(value, list):
        return [t for v in value for t in strings(v)]
    return []


def streamed(live, route: str) -> list[dict]:
    """The SSE payloads of one streamed request with log-probs, read from the raw bytes."""
    body = {"model": "", "max_tokens": 60, "stream": True, "logprobs": True}
    body.update({"messages": [{"role": "user", "content": "how do I reach you?"}], "top_logprobs": 1}
                if "chat" in route else {"prompt": "how do I reach you?", "logprobs": 1})
    raw = b""
    with httpx.stream("POST", live.url + route, json=body, timeout=30) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            raw += chunk
    return sse_payloads(raw)


def shown_text(payloads: list[dict]) -> str:
    return "".join(choice.get("text") or (choice.get("delta") or {}).get("content") or ""
                   for payload in payloads for choice in payload["choices"])


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
def test_streamed_reply_never_sends_a_digit_of_phone_or_card(scripted, route):
    payloads = streamed(scripted, route)
    assert shown_text(payloads) == "Sure! Call me at <PHONE> or pay with card <CARD> before noon."
    sent = [text for payload in payloads for choice in payload["choices"] for text in strings(choice)]
    assert sum("<PHONE>" in text for text in sent) >= 2  # the log-probs came along, masked
    assert not [text for text in sent if re.search(r"\d", text)]  # no channel carries a digit of either number
    first = next(i for i, p in enumerate(payloads) if shown_text([p]))
    assert shown_text(payloads[:first + 1]) == "Sure! "  # the first word is not held back behind a window
    assert scripted.state.writer.flush(10)
    stored = sqlite3.connect(scripted.db).execute("SELECT * FROM responses").fetchall()
    logged = (scripted.db.parent / "requests.jsonl").read_text()
    for kept in (repr(stored), logged):
        assert "<PHONE>" in kept and "<CARD>" in kept and "0132" not in kept and "1111 1111" not in kept


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_no_shape_of_number_leaks_a_digit(scripted, shape):
    reply, split, expected = SHAPES[shape]
    scripted.script = (reply, split)
    payloads = streamed(scripted, "/v1/chat/completions")
    assert shown_text(payloads) == expected
    sent = [text for payload in payloads for choice in payload["choices"] for text in strings(choice)]
    assert not [text for text in sent if re.search(r"\d|WEST", text)]


def test_huge_hostile_prompt_neither_stalls_nor_lingers(scripted):
    """A 100,000-character prompt of the shape that once took minutes: answered within 1 s while /health keeps
    answering in under 100 ms (measured from another client while the request is in flight)."""
    done = threading.Event()
    answer: dict = {}

    def hostile() -> None:
        began = time.perf_counter()
        body = {"model": "", "max_tokens": 8, "messages": [{"role": "user", "content": "1." * 50_000}]}
        response = httpx.post(scripted.url + "/v1/chat/completions", json=body, timeout=30)
        answer.update(status=response.status_code, seconds=time.perf_counter() - began, body=response.json())
        done.set()

    worker = threading.Thread(target=hostile)
    with httpx.Client(base_url=scripted.url, timeout=5) as client:
        worker.start()
        waits = []
        while not done.is_set() or not waits:
            began = time.perf_counter()
            assert client.get("/health").status_code == 200
            waits.append(time.perf_counter() - began)
    worker.join()
    assert answer["seconds"] < 1.0, answer
    assert answer["status"] == 200 and answer["body"]["choices"][0]["finish_reason"] == "content_filter"
    assert max(waits) < 0.1, waits
