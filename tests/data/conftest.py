"""Fixtures of the data stage: a Cornell-format corpus written byte by byte (ISO-8859-1, an empty utterance,
lines out of order), as a folder and as a zip, and helpers to run the stage and the CLI."""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

SEP = " +++$+++ "
VOCAB = (
    "apple river mountain quiet yellow engine garden silver music window planet coffee winter basket rocket "
    "pencil forest candle bridge thunder lemon castle violin ocean marble tiger cloud summer ladder jacket "
    "harbor meadow copper lantern puzzle saddle falcon orchard glacier velvet canyon pepper timber compass "
    "feather island ribbon walnut cobalt desert echo fabric galaxy hollow ivory jungle kettle lagoon mosaic"
).split()


def sentence(rng: random.Random, words: int = 9) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(words)).capitalize() + "."


def write_cornell(root: Path, movies: int = 6, convs_per_movie: int = 4, missing_ids: int = 0, seed: int = 0) -> Path:
    """A corpus in the distributed format. Movie m0's first conversation holds a latin-1 line and an empty
    utterance; movie_lines.txt is written in reverse (out of order); `missing_ids` conversations name a line id
    that does not exist."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines, convs, titles, chars = [], [], [], []
    next_id = 1
    for m in range(movies):
        a, b = f"u{2 * m}", f"u{2 * m + 1}"
        titles.append(SEP.join([f"m{m}", f"movie number {m}", str(1990 + m), "6.90", "1000", "['comedy', 'drama']"]))
        chars.append(SEP.join([a, f"ALICE{m}", f"m{m}", f"movie number {m}", "f", "1"]))
        chars.append(SEP.join([b, f"BOB{m}", f"m{m}", f"movie number {m}", "m", "2"]))
        for c in range(convs_per_movie):
            ids = []
            for t in range(4):
                text = sentence(rng)
                if m == 0 and c == 0 and t == 1:
                    text = "Un café crème, s'il vous plaît."  # latin-1 bytes on disk
                if m == 0 and c == 0 and t == 2:
                    text = ""  # an empty utterance, as in the real corpus
                speaker = a if t % 2 == 0 else b
                name = f"ALICE{m}" if t % 2 == 0 else f"BOB{m}"
                line = SEP.join([f"L{next_id}", speaker, f"m{m}", name, text])
                lines.append(line.rstrip() if not text else line)  # the empty last field, its space stripped
                ids.append(f"L{next_id}")
                next_id += 1
            convs.append(SEP.join([a, b, f"m{m}", str(ids)]))
    for k in range(missing_ids):
        convs.append(SEP.join(["u0", "u1", "m0", str([f"L{next_id}", f"L{900000 + k}"])]))
    (root / "movie_lines.txt").write_bytes("\n".join(reversed(lines)).encode("iso-8859-1") + b"\n")
    (root / "movie_conversations.txt").write_bytes("\n".join(convs).encode("iso-8859-1") + b"\n")
    (root / "movie_titles_metadata.txt").write_bytes("\n".join(titles).encode("iso-8859-1") + b"\n")
    (root / "movie_characters_metadata.txt").write_bytes("\n".join(chars).encode("iso-8859-1") + b"\n")
    return root


def zip_corpus(folder: Path, zip_path: Path) -> Path:
    """Zip like the distributed archive: files inside a sub-folder, plus macOS resource-fork junk."""
    with zipfile.ZipFile(zip_path, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, f"cornell movie-dialogs corpus/{file.name}")
            archive.writestr(f"__MACOSX/cornell movie-dialogs corpus/._{file.name}", b"\x00\x05junk")
    return zip_path


@pytest.fixture
def cornell_dir(tmp_path) -> Path:
    return write_cornell(tmp_path / "cornell")


@pytest.fixture
def cornell_zip(cornell_dir, tmp_path) -> Path:
    return zip_corpus(cornell_dir, tmp_path / "cornell_movie_dialogs_corpus.zip")


def write_jsonl_rows(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def read_split(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def all_records(out: Path) -> list[dict]:
    return [r for split in ("train", "val", "test") for r in read_split(out, split)]


def card(out: Path) -> dict:
    return json.loads((out / "card.json").read_text(encoding="utf-8"))


def step(card_dict: dict, name: str) -> dict:
    return next(f for f in card_dict["filters"] if f["step"] == name)


@pytest.fixture
def h():
    """Helpers for reading a data artifact dir and writing inputs."""
    return SimpleNamespace(
        read_split=read_split, all_records=all_records, card=card, step=step, write_jsonl=write_jsonl_rows,
        write_cornell=write_cornell, zip_corpus=zip_corpus, sentence=sentence,
    )
