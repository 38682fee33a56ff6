"""Text corpora split by source file; a JSONL file that is not UTF-8 is one line naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmcycle.errors import DataError


def test_chunks_of_one_file_share_a_group(tmp_path):
    from llmcycle.data.sources.text import read_text

    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text("\n\n".join(f"{name} paragraph {i} " + "word " * 20 for i in range(12)))
    data = read_text(tmp_path, chunk_chars=200)
    groups = {ex.group for ex in data.examples}
    assert len(data.examples) > 12 and groups == {"a.txt", "b.txt", "c.txt"}


def test_one_file_is_split_in_contiguous_sections(tmp_path):
    from llmcycle.data.sources.text import SINGLE_FILE_SECTIONS, read_text

    book = tmp_path / "book.txt"
    book.write_text("\n\n".join(f"paragraph {i} " + "word " * 20 for i in range(50)))
    groups = [ex.group for ex in read_text(book, chunk_chars=200).examples]
    assert len(set(groups)) == SINGLE_FILE_SECTIONS
    assert groups == sorted(groups, key=lambda g: int(g.rsplit("section", 1)[1]))  # contiguous runs


def test_data_stage_keeps_each_file_in_one_split(tmp_path, cli):
    from llmcycle.records import load_split

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k in range(12):
        (corpus / f"book{k}.txt").write_text("\n\n".join(f"book {k} part {i}: " + f"w{k}x{i} " * 30
                                                          for i in range(6)))
    code, _, err = cli("data", "--source", "text", "--path", corpus, "--out", tmp_path / "data",
                       "--set", "text_chunk_chars=200")
    assert code == 0, err
    where = {}
    for split in ("train", "val", "test"):
        for rec in load_split(tmp_path / "data", split):
            book = rec["text"].split(" part ")[0]
            assert where.setdefault(book, split) == split, f"{book} in two splits"
    assert len(set(where.values())) == 3


@pytest.mark.parametrize("content", [b'{"text": "ok"}\n{"text": "caf\xe9"}\n', b"\x89PNG\r\n\x1a\n\x00\x00\xff\xd8"])
def test_non_utf8_jsonl_names_file_and_line(tmp_path, content):
    from llmcycle.records import read_jsonl

    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        list(read_jsonl(path))
    line = 2 if content.startswith(b"{") else 1
    assert str(err.value).startswith(f"{path}:{line}: not UTF-8") and "\n" not in str(err.value)


def test_non_utf8_jsonl_through_the_cli(tmp_path, cli):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"messages": [{"role": "user", "content": "\xff"}]}\n')
    code, _, err = cli("data", "--source", "jsonl", "--path", path, "--out", tmp_path / "out")
    assert code == 2 and err.strip().splitlines() == [f"error: {path}:1: not UTF-8 text (bad byte 0xff at column "
                                                      "44); is this a binary file?"]
    assert not Path(tmp_path / "out").exists()
