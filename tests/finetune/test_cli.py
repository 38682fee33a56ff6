"""`llmcycle finetune` through the real CLI: a run config section, flags, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from llmcycle.records import write_jsonl
from tests.conftest import chat_records

SMALL = ["--set", "train.batch_size=4", "--set", "max_seq_len=128", "--set", "train.eval_every=2",
         "--set", "lora.r=4"]


def test_cli_run_config_section_and_flags(make_tiny_model, chat_data_dir, tmp_path, cli):
    run_cfg = tmp_path / "run.yaml"
    run_cfg.write_text("finetune:\n  method: lora\n  lora: {r: 4, alpha: 8}\n  train: {max_steps: 50, lr: 1.0e-3}\n"
                       "merge:\n  dtype: fp32\n")
    code, _, err = cli("finetune", "--data", chat_data_dir, "--model", make_tiny_model("llama"), "--out",
                       tmp_path / "sft", "-c", run_cfg, "--max-steps", 2, "--tuning", "dora", *SMALL[:4])
    assert code == 0, err
    config = json.loads((tmp_path / "sft" / "manifest.json").read_text())["config"]
    assert config["method"] == "dora" and config["train"]["max_steps"] == 2 and config["train"]["lr"] == 1e-3
    assert config["lora"]["alpha"] == 8 and config["train"]["weight_decay"] == 0.0  # finetune defaults kept
    code, _, err = cli("merge", "--model", tmp_path / "sft", "--out", tmp_path / "merged", "-c", run_cfg)
    assert code == 0, err
    assert json.loads((tmp_path / "merged" / "manifest.json").read_text())["config"]["dtype"] == "fp32"


@pytest.mark.parametrize("records, message", [
    ([{"text": "just text"}], r"train.jsonl:1: record has no 'messages'"),
    (chat_records(2) + [{"messages": [{"role": "user", "content": "anyone?"}]}],
     r"train.jsonl:3: conversation has no assistant turn"),
])
def test_bad_data_is_one_line_naming_file_and_line(records, message, make_tiny_model, chat_data_dir, tmp_path, cli,
                                                   one_line_error):
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", records)
    write_jsonl(data / "val.jsonl", chat_records(2))
    code, _, err = cli("finetune", "--data", data, "--model", make_tiny_model("llama"), "--out", tmp_path / "o",
                       "--max-steps", 1)
    assert message in one_line_error(code, err)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_base_that_cannot_be_loaded(chat_data_dir, make_tiny_model, tmp_path, cli, one_line_error):
    code, _, err = cli("finetune", "--data", chat_data_dir, "--model", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert "nowhere: no such model dir" in one_line_error(code, err)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):  # but no weights
        (broken / name).write_bytes((make_tiny_model("llama") / name).read_bytes())
    code, _, err = cli("finetune", "--data", chat_data_dir, "--model", broken, "--out", tmp_path / "o")
    assert "model does not load" in one_line_error(code, err)
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_bad_method_and_missing_split(chat_data_dir, make_tiny_model, tmp_path, cli, one_line_error):
    base = make_tiny_model("llama")
    code, _, err = cli("finetune", "--data", chat_data_dir, "--model", base, "--out", tmp_path / "o", "--tuning", "x")
    assert "method" in one_line_error(code, err)
    code, _, err = cli("finetune", "--data", tmp_path, "--model", base, "--out", tmp_path / "o")
    assert "no train split" in one_line_error(code, err)
    code, _, err = cli("finetune", "--data", chat_data_dir, "--model", base, "--out", tmp_path / "o",
                       "--set", "lora.target_modules=[nope_proj]", "--max-steps", 1)
    assert "nope_proj not found" in one_line_error(code, err)


def test_resume_without_checkpoint_is_one_line(chat_data_dir, make_tiny_model, tmp_path, cli, one_line_error):
    code, _, err = cli("finetune", "--data", chat_data_dir, "--model", make_tiny_model("llama"), "--out",
                       tmp_path / "o", "--resume", *SMALL)
    assert "checkpoint" in one_line_error(code, err)
