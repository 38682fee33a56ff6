"""The shape every benchmark shares: items split into a scored part and a few-shot pool that is never scored."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from llmcycle.errors import ConfigError

FEWSHOT_HOLDOUT = 25  # rows held back as the few-shot pool when a package ships only one split


@dataclass
class Item:
    """One question. `context` is the prompt text, `choices` the candidate continuations (multiple choice),
    `gold` the index of the right one or the reference answer; `meta` holds what a metric needs."""

    id: str
    context: str
    choices: list[str] = field(default_factory=list)
    gold: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Split:
    """What a loader returns: scored items, the few-shot pool, and where the pool came from (for the report).
    `fixed_shots`: every question gets the pool's first `shots` examples in order (a curated exemplar list, as
    lm-eval's `first_n` sampler) instead of a seeded draw per question."""

    test: list[Item]
    fewshot: list[Item]
    fewshot_source: str
    fixed_shots: bool = False


@dataclass(frozen=True)
class Prompting:
    """How a question is put to the model: an instruction line before it, and optionally the chat template
    (with a system message) around it. The default is lm-eval's plain text prompt."""

    instruction: str = ""
    chat: bool = False
    system: str | None = None

    def render(self, text: str, tokenizer: Any = None) -> str:
        text = f"{self.instruction}\n\n{text}" if self.instruction else text
        if not self.chat:
            return text
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": text}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def holdout(items: list[Item], source: str, pool: int = FEWSHOT_HOLDOUT) -> Split:
    """One shipped split: its last `pool` rows become the few-shot pool and are never scored."""
    if len(items) <= pool:
        return Split(items, [], "none")
    return Split(items[:-pool], items[-pool:], f"last {pool} rows of {source}, never scored")


def limit_items(items: Sequence[Item], limit: int | None) -> list[Item]:
    """The first `limit` items: lm-eval's --limit takes the leading rows too, so both see the same questions."""
    return list(items) if limit is None else list(items[:limit])


def pool_size(split: Split) -> int:
    """Few-shot examples a question can draw on (per group, e.g. per MMLU subject, when items have groups)."""
    groups = [e.meta["group"] for e in split.fewshot if "group" in e.meta]
    if not groups:
        return len(split.fewshot)
    return min(groups.count(g) for g in set(groups))


def check_shots(task: str, shots: int, split: Split) -> None:
    if shots > pool_size(split):
        raise ConfigError(f"--shots {shots}: task {task!r} has {pool_size(split)} few-shot examples "
                          f"({split.fewshot_source})")


def fewshot_examples(split: Split, shots: int, seed: int, item_index: int) -> list[Item]:
    """`shots` pool items: the first ones for a fixed list, else drawn per question with a seeded generator (the
    same for every model)."""
    if shots == 0:
        return []
    if split.fixed_shots:
        return split.fewshot[:shots]
    rng = random.Random(seed * 1_000_003 + item_index)
    return rng.sample(split.fewshot, shots)
