"""From an API request to scheduler handles and back: settings, moderation, the reply records and response bodies.

Both endpoints share one path: `prepare` checks limits and builds the prompt ids and settings (a blocked prompt
short-cuts to a refusal), `start` submits one handle per choice, and `collect`/`stream` turn the handles' events
into OpenAI bodies or SSE chunks; output moderation looks at every piece before it is sent.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

from llmcycle.errors import UserError
from llmcycle.infer.continuous import Failed, Piece, QueueFull
from llmcycle.infer.engine import Completion
from llmcycle.infer.settings import GenerationSettings
from llmcycle.safety import Decision, Moderator
from llmcycle.safety.categories import growing_judge
from llmcycle.safety.growing_pii import GrowingScan
from llmcycle.safety.pii import Span, open_start, open_word, pulled_before, replace_spans, safe_cut
from llmcycle.serve.errors import APIError
from llmcycle.serve.host import Served
from llmcycle.serve.structured import plan

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}
# A word at least this long is released before it ends, up to where an e-mail, URL, key or IP could still be under
# way (`open_word`): a reply without spaces is not held back to its end. Shorter words wait for their end, as
# releasing inside them would only cost more checks and chunks.
LONG_WORD = 24


@dataclass
class Job:
    """One accepted request: what was asked, on which model, and its choices' handles."""

    kind: str  # "chat" | "text"
    served: Served
    request: Any
    rid: str
    created: int
    messages: list[dict]  # the conversation as the model sees it (input-redacted)
    prompt_ids: list[int]
    settings: GenerationSettings
    refusal: Decision | None = None  # set when the prompt was blocked: no generation runs
    handles: list[Any] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    completion_tokens: int = 0
    moderation: list[str] = field(default_factory=list)  # "side:category:action" per decision with a hit
    replies: dict[int, tuple[str, str]] = field(default_factory=dict)  # index -> (text, finish_reason)
    tool_names: list[str] = field(default_factory=list)  # replies are read back for calls to these

    @property
    def n(self) -> int:
        return self.request.n

    def choice_id(self, index: int) -> str:
        """The id feedback refers to: the response id, suffixed by the choice index when n > 1."""
        return self.rid if self.n == 1 else f"{self.rid}-{index}"


def new_id(kind: str) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{secrets.token_hex(12)}"


def check_model(request: Any, served: Served) -> None:
    if request.model and request.model not in (served.name, served.path):
        raise APIError(404, f"the model {request.model!r} does not exist (this server serves {served.name!r})",
                       "model", "model_not_found")


def build_settings(request: Any, served: Served, cfg: Any, index: int = 0) -> GenerationSettings:
    wanted = request.requested_tokens or cfg.default_max_tokens
    if wanted > cfg.max_tokens:
        raise APIError(400, f"max_tokens is {wanted}, this server allows at most {cfg.max_tokens}", "max_tokens",
                       "max_tokens_exceeded")
    if request.n > cfg.max_n:
        raise APIError(400, f"n is {request.n}, this server allows at most {cfg.max_n}", "n", "n_exceeded")
    knobs = request.knobs()
    if knobs.get("min_new_tokens", 0) > wanted:
        raise APIError(400, f"min_tokens is {knobs['min_new_tokens']}, more than max_tokens {wanted}", "min_tokens")
    if index and knobs.get("seed") is not None:
        # n choices with one seed differ from each other but repeat across calls (wrapping within 64 bits)
        knobs["seed"] = (knobs["seed"] + index + 2 ** 63) % 2 ** 64 - 2 ** 63
    try:
        return GenerationSettings.from_model(served.engine.model, max_new_tokens=wanted, **knobs)
    except UserError as exc:
        raise APIError(400, str(exc), None, "invalid_value") from None


