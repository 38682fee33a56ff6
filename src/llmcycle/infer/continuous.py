"""Continuous batching: concurrent requests join and leave one running batch at every decode step.

One scheduler thread owns the engine's forward. Each step it (1) drops rows whose client went away, (2) prefills
waiting requests one at a time and moves each one's KV into a free row of the batch cache, (3) decodes one token
for every running row, (4) frees rows that finished. The batch cache is [rows, kv heads, columns, head dim] per
layer and every row writes the same column each step; a joining request's prompt KV is copied right-aligned so
it ends at the current column, and a per-row mask hides the columns before it (each row keeps its own rotary
positions). When the column reaches the end the cache is compacted left (or grown, up to `max_context`).

Sampling, stop ids, stop strings and text decoding are the engine's own (`DecodeRun`, one per request), so a
request decodes to the same tokens alone or in a batch (greedy; sampling draws from the request's own seed). Rows
with the same sampling settings choose their tokens in one batched call (`sampling.choose_rows`).
Models our fast forward does not cover are served in static batches through the engine instead.

A row that raises while its token is chosen (or while its prompt is prefilled) fails that request alone, with a
`Failed` event; the others decode on. Only a failure of the shared forward fails the whole batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from typing import Any, Iterator, Sequence

import torch

from llmcycle.errors import UserError
from llmcycle.infer.batch_cache import BatchCache
from llmcycle.infer.decode import left_pad, streamable_length
from llmcycle.infer.engine import Completion, Engine
from llmcycle.infer.handles import Failed, Handle, Piece
from llmcycle.infer.prefix_cache import common_prefix
from llmcycle.infer.row_prefill import prefill_after
from llmcycle.infer.sampling import choose_rows
from llmcycle.infer.settings import GenerationSettings
from llmcycle.infer.threads import forward_threads, use_threads

DEFAULT_MAX_CONTEXT = 2048
log = logging.getLogger("llmcycle.serve")


class QueueFull(UserError):
    """Every batch row is busy and the waiting queue is full: the client should retry later (HTTP 429)."""


class Sequence_:
    """A request's decoding state: its engine DecodeRun (sampling, stops, text) plus where it sits in the batch."""

    def __init__(self, engine: Engine, prompt_ids: list[int], settings: GenerationSettings, logprobs: int | None,
                 handle: Handle):
        self.run = engine.decode_run([prompt_ids], settings)
        self.row = self.run.rows[0]
        self.settings, self.logprobs, self.handle = settings, logprobs, handle
        self.tokenizer = engine.tokenizer
        self.step = 0
        self.emitted = 0
        self.pending_ids: list[int] = []
        self.pending_logprobs: list[dict] = []
        self.history = None
        if self.run.pipeline.needs_history:
            self.history = torch.tensor([prompt_ids + [0] * settings.max_new_tokens], dtype=torch.long)
        self.position = len(prompt_ids)  # the rotary position of the next token fed
        self.last = 0  # the last chosen token, fed at the next step
        self.final: Completion | None = None
        self.final_sent = False
        self.error: str | None = None  # set when this row failed: it alone ends, with a Failed event

    def choose(self, logits: torch.Tensor) -> None:
        """Pick, record and emit the next token from this row's logits [1, vocab]."""
        length = len(self.row.prompt_ids) + self.step
        seen = self.history[:, :length] if self.history is not None else None
        self.accept(int(self.run.pipeline.choose(logits, seen, self.step)[0]), logits)

    def accept(self, token: int, logits: torch.Tensor) -> None:
        """Record and emit `token`, chosen from this row's logits [1, vocab] (here or batched with other rows)."""
        length = len(self.row.prompt_ids) + self.step
        if self.logprobs is not None:
            self.pending_logprobs.append(token_logprobs(self.tokenizer, logits[0], token, self.logprobs))
        self.run._record([token], self.step)
        if self.history is not None:
            self.history[0, length] = token
        self.pending_ids.append(token)
        self.last, self.step = token, self.step + 1
        self._emit()

    def _emit(self) -> None:
        text = self.run.text_of(self.row)
        done = self.row.finish_reason is not None
        safe = len(text) if done else streamable_length(text, self.settings.stop)
        if safe > self.emitted or (done and (self.pending_ids or self.pending_logprobs)):
            self.handle.put(Piece(text[self.emitted:safe], self.pending_ids, self.pending_logprobs))
            self.emitted, self.pending_ids, self.pending_logprobs = max(safe, self.emitted), [], []
        if done and self.final is None:
            row = self.row
            self.final = Completion(text, list(row.new_ids), row.finish_reason, len(row.prompt_ids))

    def send_final(self) -> None:
        """The Completion goes out after the row is freed, so a client that reacts to it finds the row free."""
        if self.final_sent:
            return
        if self.error is not None:
            self.final_sent = True
            self.handle.put(Failed(self.error))
        elif self.final is not None:
            self.final_sent = True
            self.handle.put(self.final)

    def fail(self, exc: BaseException) -> None:
        """This row raised while choosing its token: it ends alone; the batch's other rows decode on."""
        log.error("request failed while decoding (the other rows continue): %s: %s", type(exc).__name__, exc,
                  exc_info=exc)
        self.error = failure_message(exc)

    def finish(self, reason: str) -> None:
        """End the request early (its client went away): it gets its Completion so far."""
        if self.final is None:
            self.row.finish_reason = self.row.finish_reason or reason
            self._emit()

    @property
    def done(self) -> bool:
        return self.row.finish_reason is not None or self.error is not None


