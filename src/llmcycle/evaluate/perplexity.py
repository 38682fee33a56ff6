"""Teacher-forced perplexity and bits-per-byte on the test split.

Chat records: every assistant turn is scored as the engine would generate it: the preceding conversation rendered
with the model's chat template plus its generation prompt, then the reply's tokens and the template's end-of-turn
token (the one fine-tuning trains, `modeldir.end_of_turn_id`: `<|end|>` for Phi-3 whose EOS is `<|endoftext|>`);
only the reply tokens and the end-of-turn token are scored. Text records: every token of the text, after a BOS token.

Perplexity is per token, so it depends on the tokenizer; bits-per-byte divides the total negative log-likelihood (in
bits) by the UTF-8 bytes of the scored text, so models with different tokenizers compare fairly. The end-of-turn token's
NLL counts (knowing when to stop is part of a reply) but adds no bytes.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from llmcycle.artifacts import sha256_json
from llmcycle.errors import DataError
from llmcycle.evaluate.tasks import Subject, Task, TaskResult
from llmcycle.infer.context import model_context
from llmcycle.infer.scoring import masked_nll
from llmcycle.modeldir import end_of_turn_id
from llmcycle.modeldir import render_chat
from llmcycle.progress import bar

TOKENS_PER_BATCH = 16_384  # caps a forward pass's logits memory on long records


@dataclass
class Target:
    """One scoring unit: token ids, which of them are scored, and the UTF-8 bytes of the scored text."""

    ids: list[int]
    mask: list[bool]
    n_bytes: int


@dataclass
class Score:
    nll_nats: float = 0.0
    tokens: int = 0
    n_bytes: int = 0

    def add(self, other: "Score") -> None:
        self.nll_nats += other.nll_nats
        self.tokens += other.tokens
        self.n_bytes += other.n_bytes

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_nats / self.tokens) if self.tokens else float("nan")

    @property
    def bits_per_byte(self) -> float:
        return self.nll_nats / math.log(2) / self.n_bytes if self.n_bytes else float("nan")

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}perplexity": self.perplexity, f"{prefix}bits_per_byte": self.bits_per_byte,
                f"{prefix}scored_tokens": self.tokens, f"{prefix}scored_bytes": self.n_bytes}


def prefix_token(tokenizer: Any) -> int:
    """The token a text record is conditioned on (BOS, else EOS), so its first real token is scored too."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise DataError("perplexity: the tokenizer has neither a BOS nor an EOS token to start a text with")
    return token


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def chat_target(tokenizer: Any, messages: list[dict[str, str]], where: str) -> Target | None:
    """The whole conversation in one sequence with its assistant replies (and each one's end-of-turn) marked.

    One forward pass per conversation instead of one per turn; equivalent because the model is causal. None when
    the template's rendering of a turn's prompt is not a prefix of the whole (or a token straddles the boundary),
    and the caller falls back to scoring turn by turn.
    """
    full = render_chat(tokenizer, messages, where)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids, starts = list(enc["input_ids"]), [start for start, _ in enc["offset_mapping"]]
    mask, n_bytes, end_id = [False] * len(ids), 0, end_of_turn_id(tokenizer)
    for i, msg in enumerate(messages):
        if msg.get("role") != "assistant":
            continue
        prompt = render_chat(tokenizer, messages[:i], f"{where}: messages[{i}]", generation_prompt=True)
        begin, end = len(prompt), len(prompt) + len(msg["content"])
        if not (full.startswith(prompt) and full.startswith(msg["content"], begin)):
            return None
        first, stop = bisect_left(starts, begin), bisect_left(starts, end)
        if first >= len(ids) or starts[first] != begin or stop >= len(ids) or starts[stop] != end:
            return None
        if ids[stop] != end_id:
            return None
        mask[first : stop + 1] = [True] * (stop + 1 - first)
        n_bytes += len(msg["content"].encode("utf-8"))
    return Target(ids, mask, n_bytes)


def turn_targets(tokenizer: Any, messages: list[dict[str, str]], where: str) -> list[Target]:
    """One sequence per assistant turn: its prompt as the engine renders it, then the reply and end-of-turn."""
    targets, end_id = [], end_of_turn_id(tokenizer)
    for i, msg in enumerate(messages):
        if msg.get("role") != "assistant":
            continue
        prompt = encode(tokenizer, render_chat(tokenizer, messages[:i], f"{where}: messages[{i}]", generation_prompt=True))
        reply = encode(tokenizer, msg["content"]) + [end_id]
        targets.append(Target(prompt + reply, [False] * len(prompt) + [True] * len(reply),
                              len(msg["content"].encode("utf-8"))))
    return targets


def record_targets(tokenizer: Any, record: dict[str, Any], where: str) -> list[Target]:
    """Scoring units of one record: its assistant replies for a chat record, all of it for a text record."""
    if "messages" in record:
        if not any(m.get("role") == "assistant" for m in record["messages"]):
            return []
        whole = chat_target(tokenizer, record["messages"], where)
        return [whole] if whole is not None else turn_targets(tokenizer, record["messages"], where)
    if isinstance(record.get("text"), str) and record["text"]:
        ids = [prefix_token(tokenizer)] + encode(tokenizer, record["text"])
        return [Target(ids, [False] + [True] * (len(ids) - 1), len(record["text"].encode("utf-8")))]
    raise DataError(f"{where}: record has neither 'messages' nor 'text'")