def prepare(kind: str, request: Any, served: Served, cfg: Any, moderator: Moderator,
            prompt: str | None = None) -> Job:
    check_model(request, served)
    engine = served.engine
    settings = build_settings(request, served, cfg)
    if kind == "chat":
        messages = [m.plain() for m in request.messages]
        decision, messages = moderator.check_messages(messages)
    else:
        decision = moderator.check(prompt or "", "input")
        messages = [{"role": "user", "content": decision.text}]
    job = Job(kind, served, request, new_id(kind), int(time.time()), messages, [], settings)
    job.moderation = [f"input:{c}:{a}" for c, a in decision.actions_taken]
    if decision.blocked:
        job.refusal = decision
        return job
    structured = plan(request, engine)
    try:
        if kind == "chat":
            job.prompt_ids = engine.encode_chat(messages, structured.tools)
            job.settings = engine.chat_settings(settings).replace(grammar=structured.grammar)
            job.tool_names = structured.tool_names
        else:
            job.prompt_ids = engine.encode_prompt(decision.text)
            job.settings = settings.replace(grammar=structured.grammar)
    except UserError as exc:
        raise APIError(400, str(exc), "messages" if kind == "chat" else "prompt") from None
    except Exception as exc:  # noqa: BLE001 - a chat template that rejects this conversation (e.g. role order)
        raise APIError(400, f"the model's chat template rejects these messages: {exc}", "messages") from None
    try:
        served.scheduler.fit(job.prompt_ids, job.settings)
    except UserError as exc:
        raise APIError(400, str(exc), "messages" if kind == "chat" else "prompt", "context_length_exceeded") from None
    return job


def start(job: Job, loop: Any, cfg: Any) -> None:
    if job.refusal is not None:
        return
    try:
        for index in range(job.n):
            settings = job.settings if index == 0 else build_settings(job.request, job.served, cfg, index)
            if index and job.kind == "chat":
                settings = job.served.engine.chat_settings(settings)
            settings = settings.replace(grammar=job.settings.grammar)
            job.handles.append(job.served.scheduler.submit(job.prompt_ids, settings, job.request.logprob_count,
                                                           loop))
    except QueueFull as exc:
        cancel(job)
        raise APIError(429, str(exc), None, "queue_full") from None
    except UserError as exc:
        cancel(job)
        raise APIError(400, str(exc)) from None


def cancel(job: Job) -> None:
    for handle in job.handles:
        handle.cancel()


