"""A corpus's source read from its shape, so `llmcycle data --path mine.jsonl` needs no `--source`: a .jsonl of
chat, prompt/response, Alpaca or text rows is `jsonl`, of chosen/rejected or completion/label rows `preference`; a
folder or zip holding movie_lines.txt is `cornell`; a SQLite file `feedback`; .txt/.md files or folders `text`;
a .json file `chitchat` (its own format)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Optional

CHAT_KEYS = ("messages", "prompt", "instruction", "text")
PREFERENCE_KEYS = ("chosen", "rejected", "completion")
CORNELL_FILE = "movie_lines.txt"
TEXT_SUFFIXES = (".txt", ".md", ".text", ".rst")


def detect_source(path: str | Path) -> Optional[str]:
    """The source a file or folder looks like, or None when its shape says nothing (the caller's default holds)."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / CORNELL_FILE).is_file() or any(path.glob(f"*/{CORNELL_FILE}")):
            return "cornell"
        return "text" if any(p.suffix in TEXT_SUFFIXES for p in path.rglob("*") if p.is_file()) else None
    if not path.is_file():
        return None
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return "cornell" if is_cornell_zip(path) else None
    if suffix == ".jsonl":
        return jsonl_kind(path)
    if suffix in (".db", ".sqlite", ".sqlite3"):
        return "feedback"
    if suffix in TEXT_SUFFIXES:
        return "text"
    return "chitchat" if suffix == ".json" else None


def is_cornell_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(CORNELL_FILE) for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def jsonl_kind(path: Path) -> Optional[str]:
    """jsonl or preference, from the keys of the first record (the readers check every record later)."""
    try:
        with open(path, encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), "")
        row = json.loads(first)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "jsonl"  # its reader names the bad line
    if isinstance(row, dict) and any(k in row for k in PREFERENCE_KEYS) and "messages" not in row:
        return "preference"
    return "jsonl"
