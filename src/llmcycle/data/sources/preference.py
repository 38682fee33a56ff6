"""Preference records in TRL's conversational formats, checked the same way wherever they come from.

Paired: `{"prompt": [messages], "chosen": [messages], "rejected": [messages]}`; unpaired: `{"prompt": [...],
"completion": [...], "label": true|false}`. The prompt ends with a user turn; each side is the assistant's reply
(one or more messages starting with an assistant turn). Also accepted and converted: string prompts and replies,
and the implicit-prompt form (`chosen`/`rejected` are whole conversations sharing everything but their last turn).
All records of a prompt share a split group, so the same prompt never lands in train and test.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from llmcycle.artifacts import sha256_file
from llmcycle.data.example import Example, SourceData
from llmcycle.errors import DataError
from llmcycle.records import check_chat, read_jsonl

SIDES = ("chosen", "rejected", "completion")


def is_preference(record: dict[str, Any]) -> bool:
    return any(side in record for side in SIDES)


def message_lists(record: dict[str, Any]) -> list[list[dict[str, str]]]:
    """The record's message lists: [prompt, chosen, rejected] or [prompt, completion]."""
    return [record[k] for k in ("prompt", *SIDES) if k in record]


def _messages(value: Any, where: str, field: str, default_role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        value = [{"role": default_role, "content": value}]
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field {field!r} is missing or empty (a preference record needs it)")
    return [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict) else m for m in value]


def _check_side(reply: list[dict[str, str]], prompt: list[dict[str, str]], where: str, field: str) -> None:
    check_chat({"messages": prompt + reply}, f"{where}: {field}")
    if reply[0]["role"] != "assistant":
        raise DataError(f"{where}: field {field!r} must start with an assistant turn (the reply to the prompt)")


def split_implicit(row: dict[str, Any], where: str) -> dict[str, Any]:
    """chosen/rejected as whole conversations -> explicit prompt + last turns; their earlier turns must agree."""
    chosen = _messages(row.get("chosen"), where, "chosen", "assistant")
    rejected = _messages(row.get("rejected"), where, "rejected", "assistant")
    if chosen[:-1] != rejected[:-1]:
        raise DataError(f"{where}: the prompts of 'chosen' and 'rejected' disagree (all turns but the last must match)")
    return {**row, "prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}


def check_preference(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A validated, normalised preference record (paired or unpaired), or a DataError naming file:line and field."""
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    paired = "chosen" in row or "rejected" in row
    if paired and "completion" in row:
        raise DataError(f"{where}: a record is paired (chosen/rejected) or unpaired (completion/label), not both")
    if paired and "prompt" not in row:
        row = split_implicit(row, where)
    if "prompt" not in row:
        raise DataError(f"{where}: field 'prompt' is missing")
    prompt = _messages(row["prompt"], where, "prompt", "user")
    check_chat({"messages": prompt}, f"{where}: prompt")
    if prompt[-1]["role"] != "user":
        raise DataError(f"{where}: field 'prompt' must end with a user turn")
    if paired:
        chosen = _messages(row.get("chosen"), where, "chosen", "assistant")
        rejected = _messages(row.get("rejected"), where, "rejected", "assistant")
        _check_side(chosen, prompt, where, "chosen")
        _check_side(rejected, prompt, where, "rejected")
        if [m["content"].strip() for m in chosen] == [m["content"].strip() for m in rejected]:
            raise DataError(f"{where}: 'chosen' and 'rejected' are the same reply (nothing to prefer)")
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "meta": meta}
    completion = _messages(row.get("completion"), where, "completion", "assistant")
    _check_side(completion, prompt, where, "completion")
    label = row.get("label")
    if not isinstance(label, bool):
        raise DataError(f"{where}: field 'label' must be true (desirable) or false (undesirable), got {label!r}")
    return {"prompt": prompt, "completion": completion, "label": label, "meta": meta}


def prompt_group(prompt: list[dict[str, str]]) -> str:
    """Split group of a prompt: records answering the same conversation stay in one split."""
    key = json.dumps([[m["role"], " ".join(m["content"].lower().split())] for m in prompt])
    return "prompt-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def to_examples(records: list[dict[str, Any]]) -> list[Example]:
    return [Example(r, group=prompt_group(r["prompt"])) for r in records]


def read_preference_source(path: Path, limit: Optional[int] = None) -> SourceData:
    """A JSONL file of preference records."""
    if path.is_dir():
        raise DataError(f"{path}: source preference needs a .jsonl file, got a folder")
    records = []
    for lineno, row in read_jsonl(path):
        if limit is not None and len(records) >= limit:
            break
        record = check_preference(row, f"{path}:{lineno}")
        record["meta"] = {"source": "preference", "line": lineno, **record["meta"]}
        records.append(record)
    if not records:
        raise DataError(f"{path}: holds no preference records")
    return SourceData("preference", to_examples(records), {path.name: sha256_file(path)},
                      stats_of(records))


def stats_of(records: list[dict[str, Any]]) -> dict[str, int]:
    paired = sum(1 for r in records if "chosen" in r)
    return {"records_read": len(records), "paired": paired, "unpaired": len(records) - paired}


def read_preference_split(path: Path, kinds: tuple[str, ...] = ("paired", "unpaired")) -> list[dict[str, Any]]:
    """Records of a data dir's split file, checked again (a hand-edited file fails with its line)."""
    out = []
    for lineno, row in read_jsonl(path):
        if not is_preference(row):
            raise DataError(f"{path}:{lineno}: not a preference record (needs chosen/rejected or completion/label)")
        record = check_preference(row, f"{path}:{lineno}")
        if ("paired" if "chosen" in record else "unpaired") in kinds:
            out.append(record)
    return out
