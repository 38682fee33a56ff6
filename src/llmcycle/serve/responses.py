"""OpenAI response bodies: a whole reply (`collect`) or server-sent event chunks (`stream`), for chat and text.

Each finished choice is handed to `on_choice(job, index, text, finish_reason, completion_tokens)` (which records
it in the feedback store) before the client sees its end, so feedback can refer to it at once.
"""

from __future__ import annotations

import json
import time
from typing import Any, AsyncIterator, Callable

from llmcycle.infer.continuous import Failed, Piece
from llmcycle.infer.engine import Completion
from llmcycle.safety import Moderator
from llmcycle.serve.generation import (Job, OutputGuard, cancel, chat_logprobs, events, failed, finish_reason,
                                       sse, text_logprobs, usage)
from llmcycle.serve.tools import ParsedReply, parse_reply

OnChoice = Callable[[Job, int, str, str, int], None]


def _calls(job: Job, text: str, reason: str) -> ParsedReply | None:
    """The reply's tool calls when the request offered tools (a filtered reply is never read as a call)."""
    if not job.tool_names or reason == "content_filter":
        return None
    return parse_reply(text, job.tool_names)


def _choice(job: Job, index: int, text: str, reason: str, logprobs: list[dict] | None) -> dict:
    if job.kind == "chat":
        message = {"role": "assistant", "content": text, "refusal": None}
        parsed = _calls(job, text, reason)
        if parsed is not None:
            message.update(content=parsed.content, tool_calls=parsed.calls)
            reason = "tool_calls"
        body = {"index": index, "message": message,
                "logprobs": chat_logprobs(logprobs) if logprobs is not None else None, "finish_reason": reason}
    else:
        body = {"index": index, "text": text, "logprobs": text_logprobs(logprobs) if logprobs is not None else None,
                "finish_reason": reason}
    if job.n > 1:
        body["response_id"] = job.choice_id(index)
    return body


def _envelope(job: Job, chunk: bool = False) -> dict:
    kind = ("chat.completion.chunk" if chunk else "chat.completion") if job.kind == "chat" else "text_completion"
    return {"id": job.rid, "object": kind, "created": job.created, "model": job.served.name,
            "system_fingerprint": job.served.model_hash or None}


def refusal_body(job: Job, on_choice: OnChoice) -> dict:
    text = job.refusal.refusal
    for i in range(job.n):
        on_choice(job, i, text, "content_filter", 0)
    return {**_envelope(job), "choices": [_choice(job, i, text, "content_filter", None) for i in range(job.n)],
            "usage": usage(0, 0)}


async def collect(job: Job, moderator: Moderator, on_choice: OnChoice) -> dict:
    if job.refusal is not None:
        return refusal_body(job, on_choice)
    finals: dict[int, Completion] = {}
    logprobs: dict[int, list[dict]] = {i: [] for i in range(job.n)}
    want_logprobs = job.request.logprob_count is not None
    try:
        async for index, event in events(job):
            if isinstance(event, Piece):
                if job.first_token is None:
                    job.first_token = time.perf_counter()
                logprobs[index] += event.logprobs
            elif isinstance(event, Failed):
                raise failed(event)
            else:
                finals[index] = event
    finally:
        cancel(job)
    choices, tokens = [], 0
    for i in range(job.n):
        completion = finals[i]
        guard = OutputGuard(moderator)
        guard.feed(completion.text, logprobs[i], final=True)
        job.moderation += guard.flags()
        reason = finish_reason(completion, guard)
        text = guard.blocked.refusal if guard.blocked else guard.sent
        on_choice(job, i, text, reason, completion.completion_tokens)
        choices.append(_choice(job, i, text, reason, guard.ready_logprobs() if want_logprobs else None))
        tokens += completion.completion_tokens
    return {**_envelope(job), "choices": choices, "usage": usage(len(job.prompt_ids), tokens)}


def _delta_chunk(job: Job, index: int, text: str | None, reason: str | None, logprobs: list[dict] | None,
                 first: bool = False) -> dict:
    if job.kind == "chat":
        delta: dict[str, Any] = {"role": "assistant", "content": text or ""} if first else {}
        if text and not first:
            delta["content"] = text
        choice = {"index": index, "delta": delta,
                  "logprobs": chat_logprobs(logprobs) if logprobs else None, "finish_reason": reason}
    else:
        choice = {"index": index, "text": text or "", "logprobs": text_logprobs(logprobs) if logprobs else None,
                  "finish_reason": reason}
    if job.n > 1:
        choice["response_id"] = job.choice_id(index)
    return {**_envelope(job, chunk=True), "choices": [choice]}


