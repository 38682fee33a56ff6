"""`--source` left out: the corpus's shape decides; a shape that says nothing gets a hint naming --source."""

from __future__ import annotations

import json
import zipfile

import pytest

from llmcycle.data.config import DataConfig
from llmcycle.data.detect import detect_source


@pytest.mark.parametrize("row, source", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "jsonl"),
    ({"prompt": "hi", "response": "hello"}, "jsonl"),
    ({"instruction": "say hi", "input": "", "output": "hi"}, "jsonl"),
    ({"text": "a paragraph"}, "jsonl"),
    ({"prompt": "hi", "chosen": "hello", "rejected": "go away"}, "preference"),
])
def test_jsonl_rows_name_their_source(tmp_path, row, source):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n" + json.dumps(row) + "\n", encoding="utf-8")
    assert detect_source(path) == source
    assert DataConfig(path=str(path)).source == source  # the config takes it when source is left out
    assert DataConfig(path=str(path), source="text").source == "text"  # a given source wins


def test_cornell_folder_and_zip_text_and_feedback(tmp_path):
    folder = tmp_path / "cornell movie-dialogs corpus"
    folder.mkdir()
    (folder / "movie_lines.txt").write_text("L1 +++$+++ u0 +++$+++ m0 +++$+++ A +++$+++ hi\n", encoding="latin-1")
    assert detect_source(folder) == "cornell" and detect_source(tmp_path) == "cornell"  # the zip's sub-folder too
    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(folder / "movie_lines.txt", "cornell movie-dialogs corpus/movie_lines.txt")
    assert detect_source(archive) == "cornell"
    (tmp_path / "book.txt").write_text("words", encoding="utf-8")
    assert detect_source(tmp_path / "book.txt") == "text"
    assert detect_source(tmp_path / "feedback.db") is None  # missing: nothing to read
    (tmp_path / "feedback.db").write_bytes(b"")
    assert detect_source(tmp_path / "feedback.db") == "feedback"


def test_chitchat_error_suggests_source(cli, tmp_path):
    path = tmp_path / "mine.json"
    path.write_text("[1, 2]", encoding="utf-8")
    code, _, err = cli("data", "--path", path, "--out", tmp_path / "out")
    assert code == 2 and "--source (jsonl" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
