"""Every bad input to `llmcycle pretrain` / `llmcycle tokenizer` is one line on stderr and exit code 2."""

from __future__ import annotations

import json

import pytest

from llmcycle.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(capsys, argv, pattern: str) -> None:
    code, _, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert pattern in lines[0], lines[0]


@pytest.fixture
def pretrain_args(chat_data_dir, tiny_tokenizer_dir, tmp_path):
    def make(*extra, data=chat_data_dir, tok=tiny_tokenizer_dir):
        return ["pretrain", "--data", str(data), "--tokenizer", str(tok), "--out", str(tmp_path / "base"),
                "--preset", "tiny", "--max-steps", "2", *extra]
    return make


def test_data_dir_without_train_split(capsys, tmp_path, pretrain_args):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "val.jsonl").write_text('{"text": "hi"}\n')
    assert_one_line_error(capsys, pretrain_args(data=tmp_path / "data"), "has no train split")
    assert not (tmp_path / "base").exists() and not (tmp_path / "base.partial").exists()


def test_empty_train_split(capsys, tmp_path, pretrain_args):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("\n")
    assert_one_line_error(capsys, pretrain_args(data=tmp_path / "data"), "train split is empty")


def test_too_little_data_for_one_sequence(capsys, tmp_path, pretrain_args):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text(json.dumps({"text": "hi"}) + "\n")
    assert_one_line_error(capsys, pretrain_args(data=tmp_path / "data"), "fewer than one sequence")


def test_record_that_is_neither_chat_nor_text(capsys, tmp_path, pretrain_args):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text(json.dumps({"text": "hi"}) + "\n" + json.dumps({"x": 1}) + "\n")
    assert_one_line_error(capsys, pretrain_args(data=tmp_path / "data"), "train.jsonl:2: record has neither")


def test_tokenizer_dir_that_does_not_load(capsys, tmp_path, pretrain_args):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text("{not json")
    assert_one_line_error(capsys, pretrain_args(tok=tmp_path / "tok"), "tokenizer does not load")


def test_unknown_preset(capsys, pretrain_args):
    assert_one_line_error(capsys, pretrain_args("--preset", "gigantic"), "unknown model preset 'gigantic'")


def test_resume_without_checkpoint(capsys, pretrain_args):
    assert_one_line_error(capsys, pretrain_args("--resume"), "no checkpoint to resume from")


def test_sequence_longer_than_the_model_allows(capsys, pretrain_args):
    assert_one_line_error(capsys, pretrain_args("--set", "seq_len=4096"), "above the model's maximum of 256")


def test_unknown_config_key(capsys, pretrain_args):
    assert_one_line_error(capsys, pretrain_args("--set", "train.lrr=1"), "train.lrr: unknown key")


def test_tokenizer_without_train_split(capsys, tmp_path):
    (tmp_path / "data").mkdir()
    assert_one_line_error(capsys, ["tokenizer", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "t")],
                          "has no train split")
