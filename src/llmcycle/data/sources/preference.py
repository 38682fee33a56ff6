"""The `preference` data source: a JSONL file of preference records (checked by `llmcycle.records`), each record
grouped by its prompt for splitting.

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
from llmcycle.records import check_preference, read_jsonl


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

