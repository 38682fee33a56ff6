"""The decode loop on token ids, independent of which forward pass (ours or transformers') computes the logits.

A backend has two methods: `start(input_ids, attention_mask, max_new_tokens)` runs the prompt (left padded) and
returns the last position's logits [batch, vocab]; `step(tokens)` feeds one token per row and returns the next
logits. Finished rows are fed the pad token, as transformers does, so the batch keeps its shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from transformers import DynamicCache

from llmcycle.infer.reply_text import ReplyText
from llmcycle.infer.sampling import LogitsPipeline
from llmcycle.infer.settings import GenerationSettings


@dataclass
class Completion:
    """One reply: `text` has special tokens and stop strings removed; `token_ids` exclude the ending eos/stop id."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "eos" | "stop" | "length"
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class Row:
    """One sequence's progress: its prompt, the ids generated so far and, once done, why it ended."""

    prompt_ids: list[int]
    new_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    stop_at: int | None = None  # where a stop string begins in the decoded text
    checked_chars: int = 0
    reply: ReplyText | None = None  # the text of new_ids, decoded as they grow


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


class DecodeRun:
    """Decode a batch step by step; iterate `steps()` to advance, read `rows` for the results so far."""

    def __init__(self, backend: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], settings: GenerationSettings,
                 eos_ids: Sequence[int], pad_id: int, device: Any = "cpu", seeds: Sequence[int] | None = None):
        self.backend, self.tokenizer, self.s = backend, tokenizer, settings
        self.eos_ids = set(int(t) for t in eos_ids)
        self.stop_ids = set(int(t) for t in settings.stop_token_ids) - self.eos_ids
        self.pad_id, self.device = pad_id, device
        self.rows = [Row(list(p)) for p in prompts]
        self.pipeline = LogitsPipeline(settings, sorted(self.eos_ids | self.stop_ids), device, len(self.rows), seeds)
        self.max_stop_len = max((len(s) for s in settings.stop), default=0)

    def steps(self) -> Iterator[int]:
        """Yields the step number after each new token has been appended to every running row."""
        s = self.s
        ids, mask = left_pad([r.prompt_ids for r in self.rows], self.pad_id, self.device)
        width = ids.shape[1]
        history = None
        if self.pipeline.needs_history:
            history = torch.full((len(self.rows), width + s.max_new_tokens), self.pad_id, dtype=torch.long,
                                 device=self.device)
            history[:, :width] = ids
        with torch.inference_mode():
            logits = self.backend.start(ids, mask, s.max_new_tokens)
            for step in range(s.max_new_tokens):
                seen = history[:, :width + step] if history is not None else None
                tokens = self.pipeline.choose(logits, seen, step)
                token_list = tokens.tolist()
                self._record(token_list, step)
                yield step
                if all(r.finish_reason for r in self.rows):
                    return
                if history is not None:
                    history[:, width + step] = tokens
                if step + 1 < s.max_new_tokens:
                    tokens = self._pad_finished(tokens, token_list)
                    logits = self.backend.step(tokens)

    def _pad_finished(self, tokens: torch.Tensor, token_list: list[int]) -> torch.Tensor:
        finished = [i for i, r in enumerate(self.rows) if r.finish_reason and token_list[i] != self.pad_id]
        if finished:
            tokens = tokens.clone()
            tokens[finished] = self.pad_id
        return tokens

    def _record(self, token_list: list[int], step: int) -> None:
        last = step + 1 == self.s.max_new_tokens
        for row, token in zip(self.rows, token_list):
            if row.finish_reason:
                continue
            if token in self.eos_ids:
                row.finish_reason = "eos"
                continue
            if token in self.stop_ids:
                row.finish_reason = "stop"
                continue
            row.new_ids.append(token)
            if self.max_stop_len and self._hit_stop_string(row):
                row.finish_reason = "stop"
            elif last:
                row.finish_reason = "length"

    def _hit_stop_string(self, row: Row) -> bool:
        text = self.text_of(row)
        start = max(0, row.checked_chars - self.max_stop_len)
        hits = [i for i in (text.find(stop, start) for stop in self.s.stop) if i >= 0]
        row.checked_chars = len(text)
        if hits:
            row.stop_at = min(hits)
            return True
        return False

    def text_of(self, row: Row) -> str:
        """The row's reply so far: special tokens dropped, cut before a stop string."""
        if row.reply is None:
            row.reply = ReplyText(self.tokenizer)
        text = row.reply.text(row.new_ids)
        return text if row.stop_at is None else text[:row.stop_at]

    def run(self) -> list[Row]:
        for _ in self.steps():
            pass
        return self.rows


class HFBackend:
    """Any transformers causal LM (PEFT-wrapped too) through its own forward and its own KV cache."""

    continuous_batching = False  # rows of a batch share one cache length: the scheduler batches whole groups

    def __init__(self, model: Any):
        self.model = model

    def start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        self.cache = DynamicCache(config=self.model.config)
        self.mask = attention_mask
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        self.next_position = positions[:, -1:] + 1
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                         past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1, :]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        out = self.model(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.next_position,
                         past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        self.next_position = self.next_position + 1
        return out.logits[:, -1, :]


def streamable_length(text: str, stops: Sequence[str]) -> int:
    """How much of a running reply can be shown: not a half-decoded character nor a possible stop string's start."""
    end = len(text.rstrip("\ufffd"))
    for stop in stops:
        for size in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:size]):
                end -= size
                break
    return max(end, 0)
