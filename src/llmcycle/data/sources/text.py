"""Plain text files or folders (for pretraining) as {"text"} records: paragraphs packed into chunks of about
`chunk_chars`, so one long book still gives records that can be split and deduplicated.

Splits are grouped by source file, so no book has chunks in two splits. A single file is cut into
`SINGLE_FILE_SECTIONS` contiguous sections instead (each one split's), so it still yields val and test text
while only the sections' edges touch."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator, Optional

from llmcycle.artifacts import sha256_file
from llmcycle.data.example import Example, SourceData
from llmcycle.errors import DataError

TEXT_SUFFIXES = {".txt", ".md", ".text", ".rst"}
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
SINGLE_FILE_SECTIONS = 10


def text_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if not files:
        raise DataError(f"{path}: folder holds no text files ({', '.join(sorted(TEXT_SUFFIXES))})")
    return files


def chunks(text: str, chunk_chars: int) -> Iterator[str]:
    """Consecutive paragraphs joined until the next one would pass `chunk_chars`."""
    current: list[str] = []
    size = 0
    for paragraph in PARAGRAPH_BREAK.split(text):
        paragraph = paragraph.strip("\n")
        if not paragraph.strip():
            continue
        if current and size + len(paragraph) > chunk_chars:
            yield "\n\n".join(current)
            current, size = [], 0
        current.append(paragraph)
        size += len(paragraph) + 2
    if current:
        yield "\n\n".join(current)


def read_text(path: Path, chunk_chars: int = 4000, limit: Optional[int] = None) -> SourceData:
    root = path if path.is_dir() else path.parent
    examples: list[Example] = []
    hashes: dict[str, str] = {}
    files = text_files(path)
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{file}: not UTF-8 text (bad byte at offset {exc.start})") from None
        rel = file.relative_to(root).as_posix()
        hashes[rel] = sha256_file(file)
        pieces = list(chunks(text.replace("\r\n", "\n"), chunk_chars))
        if limit is not None:
            pieces = pieces[: max(0, limit - len(examples))]
        for index, chunk in enumerate(pieces):
            group = rel if len(files) > 1 else f"{rel}#section{index * SINGLE_FILE_SECTIONS // len(pieces)}"
            examples.append(Example({"text": chunk}, group=group))
    if not examples:
        raise DataError(f"{path}: holds no text")
    return SourceData("text", examples, hashes, {"files_read": len(files)})
