"""Chat records -> token ids + labels for supervised fine-tuning, with loss on assistant turns only.

The assistant mask itself (`tokenize_with_mask`, any chat template) is `llmcycle.modeldir.mask`; this module splits
long conversations, builds a split's examples and checks the prefix-render mask against a template's own
generation markers (tests, and on a few records in every run's manifest).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from llmcycle.errors import ConfigError, DataError, first_line
from llmcycle.infer.context import trim_tokens
from llmcycle.modeldir.mask import IGNORE, Example, end_of_turn_markers, generation_mask, prefix_render_example, \
    tokenize_with_mask
from llmcycle.records import check_chat, read_jsonl, split_path
from llmcycle.train.packing import Transform


@dataclass
class SplitStats:
    conversations: int = 0
    tokenized_conversations: int = 0
    examples: int = 0
    split_conversations: int = 0
    truncated_examples: int = 0
    dropped_examples: int = 0
    tokens: int = 0
    trained_tokens: int = 0


def read_conversations(data_dir: str | Path, split: str,
                       max_records: int | None = None) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """(where, messages) per chat record; `where` is `file:line` so every later error can name it."""
    path = split_path(data_dir, split)
    for count, (lineno, record) in enumerate(read_jsonl(path)):
        if max_records is not None and count >= max_records:
            break
        where = f"{path}:{lineno}"
        if "messages" not in record:
            raise DataError(f"{where}: record has no 'messages' (fine-tuning needs chat records)")
        messages = check_chat(record, where, need_assistant=True)
        yield where, [{"role": m["role"], "content": m["content"]} for m in messages]


def exchanges(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[list[dict[str, str]]]]:
    """(system messages, groups of turns that each end with an assistant turn); trailing non-assistant turns dropped."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    groups, current = [], []
    for msg in messages[len(system):]:
        current.append(msg)
        if msg["role"] == "assistant":
            groups.append(current)
            current = []
    return system, groups


def shared_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def conversation_examples(tokenizer: Any, messages: list[dict[str, str]], where: str, max_seq_len: int,
                          stats: SplitStats, markers: list[str]) -> list[Example]:
    """One example per conversation; a conversation longer than `max_seq_len` is split at exchange boundaries
    (each piece re-rendered with the system prompt, so its labels are computed on what the model sees), and a single
    exchange that alone is too long is truncated (its kept assistant tokens keep their labels)."""
    whole = tokenize_with_mask(tokenizer, messages, where, markers)
    if len(whole) <= max_seq_len:
        return [whole]
    stats.split_conversations += 1
    system, groups = exchanges(messages)
    alone = [tokenize_with_mask(tokenizer, system + g, where, markers) for g in groups]
    # tokens pieces share (BOS, system prompt, ...): a guess of what joining exchanges saves, checked by rendering
    overhead = shared_prefix(alone[0].input_ids, alone[1].input_ids) if len(alone) > 1 else 0
    out, first = [], 0
    while first < len(alone):
        members, size = [first], len(alone[first])
        while members[-1] + 1 < len(alone) and size + len(alone[members[-1] + 1]) - overhead <= max_seq_len:
            members.append(members[-1] + 1)
            size += len(alone[members[-1]]) - overhead
        while True:
            ex = alone[first] if len(members) == 1 else tokenize_with_mask(
                tokenizer, system + [m for i in members for m in groups[i]], where, markers)
            if len(ex) <= max_seq_len or len(members) == 1:
                break
            members.pop()
        first = members[-1] + 1
        if len(ex) > max_seq_len:
            stats.truncated_examples += 1
            ex = Example(trim_tokens(ex.input_ids, max_seq_len, keep="start"),
                         trim_tokens(ex.labels, max_seq_len, keep="start"))
        if ex.trained_tokens == 0:
            stats.dropped_examples += 1
            continue
        out.append(ex)
    return out


def build_examples(tokenizer: Any, data_dir: str | Path, split: str, max_seq_len: int,
                   max_records: int | None = None, token_budget: int | None = None,
                   sample_seed: int | None = None, transform: Transform | None = None
                   ) -> tuple[list[Example], SplitStats]:
    """A split's conversations as training examples, with counts for the manifest.

    Every record is read and checked up front (bad data fails before training), but only as many conversations are
    tokenized as the run can consume (`token_budget` tokens), taken in a seeded random order when `sample_seed` is
    given: a short run on a big split does not pay for rendering conversations it never sees."""
    stats = SplitStats()
    markers = end_of_turn_markers(tokenizer)
    conversations = list(read_conversations(data_dir, split, max_records))
    stats.conversations = len(conversations)
    if not conversations:
        raise DataError(f"{split_path(data_dir, split)}: no conversations to fine-tune on")
    order = list(range(len(conversations)))
    if sample_seed is not None:
        random.Random(sample_seed).shuffle(order)
    examples: list[Example] = []
    tokens = 0
    for i in order:
        if token_budget is not None and tokens >= token_budget:
            break
        where, messages = conversations[i]
        if transform is not None:
            messages = transform({"messages": messages}, i)["messages"]
        new = conversation_examples(tokenizer, messages, where, max_seq_len, stats, markers)
        examples.extend(new)
        tokens += sum(len(e) for e in new)
        stats.tokenized_conversations += 1
    if not examples:
        raise DataError(f"{split_path(data_dir, split)}: no assistant tokens survive max_seq_len={max_seq_len}")
    stats.examples = len(examples)
    stats.tokens = tokens
    stats.trained_tokens = sum(e.trained_tokens for e in examples)
    return examples, stats


def check_against_generation_mask(tokenizer: Any, data_dir: str | Path, split: str, n: int = 8) -> str:
    """Cross-check our mask with the template's own markers on a few conversations; a line for the manifest."""
    checked = 0
    for where, messages in read_conversations(data_dir, split, n):
        reference = generation_mask(tokenizer, messages)
        if reference is None:
            return "template has no generation markers; mask derived from prefix renders"
        ours = [int(x != IGNORE) for x in
                prefix_render_example(tokenizer, messages, where, end_of_turn_markers(tokenizer)).labels]
        if ours != reference:
            return f"differs from the template's generation markers at {where} (prefix-render mask used)"
        checked += 1
    return f"equals the template's generation-marker mask on {checked} conversations"
