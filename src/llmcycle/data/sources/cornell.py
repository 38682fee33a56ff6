"""The Cornell Movie-Dialogs Corpus as distributed: a folder or the zip, ISO-8859-1, ` +++$+++ ` separated.

Lines are looked up by id (the files are not in order). A conversation naming a line id that does not exist is
skipped and counted; only when no conversation resolves is that an error.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from llmcycle.data.example import Example, SourceData
from llmcycle.errors import DataError

SEP = " +++$+++ "
LINES, CONVERSATIONS = "movie_lines.txt", "movie_conversations.txt"
TITLES, CHARACTERS = "movie_titles_metadata.txt", "movie_characters_metadata.txt"
QUOTED = re.compile(r"'([^']*)'")


@dataclass
class Line:
    character: str
    movie: str
    name: str
    text: str


def read_corpus_files(path: Path) -> dict[str, tuple[str, bytes]]:
    """{basename: (display name, raw bytes)} of the corpus files found in a folder or a zip."""
    wanted = (LINES, CONVERSATIONS, TITLES, CHARACTERS)
    found: dict[str, tuple[str, bytes]] = {}
    if path.is_dir():
        for name in wanted:
            file = path / name
            if not file.is_file():  # the zip unpacks into a sub-folder: accept that too
                nested = sorted(p for p in path.glob(f"*/{name}") if "__MACOSX" not in p.parts)
                file = nested[0] if nested else file
            if file.is_file():
                found[name] = (str(file), file.read_bytes())
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                base = info.filename.rsplit("/", 1)[-1]
                if base in wanted and "__MACOSX" not in info.filename and base not in found:
                    found[base] = (f"{path}:{info.filename}", archive.read(info))
    else:
        raise DataError(f"{path}: not a folder or zip holding the Cornell corpus ({LINES}, {CONVERSATIONS})")
    missing = [n for n in (LINES, CONVERSATIONS) if n not in found]
    if missing:
        raise DataError(f"{path}: not a Cornell corpus folder or zip (missing {', '.join(missing)})")
    return found


def split_rows(where: str, data: bytes, fields: int):
    """Yield (line number, fields) of a ` +++$+++ ` file; the last field may be empty (empty utterances)."""
    for lineno, raw in enumerate(data.decode("iso-8859-1").splitlines(), 1):
        if not raw.strip():
            continue
        if raw.endswith(SEP.rstrip()) and not raw.endswith(SEP):
            raw += " "  # an empty last field whose trailing space was stripped
        parts = raw.split(SEP, fields - 1)
        if len(parts) != fields:
            raise DataError(f"{where}:{lineno}: expected {fields} fields separated by '{SEP.strip()}'")
        yield lineno, [p.strip() for p in parts]


def parse_lines(where: str, data: bytes) -> dict[str, Line]:
    return {p[0]: Line(p[1], p[2], p[3], p[4]) for _, p in split_rows(where, data, 5)}


def parse_titles(where: str, data: bytes) -> dict[str, dict]:
    out = {}
    for _, p in split_rows(where, data, 6):
        year = p[2][:4]
        out[p[0]] = {"title": p[1], "year": int(year) if year.isdigit() else p[2], "genres": QUOTED.findall(p[5])}
    return out


def parse_character_names(where: str, data: bytes) -> dict[str, str]:
    return {p[0]: p[1] for _, p in split_rows(where, data, 6)}


def conversation_examples(
    convo: list[Line], ids: list[str], index: int, movie: dict, assistant: str, join_with: str
) -> list[Example]:
    """One record per view: turns by speaker (consecutive lines of one speaker merged), roles by the option."""
    speakers: list[str] = []
    turns: list[list[str]] = []
    for line in convo:
        if speakers and speakers[-1] == line.character:
            turns[-1].append(line.text)
        else:
            speakers.append(line.character)
            turns.append([line.text])
    first = speakers[0]
    names = {line.character: line.name for line in convo}
    views = ("first", "second") if assistant == "both" else (assistant,)
    out = []
    for view in views:
        assistant_is_first = view == "first"
        messages = []
        for speaker, texts in zip(speakers, turns):
            is_assistant = (speaker == first) == assistant_is_first
            content = join_with.join(t for t in texts if t.strip())
            messages.append({"role": "assistant" if is_assistant else "user", "content": content})
        other = next((s for s in speakers if s != first), None)
        user_char, assistant_char = (other, first) if assistant_is_first else (first, other)
        meta = {
            "source": "cornell",
            "conversation": index,
            "movie_id": convo[0].movie,
            **movie,
            "characters": {"user": names.get(user_char), "assistant": names.get(assistant_char)},
            "line_ids": ids,
            "view": view,
        }
        out.append(Example({"messages": messages, "meta": meta}, group=convo[0].movie, variant=view))
    return out


def read_cornell(
    path: Path, assistant: str = "second", join_with: str = "\n", limit: Optional[int] = None
) -> SourceData:
    files = read_corpus_files(path)
    lines_where, lines_data = files[LINES]
    conv_where, conv_data = files[CONVERSATIONS]
    lines = parse_lines(lines_where, lines_data)
    titles = parse_titles(*files[TITLES]) if TITLES in files else {}
    names = parse_character_names(*files[CHARACTERS]) if CHARACTERS in files else {}
    examples: list[Example] = []
    total = skipped = 0
    first_problem = ""
    for lineno, parts in split_rows(conv_where, conv_data, 4):
        if limit is not None and total >= limit:
            break
        total += 1
        ids = QUOTED.findall(parts[3])
        if not ids:
            raise DataError(f"{conv_where}:{lineno}: expected a list of line ids such as ['L194', 'L195']")
        missing = [i for i in ids if i not in lines]
        if missing:
            skipped += 1
            first_problem = first_problem or f"{conv_where}:{lineno} names line id {missing[0]!r}, not in {LINES}"
            continue
        convo = [lines[i] for i in ids]
        for line in convo:
            line.name = line.name or names.get(line.character, "")
        movie = titles.get(convo[0].movie, {})
        examples.extend(conversation_examples(convo, ids, total - 1, movie, assistant, join_with))
    if total == 0:
        raise DataError(f"{conv_where}: holds no conversations")
    if not examples:
        raise DataError(f"{conv_where}: none of {total} conversations resolve (e.g. {first_problem})")
    hashes = {Path(name).name: hashlib.sha256(data).hexdigest() for name, (_, data) in sorted(files.items())}
    stats = {"conversations_read": total, "unresolvable_skipped": skipped, "lines": len(lines)}
    if first_problem:
        stats["first_unresolvable"] = first_problem
    return SourceData("chat", examples, hashes, stats)
