"""Cleaning steps: unicode/whitespace normalisation and length rules for turns, conversations and texts.

Each step takes and returns the list of examples plus a StepReport counting what it removed or changed.
"""

from __future__ import annotations

import re
import unicodedata

from llmcycle.data.config import DataConfig
from llmcycle.data.example import Example, StepReport

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff]")
SPACES = re.compile(r"[^\S\n]+")
SPACE_AROUND_NEWLINE = re.compile(r" ?\n ?")
MANY_NEWLINES = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """NFKC (full-width forms, ligatures, non-breaking spaces), no control characters, single spaces, at most one
    blank line, no outer whitespace."""
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = CONTROL.sub("", text)
    text = SPACES.sub(" ", text)
    text = SPACE_AROUND_NEWLINE.sub("\n", text)
    text = MANY_NEWLINES.sub("\n\n", text)
    return text.strip()


def map_contents(examples: list[Example], fn, report: StepReport) -> list[Example]:
    """Apply `fn` to every message content / text in place, counting changed records."""
    for example in examples:
        changed = False
        if "text" not in example.record:
            for message in (m for messages in example.message_lists() for m in messages):
                new = fn(message["content"])
                if new != message["content"]:
                    message["content"], changed = new, True
        else:
            new = fn(example.record["text"])
            if new != example.record["text"]:
                example.record["text"], changed = new, True
        report.changed += changed
    return examples


def normalize(examples: list[Example], cfg: DataConfig) -> tuple[list[Example], StepReport]:
    report = StepReport("normalize", True)
    return map_contents(examples, normalize_text, report), report


def fix_turns(messages: list[dict], cfg: DataConfig, counts: dict[str, int]) -> list[dict]:
    """Drop empty/too-short turns (merging the same-role neighbours they separated), end the conversation before a
    too-long turn, and trim so it starts with a user turn and ends with an assistant turn."""
    start = 1 if messages and messages[0]["role"] == "system" else 0
    system = [messages[0]] if start and messages[0]["content"].strip() else []
    kept: list[dict] = []
    for message in messages[start:]:
        size = len(message["content"].strip())
        if size < cfg.min_turn_chars:
            counts["turns_dropped"] += 1
            continue
        if size > cfg.max_turn_chars:
            counts["cut_at_long_turn"] += 1
            break
        if kept and kept[-1]["role"] == message["role"]:
            merged = kept[-1]["content"] + cfg.join_with + message["content"]
            kept[-1] = {"role": message["role"], "content": merged}
            counts["turns_merged"] += 1
        else:
            kept.append(dict(message))
    while kept and kept[0]["role"] != "user":
        kept.pop(0)
        counts["edge_turns_trimmed"] += 1
    while kept and kept[-1]["role"] != "assistant":
        kept.pop()
        counts["edge_turns_trimmed"] += 1
    return system + kept


def turn_length(examples: list[Example], cfg: DataConfig) -> tuple[list[Example], StepReport]:
    counts = {"turns_dropped": 0, "turns_merged": 0, "cut_at_long_turn": 0, "edge_turns_trimmed": 0}
    report = StepReport("turn_length", True, details=counts)
    for example in examples:
        messages = example.record["messages"]
        fixed = fix_turns(messages, cfg, counts)
        if fixed != messages:
            example.record["messages"] = fixed
            report.changed += 1
    return examples, report


def conversation_length(examples: list[Example], cfg: DataConfig) -> tuple[list[Example], StepReport]:
    """Keep conversations with min_turns..max_turns user/assistant turns, at least one of each."""
    report = StepReport("conversation_length", True, details={"too_short": 0, "too_long": 0})
    kept = []
    for example in examples:
        roles = [m["role"] for m in example.record["messages"] if m["role"] != "system"]
        if len(roles) < cfg.min_turns or "user" not in roles or "assistant" not in roles:
            report.details["too_short"] += 1
        elif len(roles) > cfg.max_turns:
            report.details["too_long"] += 1
        else:
            kept.append(example)
    report.removed = len(examples) - len(kept)
    return kept, report


def text_length(examples: list[Example], cfg: DataConfig) -> tuple[list[Example], StepReport]:
    report = StepReport("text_length", True)
    kept = [e for e in examples if len(e.record["text"]) >= cfg.min_text_chars]
    report.removed = len(examples) - len(kept)
    return kept, report
