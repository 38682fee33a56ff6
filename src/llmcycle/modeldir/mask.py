"""The assistant mask: which tokens of a rendered conversation fine-tuning trains, for ANY chat template.

Templates without `{% generation %}` markers (Phi-3, Llama-3, Mistral, ...) are handled by finding each assistant
turn in character space through conversation-prefix renders: the turn starts where `messages[:i]` rendered with the
generation prompt ends, and ends at its end-of-turn marker (the first special token after the turn's content, e.g.
`<|im_end|>`, `<|end|>`, `<|eot_id|>`, `</s>`), which is trained too so the model learns to stop. Characters map to
tokens through the fast tokenizer's offsets, so the labels follow the exact ids the template produces. A template
that has the markers (llmcycle's own) is rendered once and its marker mask used, which is faster.

It lives at the bottom (not with fine-tuning) because the model's end-of-turn id is read off this very mask.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llmcycle.errors import ConfigError, DataError, first_line
from llmcycle.modeldir.chat import render_chat

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


def generation_mask(tokenizer: Any, messages: list[dict[str, str]]) -> list[int] | None:
    """The `{% generation %}` mask transformers computes, for templates that have the markers (else None)."""
    if not has_generation_markers(tokenizer):
        return None
    enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    return list(enc["assistant_masks"])
