"""Moderation: hazard categories, the block/redact/flag policy, on the way in and on the way out."""

from __future__ import annotations

import asyncio

import pytest

from llmcycle.errors import ConfigError
from llmcycle.safety import CATEGORIES, Moderator, classify, parse_policy


def test_taxonomy_is_the_mlcommons_one():
    assert list(CATEGORIES) == [f"S{i}" for i in range(1, 15)]
    assert CATEGORIES["S9"] == "indiscriminate_weapons" and CATEGORIES["S7"] == "privacy"


def test_block_redact_pass():
    seen = []
    moderator = Moderator(listeners=[seen.append])
    blocked = moderator.check("How do I make a pipe bomb at home?", "input")
    assert blocked.blocked and blocked.blocked_by == "S9" and "can't help" in blocked.refusal
    redacted = moderator.check("write to jo.doe@example.com or call 555-123-4567", "input")
    assert redacted.action == "redact" and redacted.text == "write to <EMAIL> or call <PHONE>"
    clean = moderator.check("what is a good name for a cat?", "input")
    assert clean.action == "allow" and clean.text == "what is a good name for a cat?"
    assert [d.action for d in seen] == ["block", "redact"]  # every decision with a hit is reported
    assert moderator.check("I want to kill myself", "output").blocked_by == "S11"
    assert classify("that movie was shit") == []  # profanity is rude, not a hazard


def test_policy_overrides():
    policy = parse_policy("S9=flag,s7=allow")
    moderator = Moderator(policy)
    assert moderator.check("how to make a bomb", "input").action == "flag"
    assert moderator.check("mail jo@example.com", "input").action == "allow"
    assert all(a == "allow" for a in parse_policy("off").values())
    with pytest.raises(ConfigError, match="S99"):
        parse_policy("S99=block")
    with pytest.raises(ConfigError, match="unknown action"):
        parse_policy("S1=explode")


def test_input_messages_redacted_but_system_kept():
    moderator = Moderator()
    decision, messages = moderator.check_messages([{"role": "system", "content": "mail admin@example.com"},
                                                   {"role": "user", "content": "I am at 10.0.0.1"}])
    assert decision.action == "redact"
    assert messages == [{"role": "system", "content": "mail admin@example.com"},
                        {"role": "user", "content": "I am at <IP>"}]


class FakeHandle:
    def __init__(self, events):
        self.events, self.cancelled = events, False

    def cancel(self):
        self.cancelled = True

    async def __aiter__(self):
        for event in self.events:
            yield event


def _job(pieces, stream):
    from types import SimpleNamespace

    from llmcycle.infer.continuous import Piece
    from llmcycle.infer.engine import Completion
    from llmcycle.infer.settings import GenerationSettings
    from llmcycle.serve.generation import Job
    from llmcycle.serve.schemas import ChatRequest

    request = ChatRequest(messages=[{"role": "user", "content": "hi"}], stream=stream)
    served = SimpleNamespace(name="m", model_hash="h")
    events = [Piece(p, [1]) for p in pieces] + [Completion("".join(pieces), [1] * len(pieces), "eos", 3)]
    job = Job("chat", served, request, "chatcmpl-x", 0, [], [1, 2, 3], GenerationSettings())
    job.handles = [FakeHandle(events)]
    return job


@pytest.mark.parametrize("stream", [False, True])
def test_output_side_block_and_redact(stream):
    from llmcycle.serve.generation import sse  # noqa: F401  (the same module the server uses)
    from llmcycle.serve.responses import collect
    from llmcycle.serve.responses import stream as sse_stream

    async def reply(pieces):
        job, recorded = _job(pieces, stream), []
        on_choice = lambda j, i, text, reason, n: recorded.append((text, reason))  # noqa: E731
        if not stream:
            body = await collect(job, Moderator(), on_choice)
            return body["choices"][0]["message"]["content"], body["choices"][0]["finish_reason"], recorded, job
        import json

        text, reason = "", None
        async for chunk in sse_stream(job, Moderator(), on_choice):
            data = chunk.decode()[6:].strip()
            if data != "[DONE]":
                for choice in json.loads(data)["choices"]:
                    text += choice["delta"].get("content") or ""
                    reason = choice["finish_reason"] or reason
        return text, reason, recorded, job

    text, reason, recorded, job = asyncio.run(reply(["Sure. ", "First get a ", "pipe bomb ", "kit and"]))
    assert reason == "content_filter" and "pipe bomb" not in text and recorded[0][1] == "content_filter"
    if stream:
        assert job.handles[0].cancelled  # generation stops once the reply is blocked
    text, reason, recorded, _ = asyncio.run(reply(["Mail ", "me at jo@example.com ", "today."]))
    assert text == "Mail me at <EMAIL> today." and reason == "stop" and recorded[0][0] == text
    text, reason, _, _ = asyncio.run(reply(["A cat ", "named Tom."]))
    assert text == "A cat named Tom." and reason == "stop"


def test_streamed_reply_is_checked_where_text_can_be_released(monkeypatch):
    """The classifier reads the whole reply, so it runs when a check could release text (a word ended), not for
    every token; nothing is released unchecked and the end of the reply is always checked."""
    from llmcycle.serve.generation import OutputGuard

    moderator = Moderator(parse_policy("S7=flag"))  # no redaction: text is released at word boundaries
    checked: list[str] = []
    check = moderator.check
    monkeypatch.setattr(moderator, "check", lambda text, *a, **k: checked.append(text) or check(text, *a, **k))
    guard = OutputGuard(moderator)
    shown = [guard.feed(piece) for piece in ["Hel", "lo", " wor", "ld", "s"]]
    assert shown == ["", "", "Hello ", "", ""] and checked == ["Hello wor"]
    assert guard.feed("", final=True) == "worlds" and checked[-1] == "Hello worlds"
