"""Logits processors: each knob is a small function on a [batch, vocab] logits tensor.

They follow the semantics (and the order) of the transformers processors of the same names, so our decode loop
and `model.generate` agree, but they are plain functions that skip all work when their knob is off: at batch 1
the per-token Python cost is what limits a small model's speed.
"""

from __future__ import annotations

from typing import Sequence

import torch

from llmcycle.infer.constrain import advance_all, apply_masks
from llmcycle.infer.settings import GenerationSettings

NEG_INF = float("-inf")


def repetition_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """Tokens already in `history` [batch, seen] get their logit divided by `penalty` (multiplied if negative)."""
    if penalty == 1.0 or history.numel() == 0:
        return logits
    seen = logits.gather(1, history)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(1, history, seen)


def banned_ngram_tokens(tokens: Sequence[int], n: int) -> set[int]:
    """Tokens that would complete an n-gram already present in `tokens`."""
    if n <= 0 or len(tokens) < n:
        return set()
    prefix = tuple(tokens[len(tokens) - n + 1:]) if n > 1 else ()
    banned = set()
    for start in range(len(tokens) - n + 1):
        if tuple(tokens[start:start + n - 1]) == prefix:
            banned.add(tokens[start + n - 1])
    return banned


def no_repeat_ngram(logits: torch.Tensor, history: torch.Tensor, n: int) -> torch.Tensor:
    if n <= 0:
        return logits
    logits = logits.clone()
    for row, tokens in enumerate(history.tolist()):
        banned = banned_ngram_tokens(tokens, n)
        if banned:
            logits[row, list(banned)] = NEG_INF
    return logits


def suppress_tokens(logits: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """Used for min_new_tokens: end-of-sequence ids cannot be chosen yet."""
    ids = [t for t in token_ids if 0 <= t < logits.shape[-1]]
    if not ids:
        return logits
    logits = logits.clone()
    logits[:, ids] = NEG_INF
    return logits


def temperature(logits: torch.Tensor, value: float) -> torch.Tensor:
    return logits if value in (0.0, 1.0) else logits / value


def top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities sum to at least p (always >= 1 token)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - p)
    drop_sorted[..., -1] = False
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def min_p(logits: torch.Tensor, value: float) -> torch.Tensor:
    if value <= 0.0:
        return logits
    probs = logits.softmax(dim=-1)
    threshold = value * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, NEG_INF)