class OutputGuard:
    """Moderates one choice's reply while it streams, without leaking what redaction would hide.

    With moderation off every piece is released as it comes. Otherwise every decision is made on the original text
    so far; what is released is its redacted form, and only up to a point later text cannot change: never inside
    the last word (an e-mail or key still being written; a word the classifier has not seen whole) and, with
    redaction on, not from where a match that may contain a space (phone, card, IBAN) could still be under way
    (`open_start`: a run of digits, "+", "(" or an IBAN's start at the end). Ordinary words are released as soon
    as they end, so the first token is not held back; a long word is released up to where a match could still be
    under way (`open_word`), so a reply without spaces is not held to its end. Log-probs are held back with their
    text, and those of redacted tokens are masked, so no channel shows the hidden text."""

    def __init__(self, moderator: Moderator):
        self.moderator = moderator
        self.text = ""
        self.sent = ""  # the released text, redacted
        self.released = 0  # characters of `text` that `sent` covers
        self.redacted: list[Span] = []  # spans of `text` replaced in `sent`
        self.pending: list[tuple[int, int, dict]] = []  # (start, end, log-prob entry) not released yet
        self.logprob_end = 0
        self.blocked: Decision | None = None
        self.last: Decision | None = None
        self.redacting = moderator.enabled and moderator.redacts_output
        self.word_scan = 0  # positions of the last word before this are settled (`open_word`)
        self.judge = growing_judge() if moderator.enabled else None  # each check reads only the new words
        self.scan = GrowingScan()  # ... and the personal-data scans read only what follows the last rest

    def flags(self) -> list[str]:
        decision = self.blocked or self.last
        return [f"output:{c}:{a}" for c, a in decision.actions_taken] if decision is not None else []

    def feed(self, piece: str, logprobs: Sequence[dict] = (), final: bool = False) -> str:
        """The text that may be shown now (possibly ""); `ready_logprobs()` then has the entries that go with it."""
        self.text += piece
        for entry in logprobs:
            end = self.logprob_end + len(entry.get("token", ""))
            self.pending.append((self.logprob_end, end, entry))
            self.logprob_end = end
        if self.blocked is not None:
            return ""
        if not final and self._bound() <= self.released:
            return ""  # nothing more could be released: the check waits for text that could be shown
        decision = self.moderator.check(self.text, "output", notify=final, judge=self.judge, scan=self.scan)
        self.last = decision
        if decision.blocked:
            self.blocked = decision
            self.pending.clear()
            if not final:
                self.moderator.notify(decision)
            return ""
        found = list(self.scan.spans(self.text)) if self.redacting else []
        cut = len(self.text) if final else self._safe_cut(found)
        if cut <= self.released:
            return ""
        shown = replace_spans(self.text, found, cut)
        delta = shown[len(self.sent):]
        self.sent, self.released = shown, cut
        self.redacted = [span for span in found if span.start < cut]
        return delta

    def _safe_cut(self, found: list[Span]) -> int:
        """The end of the text no later piece can change: the last word boundary before any match later text
        could complete (with redaction on), moved before any match it would split; inside a long last word, the
        first place where an e-mail, URL, key or IP could still be under way."""
        text = self.text
        if not self.moderator.enabled:
            return len(text)  # nothing is checked or redacted: every piece goes out as it comes
        limit = open_start(text) if self.redacting else len(text)
        word = max(text.rfind(" "), text.rfind("\n")) + 1
        if limit > word and len(text) - word >= LONG_WORD:
            self.word_scan = open_word(text, max(word, self.word_scan))
            return pulled_before(min(limit, self.word_scan), found)
        return safe_cut(text, found, limit - 1) if limit > 0 else 0

    def _bound(self) -> int:
        """The furthest `_safe_cut` could reach (matches only move it back): while it is no further than what was
        released, a check could release nothing, so the classifier, which reads the whole reply, is not run for
        each token of a word (every release still follows a check of all the text before it)."""
        return self._safe_cut([])

    def ready_logprobs(self) -> list[dict]:
        """Log-prob entries of the released text; a token inside a redacted span shows as its placeholder."""
        ready = [p for p in self.pending if p[1] <= self.released or self.released == len(self.text)]
        self.pending = self.pending[len(ready):]
        return [self._mask(start, end, entry) for start, end, entry in ready]

    def _mask(self, start: int, end: int, entry: dict) -> dict:
        slack = abs(self.logprob_end - len(self.text)) + 1  # token texts need not add up to the decoded text
        for span in self.redacted:
            if start < span.end + slack and span.start - slack < end:
                token = f"<{span.kind}>" if start <= span.start else ""
                return {**entry, "token": token, "top_logprobs": []}
        return entry


def finish_reason(completion: Completion, guard: OutputGuard) -> str:
    return "content_filter" if guard.blocked is not None else FINISH.get(completion.finish_reason, "stop")


def chat_logprobs(entries: list[dict]) -> dict:
    def one(e: dict) -> dict:
        return {"token": e["token"], "logprob": e["logprob"], "bytes": list(e["token"].encode("utf-8"))}

    return {"content": [{**one(e), "top_logprobs": [one(t) for t in e["top_logprobs"]]} for e in entries]}


def text_logprobs(entries: list[dict]) -> dict:
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
            "text_offset": offsets}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode("utf-8")


async def events(job: Job) -> AsyncIterator[tuple[int, Any]]:
    """(choice index, event) from every handle, as they arrive."""
    import asyncio

    if len(job.handles) == 1:
        async for event in job.handles[0]:
            yield 0, event
        return
    merged: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, handle: Any) -> None:
        async for event in handle:
            await merged.put((index, event))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(job.handles)]
    try:
        done = 0
        while done < len(tasks):
            index, event = await merged.get()
            done += isinstance(event, (Completion, Failed))
            yield index, event
    finally:
        for task in tasks:
            task.cancel()


def failed(event: Failed) -> APIError:
    return APIError(500, event.message, None, "generation_failed")


def is_piece(event: Any) -> bool:
    return isinstance(event, Piece)