def windows(target: Target, max_len: int) -> list[tuple[list[int], list[bool]]]:
    """Split a sequence longer than the model's context so every scored token is scored once, with at least a
    quarter of a context of left context where the sequence allows it (more context costs more recomputation)."""
    ids, mask, n = target.ids, target.mask, len(target.ids)
    if n <= max_len:
        return [(ids, mask)] if any(mask) else []
    out, pos = [], next((i for i, m in enumerate(mask) if m), n)
    while pos < n:
        end = min(n, max(pos + max_len - max_len // 4, max_len))
        begin = max(0, end - max_len)
        piece_mask = [False] * (pos - begin) + mask[pos:end]
        if any(piece_mask):
            out.append((ids[begin:end], piece_mask))
        pos = end
    return out


Piece = tuple[list[int], list[bool], int]  # (token ids, which are scored, owning record)


def batches(pieces: list[Piece], batch_size: int) -> Iterable[list[Piece]]:
    """Length-sorted batches (less padding), capped by rows and by tokens."""
    ordered = sorted(pieces, key=lambda p: len(p[0]))
    batch: list[Piece] = []
    for piece in ordered:
        if batch and (len(batch) >= batch_size or len(piece[0]) * (len(batch) + 1) > TOKENS_PER_BATCH):
            yield batch
            batch = []
        batch.append(piece)
    if batch:
        yield batch


def score_each(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], batch_size: int = 16,
               max_len: int | None = None, where: str = "test", desc: str = "perplexity",
               backend: Any = None) -> list[Score]:
    """NLL, scored tokens and scored bytes of each record under `model` (teacher forcing, batched across records);
    through the engine's `backend` where it runs packed rows (`infer.scoring.masked_nll`: the same numbers)."""
    max_len = max_len or model_context(model, tokenizer)
    scores = [Score() for _ in records]
    pieces: list[Piece] = []
    for i, record in enumerate(records):
        for target in record_targets(tokenizer, record, f"{where} record {i + 1}"):
            scores[i].n_bytes += target.n_bytes
            pieces.extend((ids, mask, i) for ids, mask in windows(target, max_len))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix_token(tokenizer)
    was_training = getattr(model, "training", False)
    model.eval()
    for group in bar(list(batches(pieces, batch_size)), desc=desc, unit="batch"):
        nlls, counts = masked_nll(model, group, pad_id, backend)
        for (_, _, owner), nll, count in zip(group, nlls, counts):
            scores[owner].nll_nats += nll
            scores[owner].tokens += int(count)
    if was_training:
        model.train()
    return scores


def score_records(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], batch_size: int = 16,
                  max_len: int | None = None, where: str = "test", desc: str = "perplexity",
                  backend: Any = None) -> Score:
    """Total NLL, scored tokens and scored bytes of `records` under `model` (or the engine's `backend`)."""
    total = Score()
    for score in score_each(model, tokenizer, records, batch_size, max_len, where, desc, backend):
        total.add(score)
    return total


def reply_texts(record: dict[str, Any]) -> list[str]:
    """What a record's scored tokens say: its assistant replies, or its text."""
    if isinstance(record.get("messages"), list):
        return [m["content"] for m in record["messages"]
                if isinstance(m, dict) and m.get("role") == "assistant" and isinstance(m.get("content"), str)]
    return [record["text"]] if isinstance(record.get("text"), str) and record["text"] else []


def unigram_score(tokenizer: Any, train: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]]) -> Score:
    """A floor every model should beat: token frequencies of the train split's replies and texts (add-one smoothed
    over the vocabulary, the end-of-turn token counted once per reply), scored on exactly the tokens the model is scored on."""
    counts: Counter[int] = Counter()
    for start in range(0, len(train), 256):  # batch tokenisation without templates: fitting needs only counts
        for record in train[start : start + 256]:
            texts = reply_texts(record)
            if texts:
                if "messages" in record:
                    counts[end_of_turn_id(tokenizer)] += len(texts)
                for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]:
                    counts.update(ids)
    vocab = len(tokenizer)
    total = sum(counts.values()) + vocab
    score = Score()
    for i, record in enumerate(test):
        for target in record_targets(tokenizer, record, f"test record {i + 1}"):
            scored = [t for t, m in zip(target.ids, target.mask) if m]
            score.nll_nats -= sum(math.log((counts[t] + 1) / total) for t in scored)
            score.tokens += len(scored)
            score.n_bytes += target.n_bytes
    return score


class PerplexityTask(Task):
    """Test-split perplexity and bits-per-byte, next to a unigram baseline fitted on the train split."""

    name = "ppl"

    def __init__(self, records: Sequence[dict[str, Any]], train: Sequence[dict[str, Any]], batch_size: int):
        self.records, self.train, self.batch_size = records, train, batch_size
        self.baselines: dict[str, Score] = {}  # per tokenizer: compared models often share one

    def baseline(self, tokenizer: Any) -> Score:
        key = sha256_json([sorted(tokenizer.get_vocab().items()), tokenizer.eos_token_id, tokenizer.bos_token_id,
                           getattr(tokenizer, "chat_template", None)])
        if key not in self.baselines:
            self.baselines[key] = unigram_score(tokenizer, self.train, self.records)
        return self.baselines[key]

    def evaluate(self, subject: Subject) -> TaskResult:
        score = score_records(subject.model, subject.tokenizer, self.records, self.batch_size,
                              desc=f"{subject.name}: perplexity", backend=subject.backend)
        metrics = score.as_metrics()
        if self.train:
            baseline = self.baseline(subject.tokenizer)
            metrics["unigram_perplexity"] = baseline.perplexity
            metrics["unigram_bits_per_byte"] = baseline.bits_per_byte
        return TaskResult(metrics)
