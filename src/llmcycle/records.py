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


# ---- preference records (TRL's conversational formats) ----------------------------------------------------
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


def _check_side(reply: list[dict[str, str]], prompt: list[dict[str, str]], where: str, field: str,
                may_be_empty: bool = False) -> None:
    """`may_be_empty`: an empty reply is a legitimate undesirable one (a model that said nothing was rejected)."""
    if may_be_empty and len(reply) == 1 and reply[0]["role"] == "assistant" and reply[0]["content"] == "":
        return
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
        _check_side(rejected, prompt, where, "rejected", may_be_empty=True)
        if [m["content"].strip() for m in chosen] == [m["content"].strip() for m in rejected]:
            raise DataError(f"{where}: 'chosen' and 'rejected' are the same reply (nothing to prefer)")
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "meta": meta}
    completion = _messages(row.get("completion"), where, "completion", "assistant")
    label = row.get("label")
    if not isinstance(label, bool):
        raise DataError(f"{where}: field 'label' must be true (desirable) or false (undesirable), got {label!r}")
    _check_side(completion, prompt, where, "completion", may_be_empty=not label)
    return {"prompt": prompt, "completion": completion, "label": label, "meta": meta}


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
