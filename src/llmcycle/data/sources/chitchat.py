"""The chitchat-dataset package (7,168 conversations), or a JSON file in its format.

Each conversation is {"messages": [[{text, timestamp, sender}, ...], ...], "prompt": ..., "start": ...}; an inner
list holds one sender's consecutive messages, which become one turn. The first sender is the user.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from llmcycle.data.example import Example, SourceData
from llmcycle.errors import DataError


OTHER_SOURCES = "jsonl for chat/prompt-response/Alpaca/text rows, preference, cornell, text, feedback"


def package_path() -> Path:
    """The JSON file shipped inside the chitchat-dataset package (no download)."""
    try:
        import chitchat_dataset
    except ImportError:
        raise DataError("source chitchat needs the chitchat-dataset package (pip install chitchat-dataset)") from None
    return Path(chitchat_dataset.__file__).with_name("dataset.json")


def conversation_turns(where: str, convo: Any, join_with: str) -> list[tuple[str, str]]:
    """[(sender, text)] with consecutive messages of one sender joined."""
    groups = convo.get("messages") if isinstance(convo, dict) else None
    if not isinstance(groups, list):
        raise DataError(f"{where}: expected an object with a 'messages' list of message lists")
    turns: list[tuple[str, list[str]]] = []
    for group in groups:
        for message in group if isinstance(group, list) else [group]:
            if not isinstance(message, dict) or not isinstance(message.get("text"), str):
                raise DataError(f"{where}: every message must be an object with a 'text' string")
            sender = str(message.get("sender", ""))
            if turns and turns[-1][0] == sender:
                turns[-1][1].append(message["text"])
            else:
                turns.append((sender, [message["text"]]))
    return [(sender, join_with.join(t for t in texts if t.strip())) for sender, texts in turns]


def to_example(conv_id: str, convo: dict, turns: list[tuple[str, str]]) -> Example:
    first = turns[0][0] if turns else ""
    messages = [{"role": "user" if s == first else "assistant", "content": text} for s, text in turns]
    meta = {"source": "chitchat", "id": conv_id}
    for key in ("prompt", "start", "ratings"):  # ratings: witty/upbeat/interesting, 1-10 (5,988 of 7,168)
        if convo.get(key) is not None:
            meta[key] = convo[key]
    return Example({"messages": messages, "meta": meta}, group=conv_id)


def read_chitchat(path: Optional[Path] = None, join_with: str = "\n", limit: Optional[int] = None) -> SourceData:
    file = Path(path) if path is not None else package_path()
    if not file.is_file():
        raise DataError(f"{file}: chitchat JSON file not found")
    raw = file.read_bytes()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = f":{exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise DataError(f"{file}{line}: not valid chitchat JSON ({getattr(exc, 'msg', exc)}); "
                        f"another format needs --source ({OTHER_SOURCES})") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"{file}: expected a non-empty object mapping conversation ids to conversations (chitchat "
                        f"format); another format needs --source ({OTHER_SOURCES})")
    examples = []
    for conv_id, convo in data.items():
        if limit is not None and len(examples) >= limit:
            break
        turns = conversation_turns(f"{file}: conversation {conv_id}", convo, join_with)
        examples.append(to_example(str(conv_id), convo, turns))
    stats = {"conversations_read": len(examples)}
    return SourceData("chat", examples, {file.name: hashlib.sha256(raw).hexdigest()}, stats)
