"""Chat records -> token ids + labels for supervised fine-tuning, with loss on assistant turns only.

The assistant mask must be right for ANY chat template, including ones without `{% generation %}` markers (Phi-3,
Llama-3, Mistral, ...). We find each assistant turn in character space by rendering conversation prefixes: the turn
starts where `messages[:i]` rendered with the generation prompt ends, and ends at its end-of-turn marker (the first
special token after the turn's content, e.g. `<|im_end|>`, `<|end|>`, `<|eot_id|>`, `</s>`), which is trained too so
the model learns to stop. Characters map to tokens through the fast tokenizer's offsets, so the labels follow the exact
ids the template produces. A template that has the markers (llmcycle's own) is rendered once and its marker mask used,
which is faster; the two methods are checked against each other (tests, and on a few records in every run's manifest).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from llmcycle.errors import ConfigError, DataError, first_line
from llmcycle.infer.context import trim_tokens
from llmcycle.records import check_chat, read_jsonl, split_path
from llmcycle.tokenizer import render_chat

IGNORE = -100
GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")


@dataclass
class Example:
    """One training sequence: `labels[t]` is `input_ids[t]` on assistant tokens, IGNORE elsewhere (unshifted)."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


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


def end_of_turn_markers(tokenizer: Any) -> list[str]:
    """Strings that can end an assistant turn: the EOS token and every special token."""
    markers = [tokenizer.eos_token] if tokenizer.eos_token else []
    for token in getattr(tokenizer, "all_special_tokens", []):
        if token and token not in markers:
            markers.append(token)
    for added in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(added, "special", False) and added.content not in markers:
            markers.append(added.content)
    return markers


def common_prefix_length(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]], full: str, where: str,
                    markers: list[str]) -> list[tuple[int, int]]:
    """Character spans [start, end) of each assistant turn's content plus its end-of-turn marker in `full`."""
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prefix = render_chat(tokenizer, messages[:i], where, generation_prompt=True)
        if not full.startswith(prefix):
            raise ConfigError(
                f"{where}: the chat template renders earlier turns differently once later turns follow, so the "
                "assistant-only loss mask cannot be derived from it"
            )
        start = len(prefix)
        limit = common_prefix_length(full, render_chat(tokenizer, messages[: i + 1], where))
        region = full[start:limit]
        content = msg["content"].strip()
        found = region.find(content)
        content_end = start + (found + len(content) if found >= 0 else 0)
        end = turn_end(full, content_end, limit, markers)
        spans.append((start, end))
    return spans


def turn_end(full: str, content_end: int, limit: int, markers: list[str]) -> int:
    """End of the first end-of-turn marker after the content (within the turn), else the turn without trailing space."""
    best = None
    for marker in markers:
        pos = full.find(marker, content_end, limit)
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, pos + len(marker))
    if best is not None:
        return best[1]
    end = limit
    while end > content_end and full[end - 1].isspace():
        end -= 1
    return end


def has_generation_markers(tokenizer: Any) -> bool:
    return bool(GENERATION_TAG.search(getattr(tokenizer, "chat_template", None) or ""))


def tokenize_with_mask(tokenizer: Any, messages: list[dict[str, str]], where: str,
                       markers: list[str] | None = None) -> Example:
    """Token ids of the rendered conversation and labels that keep exactly the assistant tokens + end-of-turn.

    A template with `{% generation %}` markers is rendered once and its own mask used (plus the end-of-turn token
    when the markers leave it out); any other template goes through prefix renders (`prefix_render_example`)."""
    markers = end_of_turn_markers(tokenizer) if markers is None else markers
    if has_generation_markers(tokenizer):
        return generation_marker_example(tokenizer, messages, where, markers)
    return prefix_render_example(tokenizer, messages, where, markers)


def generation_marker_example(tokenizer: Any, messages: list[dict[str, str]], where: str,
                              markers: list[str]) -> Example:
    try:
        enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True, tokenizer_kwargs={"verbose": False})
    except Exception as exc:  # jinja raises TemplateError / its own exceptions for conversations it refuses
        raise DataError(f"{where}: the chat template refuses this conversation ({first_line(exc)})") from None
    ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
    marker_ids = {tokenizer.convert_tokens_to_ids(m) for m in markers}
    for t in range(len(ids) - 1):
        if mask[t] and not mask[t + 1] and ids[t + 1] in marker_ids:
            mask[t + 1] = 1
    return Example(ids, [i if m else IGNORE for i, m in zip(ids, mask)])


def prefix_render_example(tokenizer: Any, messages: list[dict[str, str]], where: str, markers: list[str]) -> Example:
    """The mask from prefix renders and character offsets; works for templates without generation markers."""
    full = render_chat(tokenizer, messages, where)
    spans = assistant_spans(tokenizer, messages, full, where, markers)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    labels = [IGNORE] * len(ids)
    span_index = 0
    for t, (s, e) in enumerate(offsets):
        if e <= s:
            continue
        while span_index < len(spans) and spans[span_index][1] <= s:
            span_index += 1
        if span_index < len(spans) and spans[span_index][0] <= s < spans[span_index][1]:
            labels[t] = ids[t]
    return Example(list(ids), labels)


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
                   sample_seed: int | None = None) -> tuple[list[Example], SplitStats]:
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


def generation_mask(tokenizer: Any, messages: list[dict[str, str]]) -> list[int] | None:
    """The `{% generation %}` mask transformers computes, for templates that have the markers (else None)."""
    if not has_generation_markers(tokenizer):
        return None
    enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    return list(enc["assistant_masks"])


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
