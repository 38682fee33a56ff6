"""A JSONL file of chat records (validated), of prompt/response or instruction/input/output rows (converted to
chat records), or of {"text"} rows (kept as text records). One file holds one kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from llmcycle.artifacts import sha256_file
from llmcycle.data.example import Example, SourceData
from llmcycle.errors import DataError
from llmcycle.records import check_chat, read_jsonl


def _string(row: dict, key: str, where: str, required: bool = True) -> str:
    value = row.get(key, "")
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise DataError(f"{where}: field {key!r} must be a non-empty string")
    return value


def row_to_record(row: dict[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """("chat"|"text", record) for one row, or a DataError naming the file and line."""
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    if "messages" in row:
        messages = check_chat(row, where)
        return "chat", {"messages": [{"role": m["role"], "content": m["content"]} for m in messages], "meta": meta}
    if "prompt" in row or "response" in row:
        user, reply = _string(row, "prompt", where), _string(row, "response", where)
    elif "instruction" in row or "output" in row:
        instruction, reply = _string(row, "instruction", where), _string(row, "output", where)
        extra = _string(row, "input", where, required=False)
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    elif "text" in row:
        return "text", {"text": _string(row, "text", where)}
    else:
        raise DataError(
            f"{where}: record needs 'messages', 'prompt'/'response', 'instruction'/'output' or 'text'"
        )
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    system = row.get("system")
    if isinstance(system, str) and system.strip():
        messages.insert(0, {"role": "system", "content": system})
    return "chat", {"messages": messages, "meta": meta}


def read_jsonl_source(path: Path, limit: Optional[int] = None) -> SourceData:
    if path.is_dir():
        raise DataError(f"{path}: source jsonl needs a .jsonl file, got a folder")
    examples: list[Example] = []
    kind = None
    for lineno, row in read_jsonl(path):
        if limit is not None and len(examples) >= limit:
            break
        where = f"{path}:{lineno}"
        row_kind, record = row_to_record(row, where)
        if kind is not None and row_kind != kind:
            raise DataError(f"{where}: a {row_kind} record in a file of {kind} records (one kind per file)")
        kind = row_kind
        if row_kind == "chat":
            record["meta"] = {"source": "jsonl", "line": lineno, **record["meta"]}
        examples.append(Example(record, group=f"line-{lineno}"))
    if not examples:
        raise DataError(f"{path}: holds no records")
    return SourceData(kind or "chat", examples, {path.name: sha256_file(path)}, {"records_read": len(examples)})