def failure_message(exc: BaseException) -> str:
    return f"generation failed: {type(exc).__name__}: {exc}"


def token_logprobs(tokenizer: Any, logits: torch.Tensor, token: int, top: int) -> dict:
    """OpenAI's per-token entry: the chosen token's log-prob under the model, and the `top` most likely."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    entry = {"token": tokenizer.decode([token]), "logprob": float(logp[token]), "id": token, "top_logprobs": []}
    if top > 0:
        values, ids = torch.topk(logp, top)
        entry["top_logprobs"] = [{"token": tokenizer.decode([i]), "logprob": float(v), "id": int(i)}
                                 for v, i in zip(values.tolist(), ids.tolist())]
    return entry


class Scheduler:
    """Requests in, events out: `submit` returns a Handle at once (or raises QueueFull); one thread decodes."""

    def __init__(self, engine: Engine, max_batch: int = 16, max_queue: int = 64,
                 max_context: int | None = None):
        self.engine, self.max_batch, self.max_queue = engine, max_batch, max_queue
        self.max_context = min(engine.context_length, max_context or DEFAULT_MAX_CONTEXT)
        self.continuous = getattr(engine.backend, "continuous_batching", False)  # the backend says what it can
        self.waiting: deque[tuple[list[int], GenerationSettings, int | None, Handle]] = deque()
        self.running: list[Sequence_] = []
        self._cv = threading.Condition()
        self._closing = False
        self.steps = 0
        self.tokens = 0
        self._admitting: list[Handle] = []
        self._thread = threading.Thread(target=self._loop, name="llmcycle-scheduler", daemon=True)
        self._thread.start()

    # ---- the client side ------------------------------------------------------------------------------
    def fit(self, prompt_ids: Sequence[int], settings: GenerationSettings) -> GenerationSettings:
        """The request's settings fitted to the server's context (the engine's one prompt check)."""
        return self.engine.fit([prompt_ids], settings, self.max_context, owner="server")

    def submit(self, prompt_ids: Sequence[int], settings: GenerationSettings, logprobs: int | None = None,
               loop: asyncio.AbstractEventLoop | None = None) -> Handle:
        settings = self.fit(prompt_ids, settings)
        handle = Handle(loop)
        with self._cv:
            if self._closing:
                raise QueueFull("the model is being replaced: retry")
            busy = len(self.running) + len(self._admitting) >= self.max_batch or self.waiting
            if busy and len(self.waiting) >= self.max_queue:
                raise QueueFull(f"server busy: {len(self.running)} requests running, {len(self.waiting)} waiting")
            self.waiting.append((list(prompt_ids), settings, logprobs, handle))
            self._cv.notify()
        return handle

    @property
    def queue_depth(self) -> int:
        return len(self.waiting)

    @property
    def active(self) -> int:
        return len(self.running)

    def cancel_all(self) -> int:
        """Cancel every accepted request (shutdown): each ends at the next step with what it has so far."""
        with self._cv:
            handles = [item[3] for item in self.waiting] + [seq.handle for seq in self.running] + self._admitting
            for handle in handles:
                handle.cancel()
            self._cv.notify()
        return len(handles)

    def close(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests; the thread ends once the ones already accepted have finished."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        if wait:
            self._thread.join(timeout)

    # ---- the decoding thread --------------------------------------------------------------------------
    def _loop(self) -> None:
        cache = BatchCache(self.engine.backend, self.max_batch, self.max_context) if self.continuous else None
        while True:
            with self._cv:
                while not self.waiting and not self.running and not self._closing:
                    self._cv.wait()
                if self._closing and not self.waiting and not self.running:
                    return
            try:
                with torch.inference_mode():
                    if cache is not None:
                        self._continuous_step(cache)
                    else:
                        self._static_batch()
            except Exception as exc:  # the shared forward failed (no one row to blame): fail the batch, keep serving
                log.exception("the batch's forward failed: failing the %d requests in it", len(self.running))
                for handle in [seq.handle for seq in self.running] + self._admitting:
                    handle.put(Failed(failure_message(exc)))
                self.running, self._admitting = [], []
                if cache is not None:
                    cache = BatchCache(self.engine.backend, self.max_batch, self.max_context)

    def _take(self, limit: int) -> list[tuple[list[int], GenerationSettings, int | None, Handle]]:
        taken = []
        with self._cv:
            while self.waiting and len(taken) < limit:
                item = self.waiting.popleft()
                if not item[3].cancelled:
                    taken.append(item)
                else:
                    item[3].put(Completion("", [], "cancelled", len(item[0])))
            self._admitting = [t[3] for t in taken]
        return taken

    def _continuous_step(self, cache: BatchCache) -> None:
        for i in reversed([i for i, seq in enumerate(self.running) if seq.handle.cancelled]):
            seq = self.running[i]
            self._free(cache, i)
            seq.finish("cancelled")
            seq.send_final()
        taken = self._take(self.max_batch - len(self.running))
        if taken:
            use_threads(self.engine.threads)  # prompts: every thread the engine has
            self._admit(cache, taken)
        if not self.running:
            return
        tokens = torch.tensor([seq.last for seq in self.running], device=self.engine.device)
        positions = torch.tensor([seq.position for seq in self.running], device=self.engine.device)
        use_threads(forward_threads(len(self.running), self.engine.params, self.engine.threads))
        logits = cache.step(tokens, positions)
        self.steps += 1
        chosen = self._choose_together(logits)
        for i, seq in enumerate(self.running):
            seq.position += 1
            try:
                if i in chosen:
                    seq.accept(chosen[i], logits[i:i + 1])
                else:
                    seq.choose(logits[i:i + 1])
            except Exception as exc:  # noqa: BLE001 - one request's failure is that request's alone
                seq.fail(exc)
        self.tokens += len(self.running)
        finished = [seq for seq in self.running if seq.done]
        for i in reversed([i for i, seq in enumerate(self.running) if seq.done]):
            self._free(cache, i)
        for seq in finished:
            seq.send_final()

    def _choose_together(self, logits: torch.Tensor) -> dict[int, int]:
        """The tokens of the rows whose sampling settings allow choosing them in one batched call; if that fails,
        every row chooses alone, so a failure is its own row's."""
        try:
            return choose_rows([seq.run.pipeline for seq in self.running], logits,
                               [seq.step for seq in self.running])
        except Exception as exc:  # noqa: BLE001 - retried row by row below, where the culprit fails alone
            log.warning("batched token choice failed (%s: %s): choosing row by row", type(exc).__name__, exc)
            return {}

    def _admit(self, cache: BatchCache, taken: list) -> None:
        """Prefill the joining requests and give each a batch row; one that fails is answered with its error and
        the others join (a failed burst prefill falls back to one prompt at a time, so only a culprit fails)."""
        burst: list[Iterator | None] = [self._prefill(taken)]
        for prompt_ids, settings, logprobs, handle in taken:
            try:
                logits, keys, values = self._prefilled(burst, prompt_ids)
                seq = Sequence_(self.engine, prompt_ids, settings, logprobs, handle)
                seq.choose(logits)
            except Exception as exc:  # noqa: BLE001 - a request that cannot start fails alone
                log.error("request failed at prefill: %s: %s", type(exc).__name__, exc, exc_info=exc)
                handle.put(Failed(failure_message(exc)))
                with self._cv:
                    self._admitting.remove(handle)
                continue
            self.tokens += 1
            if not seq.done:
                cache.insert(keys, values)
                self.running.append(seq)
            with self._cv:
                self._admitting.remove(handle)
            seq.send_final()

    def _prefilled(self, burst: list[Iterator | None], prompt_ids: list[int]) -> tuple[torch.Tensor, list, list]:
        if burst[0] is not None:
            try:
                return next(burst[0])
            except StopIteration:
                burst[0] = None
            except Exception as exc:  # noqa: BLE001 - retried alone below, so the culprit is found
                log.warning("burst prefill failed (%s: %s): prefilling one at a time", type(exc).__name__, exc)
                burst[0] = None
        return self.engine.backend.prefill_one(torch.tensor([prompt_ids], device=self.engine.device))

    def _prefill(self, taken: list) -> Iterator[tuple[torch.Tensor, list, list]]:
        """(last logits, keys, values) per joining prompt. A burst of arrivals of similar lengths is prefilled in
        one left-padded forward (the engine's batch path), each row's KV then sliced out without its padding."""
        backend, device = self.engine.backend, self.engine.device
        prompts = [t[0] for t in taken]
        lengths = [len(p) for p in prompts]
        shared = self._shared_prefix(prompts)
        if shared:  # a common system prompt: computed once (or taken from the prefix cache), then the rest packed
            _, past_keys, past_values = backend.prefill_one(torch.tensor([prompts[0][:shared]], device=device))
            logits, keys, values = prefill_after(backend, past_keys, past_values, [p[shared:] for p in prompts])
            for i in range(len(prompts)):
                yield logits[i:i + 1], keys[i], values[i]
            return
        if len(prompts) < 2 or max(lengths) > 2 * min(lengths):
            for prompt in prompts:
                yield backend.prefill_one(torch.tensor([prompt], device=device))
            return

        ids, mask = left_pad(prompts, self.engine.pad_token_id, device)
        backend.keys = backend.values = []  # never write into the batch cache's views
        logits = backend.start(ids, mask, 1)
        width = ids.shape[1]
        keys, values = backend.keys, backend.values
        for i, n in enumerate(lengths):
            yield (logits[i:i + 1], [k[i:i + 1, :, width - n:width] for k in keys],
                   [v[i:i + 1, :, width - n:width] for v in values])

    def _shared_prefix(self, prompts: list[list[int]]) -> int:
        """Tokens every prompt of a burst starts with, where the backend's prefix cache makes them worth sharing
        (at least its minimum entry; each prompt keeps one token of its own to run); 0 for none."""
        cache = getattr(self.engine.backend, "prefix_cache", None)
        if len(prompts) < 2 or cache is None or not self.continuous:
            return 0
        shared = min(len(p) for p in prompts) - 1
        for prompt in prompts[1:]:
            shared = common_prefix(prompts[0][:shared], prompt)
        return shared if shared >= cache.min_tokens else 0

    def _free(self, cache: BatchCache, index: int) -> None:
        cache.remove(index)
        last = self.running.pop()
        if index < len(self.running):
            self.running[index] = last

    def _static_batch(self) -> None:
        """Fallback: the waiting requests that share settings decode together through the engine's DecodeRun."""
        taken = self._take(self.max_batch)
        if not taken:
            return
        first = taken[0][1]
        group = [t for t in taken if t[1] == first]
        with self._cv:  # the others wait for the next batch, in their order
            self.waiting.extendleft(reversed([t for t in taken if t[1] != first]))
        seqs = [Sequence_(self.engine, p, s, None, h) for p, s, _, h in group]
        with self._cv:
            self.running, self._admitting = seqs, []
        run = self.engine.decode_run([p for p, *_ in group], first)
        for seq, row in zip(seqs, run.rows):
            seq.run, seq.row = run, row
        for _ in run.steps():
            for seq in seqs:
                if seq.final_sent:
                    continue
                if seq.handle.cancelled:
                    seq.finish("cancelled")
                    seq.send_final()
                    continue
                seq.pending_ids += seq.row.new_ids[seq.step:]
                seq.step = len(seq.row.new_ids)
                seq._emit()
                seq.send_final()
            self.tokens += len(seqs)
        self.running = []