class ContentFrames:
    """The SSE frames of one response's content deltas, from a template per choice: the envelope and the choice's
    fixed fields are encoded once, so a streamed token costs the JSON encoding of its text alone (the frame is
    byte for byte `sse(_delta_chunk(job, index, text, None, None))`)."""

    MARK = "\x00content\x00"

    def __init__(self, job: Job):
        self.job = job
        self.parts: dict[int, tuple[bytes, bytes]] = {}

    def __call__(self, index: int, text: str) -> bytes:
        parts = self.parts.get(index)
        if parts is None:
            frame = sse(_delta_chunk(self.job, index, self.MARK, None, None))
            head, _, tail = frame.partition(json.dumps(self.MARK).encode())
            parts = self.parts[index] = (head, tail)
        return parts[0] + json.dumps(text, ensure_ascii=False).encode("utf-8") + parts[1]


def _tool_chunk(job: Job, index: int, parsed: ParsedReply) -> dict:
    """One delta with every call complete (its arguments whole: they are only known once they parse)."""
    calls = [{"index": i, **call} for i, call in enumerate(parsed.calls)]
    chunk = _delta_chunk(job, index, None, None, None)
    chunk["choices"][0]["delta"] = {"tool_calls": calls}
    return chunk


async def stream(job: Job, moderator: Moderator, on_choice: OnChoice) -> AsyncIterator[bytes]:
    """SSE bytes: a first chunk per choice (chat: the role), content deltas, a chunk with each finish_reason,
    a usage chunk with `choices: []` when asked for, then `data: [DONE]`. A client that goes away cancels its
    choices at once (this generator is closed), which frees their batch rows."""
    try:
        async for chunk in _stream_chunks(job, moderator, on_choice):
            yield chunk
    finally:
        cancel(job)


async def _stream_chunks(job: Job, moderator: Moderator, on_choice: OnChoice) -> AsyncIterator[bytes]:
    want_logprobs = job.request.logprob_count is not None
    if job.kind == "chat":
        for i in range(job.n):
            yield sse(_delta_chunk(job, i, "", None, None, first=True))
    if job.refusal is not None:
        for i in range(job.n):
            on_choice(job, i, job.refusal.refusal, "content_filter", 0)
            yield sse(_delta_chunk(job, i, job.refusal.refusal, None, None))
            yield sse(_delta_chunk(job, i, None, "content_filter", None))
        if job.request.include_usage:
            yield sse({**_envelope(job, chunk=True), "choices": [], "usage": usage(0, 0)})
        yield b"data: [DONE]\n\n"
        return
    guards = [OutputGuard(moderator) for _ in range(job.n)]
    frames = ContentFrames(job)
    held: list[list[Piece]] = [[] for _ in range(job.n)]
    tokens = 0
    async for index, event in events(job):
        guard = guards[index]
        if isinstance(event, Failed):
            yield sse({"error": failed(event).body()["error"]})
            break
        if isinstance(event, Piece):
            if job.first_token is None:
                job.first_token = time.perf_counter()
            if job.tool_names:  # a reply that may be a tool call is judged and sent whole, once it can be parsed
                held[index].append(event)
                continue
            text = guard.feed(event.text, event.logprobs if want_logprobs else ())
            entries = guard.ready_logprobs()
            if entries:
                yield sse(_delta_chunk(job, index, text, None, entries))
            elif text:
                yield frames(index, text)
            if guard.blocked is not None:
                job.handles[index].cancel()  # stop generating what will not be shown
            continue
        pending = held[index]  # empty unless tools are on
        rest = guard.feed("".join(p.text for p in pending),
                          [e for p in pending for e in p.logprobs] if want_logprobs else (),
                          final=True) if guard.blocked is None else ""
        entries = guard.ready_logprobs()
        reason = finish_reason(event, guard)
        if job.tool_names:
            rest = "" if guard.blocked else guard.sent
            parsed = _calls(job, rest, reason)
            if parsed is not None:
                rest, reason = parsed.content, "tool_calls"
                yield sse(_tool_chunk(job, index, parsed))
        if rest or entries:
            yield sse(_delta_chunk(job, index, rest, None, entries or None))
        job.moderation += guard.flags()
        tokens += event.completion_tokens
        on_choice(job, index, guard.blocked.refusal if guard.blocked else guard.sent, reason,
                  event.completion_tokens)
        yield sse(_delta_chunk(job, index, None, reason, None))
    if job.request.include_usage:
        yield sse({**_envelope(job, chunk=True), "choices": [], "usage": usage(len(job.prompt_ids), tokens)})
    yield b"data: [DONE]\n\n"