class LogitsPipeline:
    """All of one request's processors in transformers' order, then the choice of the next token."""

    def __init__(self, settings: GenerationSettings, eos_ids: Sequence[int], device: str | torch.device = "cpu",
                 rows: int = 1, row_seeds: Sequence[int] | None = None):
        """`row_seeds`: one seed per row, each row then drawing from its own generator, so two rows with the same
        seed and the same distributions draw the same tokens whatever their batch (common random numbers: what a
        counterfactual pair's two prompts need for their replies to differ only where the model treats them
        differently)."""
        self.s = settings
        self.eos_ids = list(eos_ids)
        # a grammar gives every row its own parser state: rows of one batch advance independently
        self.matchers = [settings.grammar.matcher(self.eos_ids) for _ in range(rows)] if settings.grammar else None
        self.sampling = settings.sampling
        self.generator = None
        self.row_generators = None
        if self.sampling and row_seeds is not None:
            self.row_generators = [torch.Generator(device=device).manual_seed(int(s)) for s in row_seeds]
        elif self.sampling:
            self.generator = torch.Generator(device=device)
            if settings.seed is not None:
                self.generator.manual_seed(settings.seed)
            else:
                self.generator.seed()
        self.needs_history = settings.repetition_penalty != 1.0 or settings.no_repeat_ngram_size > 0
        self.trivial = not self.needs_history and settings.min_new_tokens == 0 and not self.sampling

    def process(self, logits: torch.Tensor, history: torch.Tensor | None, n_generated: int) -> torch.Tensor:
        """Processed logits (float32). `history` holds prompt + generated ids, as transformers' processors see them."""
        s = self.s
        logits = logits.float()
        if history is not None:
            logits = repetition_penalty(logits, history, s.repetition_penalty)
            logits = no_repeat_ngram(logits, history, s.no_repeat_ngram_size)
        if n_generated < s.min_new_tokens:
            logits = suppress_tokens(logits, self.eos_ids)
        if self.sampling:
            logits = temperature(logits, s.temperature)
            logits = top_k(logits, s.top_k)
            logits = top_p(logits, s.top_p)
            logits = min_p(logits, s.min_p)
        return logits

    def choose(self, logits: torch.Tensor, history: torch.Tensor | None, n_generated: int) -> torch.Tensor:
        """Next token id per row, [batch] int64 (a constrained row's token is one its grammar allows)."""
        if self.matchers is None:
            return self._choose(logits, history, n_generated)
        tokens = self._choose(apply_masks(logits, self.matchers), history, n_generated)
        advance_all(self.matchers, tokens.tolist())
        return tokens

    def _choose(self, logits: torch.Tensor, history: torch.Tensor | None, n_generated: int) -> torch.Tensor:
        if self.trivial:
            return logits.argmax(dim=-1)
        logits = self.process(logits, history, n_generated)
        if not self.sampling:
            return logits.argmax(dim=-1)
        probs = logits.softmax(dim=-1)
        if self.row_generators is not None:
            return torch.cat([torch.multinomial(probs[j:j + 1], 1, generator=g)
                              for j, g in enumerate(self.row_generators)]).squeeze(1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1)


def batch_key(pipeline: LogitsPipeline, n_generated: int) -> tuple | None:
    """Rows with equal keys get their logits processed in one batched call (each sampled row still draws from its
    own generator); None for a row that needs its own history or grammar state."""
    if pipeline.matchers is not None or pipeline.needs_history:
        return None
    s = pipeline.s
    suppress = tuple(pipeline.eos_ids) if n_generated < s.min_new_tokens else ()
    if not pipeline.sampling:
        return ("greedy", suppress)
    return ("sample", suppress, s.temperature, s.top_k, s.top_p, s.min_p)


def choose_rows(pipelines: Sequence[LogitsPipeline], logits: torch.Tensor, steps: Sequence[int]) -> dict[int, int]:
    """Tokens {row: id} for the rows of `logits` [rows, vocab] that can be chosen together: the same tokens each
    row's own `choose` would pick (processing is row-wise, and each sampled row draws from its own generator), in
    one processing call and one host copy per group instead of one per row. Rows left out choose alone."""
    groups: dict[tuple, list[int]] = {}
    for row, (pipeline, step) in enumerate(zip(pipelines, steps)):
        key = batch_key(pipeline, step)
        if key is not None:
            groups.setdefault(key, []).append(row)
    chosen: dict[int, int] = {}
    for key, rows in groups.items():
        group = logits if len(rows) == len(pipelines) else logits[rows]
        # greedy: when no row's first maximum is an id to suppress, suppressing leaves it the first maximum
        tokens = group.argmax(dim=-1).tolist() if key[0] == "greedy" else []
        if not tokens or set(tokens) & set(key[1]):
            tokens = _processed_choice([pipelines[row] for row in rows], group, steps[rows[0]])
        chosen.update(zip(rows, tokens))
    return chosen


def _processed_choice(pipelines: Sequence[LogitsPipeline], logits: torch.Tensor, n_generated: int) -> list[int]:
    """One group's tokens through the processors its rows share, each sampled row drawing from its own generator."""
    first = pipelines[0]
    processed = first.process(logits, None, n_generated)
    if not first.sampling:
        return processed.argmax(dim=-1).tolist()
    probs = processed.softmax(dim=-1)
    return [int(torch.multinomial(probs[j:j + 1], 1, generator=p.generator)) for j, p in enumerate(pipelines)]
