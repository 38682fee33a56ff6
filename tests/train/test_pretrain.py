"""`llmcycle pretrain` end to end on the tiny preset: an ordinary HF model dir that learned something."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from llmcycle.train import pretrain as pretrain_module
from llmcycle.train.pretrain import PretrainConfig, run

from .test_cli_errors import run_cli

FAST = {"seq_len": 32, "sample_tokens": 8,
        "train": {"batch_size": 4, "lr": 5e-3, "warmup_steps": 2, "eval_every": 5, "save_every": 5, "log_every": 1}}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fast_cfg(**train) -> PretrainConfig:
    data = json.loads(json.dumps(FAST))
    data["train"].update(train)
    return PretrainConfig(preset="tiny", **data)


def test_pretrain_cli_writes_a_loadable_model_that_beats_unigram(tmp_path, chat_data_dir, tiny_tokenizer_dir, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    out = tmp_path / "base"
    sets = [a for k, v in [("seq_len", 32), ("train.batch_size", 8), ("train.lr", 1e-2), ("train.warmup_steps", 3),
                           ("train.eval_every", 10)] for a in ("--set", f"{k}={v}")]
    code, stdout, err = run_cli(capsys, "pretrain", "--data", str(chat_data_dir), "--tokenizer",
                                str(tiny_tokenizer_dir), "--out", str(out), "--preset", "tiny", "--max-steps", "30",
                                *sets)
    assert code == 0, err
    assert stdout.strip() == str(out) and not (tmp_path / "base.partial").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    gen = GenerationConfig.from_pretrained(out)
    vocab = tok.get_vocab()
    assert gen.eos_token_id == [vocab["<|im_end|>"], vocab["<|endoftext|>"]]
    assert gen.pad_token_id == vocab["<|endoftext|>"] and model.config.model_type == "llama"
    manifest = json.loads((out / "manifest.json").read_text())
    m = manifest["metrics"]
    assert manifest["stage"] == "pretrain" and m["steps"] == 30
    assert m["val_perplexity"] < 0.5 * m["unigram_val_perplexity"]
    assert m["params"] == sum(p.numel() for p in model.parameters())
    assert m["tokens_per_s"] > 0 and 0 < m["mfu"] < 1
    ids = torch.tensor([tok("<|endoftext|><|im_start|>user\nhello there, how are you")["input_ids"]])
    with torch.no_grad():
        assert float(model(input_ids=ids, labels=ids).loss) < m["unigram_val_loss"]
    for name in ("metrics.jsonl", "loss.png", "samples.json", "tokenizer.json", "checkpoints/step-000030/state.json"):
        assert (out / name).exists(), name


def test_killed_pretrain_resumes_to_the_same_model(tmp_path, chat_data_dir, tiny_tokenizer_dir, monkeypatch):
    cfg = fast_cfg(max_steps=12)
    full = run(cfg, chat_data_dir, tiny_tokenizer_dir, tmp_path / "full")
    real_loop = pretrain_module.train_loop

    def crash_at_step_7(*args, **kw):
        def crash(step, record):
            if step == 7:
                raise RuntimeError("power cut")
        return real_loop(*args, on_step=crash, **kw)

    monkeypatch.setattr(pretrain_module, "train_loop", crash_at_step_7)
    with pytest.raises(RuntimeError, match="power cut"):
        run(cfg, chat_data_dir, tiny_tokenizer_dir, tmp_path / "cut")
    assert (tmp_path / "cut.partial" / "checkpoints" / "step-000005").is_dir()
    monkeypatch.setattr(pretrain_module, "train_loop", real_loop)
    resumed = run(cfg, chat_data_dir, tiny_tokenizer_dir, tmp_path / "cut", resume=True)
    a, b = (json.loads((d / "manifest.json").read_text())["metrics"] for d in (full, resumed))
    assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-6)
    assert b["val_loss"] == pytest.approx(a["val_loss"], abs=1e-6)
    assert (full / "samples.json").read_text() == (resumed / "samples.json").read_text()


def test_continued_pretraining_of_another_architecture(tmp_path, chat_data_dir, make_tiny_model):
    from transformers import AutoModelForCausalLM

    start = make_tiny_model("qwen2")
    cfg = fast_cfg(max_steps=3).model_copy(update={"init_from": str(start)})
    out = run(cfg, chat_data_dir, None, tmp_path / "cont")
    before = AutoModelForCausalLM.from_pretrained(start)
    after = AutoModelForCausalLM.from_pretrained(out)
    assert after.config.model_type == "qwen2"
    assert not torch.equal(before.lm_head.weight, after.lm_head.weight)


def test_two_processes_train_like_one_with_grad_accumulation(tmp_path, chat_data_dir, tiny_tokenizer_dir):
    """Two processes under accelerate on CPU (gloo; accelerate's torchrun launcher, as plain `--cpu` needs mpirun):
    each takes every other batch, so two processes at batch 4 take the same optimizer steps as one process
    accumulating two batches of 4."""
    single = run(fast_cfg(max_steps=4, grad_accum=2), chat_data_dir, tiny_tokenizer_dir, tmp_path / "one")
    sets = [a for k in ("seq_len=32", "sample_tokens=8", "train.batch_size=4", "train.lr=5e-3",
                        "train.warmup_steps=2", "train.eval_every=5", "train.log_every=1") for a in ("--set", k)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LLMCYCLE_QUIET": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu", "--main_process_port",
           str(_free_port()), "-m", "llmcycle", "pretrain",
           "--data", str(chat_data_dir), "--tokenizer", str(tiny_tokenizer_dir), "--out", str(tmp_path / "two"),
           "--preset", "tiny", "--max-steps", "4", *sets]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = (json.loads((d / "manifest.json").read_text())["metrics"] for d in (single, tmp_path / "two"))
    assert two["tokens_seen"] == one["tokens_seen"] == 4 * 2 * 4 * 32
    assert two["train_loss"] == pytest.approx(one["train_loss"], abs=1e-4)
    assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-4)



def test_text_records_without_val_split_hold_out_validation(tmp_path, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from llmcycle.records import write_jsonl
    from llmcycle.train.packing import load_packed

    words = "hello there how are you doing today i went hiking with my friends and we saw a deer".split()
    data = tmp_path / "text_data"
    write_jsonl(data / "train.jsonl", [{"text": " ".join(words[i % 7:] + words[:i % 7])} for i in range(40)])
    out = run(fast_cfg(max_steps=2), data, tiny_tokenizer_dir, tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(out)
    packed = load_packed(data, "train", tok, 32)
    assert packed.documents == 40 and packed.rows[0, 0].item() == tok.bos_token_id  # bos starts each text
    assert int((packed.rows == tok.bos_token_id).sum()) in (39, 40)  # one per document (the tail row is cut)
    n_val = round(packed.rows.shape[0] * 0.05)
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert n_val >= 1 and metrics["val_tokens_scored"] == n_val * 31  # the held-out rows are what is scored
