"""The one record format: chat records `{"messages": [...], "meta": {...}}` and text records `{"text": ...}`.

Every reader reports the file and line of a bad record, so users can fix their data.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from llmcycle.artifacts import publish
from llmcycle.errors import DataError

ROLES = ("system", "user", "assistant")
SPLITS = ("train", "val", "test")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; DataError names the file and line of bad JSON."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (bad byte 0x{raw[exc.start]:02x} at column "
                                f"{exc.start + 1}); is this a binary file?") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records atomically (temp file, then rename); returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def check_chat(record: dict[str, Any], where: str, need_assistant: bool = False) -> list[dict[str, str]]:
    """Validate a chat record's messages: known roles, string non-empty content, user/assistant alternation."""
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: field 'messages' must be a non-empty list")
    prev = None
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise DataError(f"{where}: messages[{i}] must be an object with 'role' and 'content'")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise DataError(f"{where}: messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str) or not content.strip():
            raise DataError(f"{where}: messages[{i}].content must be a non-empty string")
        if role == "system" and i != 0:
            raise DataError(f"{where}: messages[{i}]: a system message may only come first")
        if role != "system" and role == prev:
            raise DataError(f"{where}: messages[{i}]: two {role} turns in a row (roles must alternate)")
        prev = role
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: conversation has no assistant turn")
    return messages


def split_path(data_dir: str | Path, split: str) -> Path:
    """`DATA_DIR/<split>.jsonl`, with a clear error when a data dir lacks it."""
    path = Path(data_dir) / f"{split}.jsonl"
    if not Path(data_dir).is_dir():
        raise DataError(f"{data_dir}: no such data dir")
    if not path.is_file():
        raise DataError(f"{data_dir}: data dir has no {split} split ({path.name} missing)")
    return path


def load_split(data_dir: str | Path, split: str) -> list[dict[str, Any]]:
    return [obj for _, obj in read_jsonl(split_path(data_dir, split))]
