"""Distillation in the shared loop: the student's KL to the teacher falls; mismatched vocabularies fail clearly."""

from __future__ import annotations

import json

import pytest


def sharpened(model_dir, out):
    """A teacher the student can learn from: the student's own logits times 8 (same ranking, far sharper)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out


def test_logit_distillation_lowers_kl_to_the_teacher(chat_data_dir, make_tiny_model, tmp_path):
    from llmcycle.train.distill import DistillConfig, run

    cfg = DistillConfig(alpha=1.0, train={"max_steps": 10, "batch_size": 4, "lr": 2e-3, "warmup_steps": 0,
                                          "eval_every": 10, "save_every": 10, "log_every": 5, "eval_batches": 3},
                        max_seq_len=128, baseline=True)
    out = tmp_path / "student"
    student = make_tiny_model("llama", seed=0)
    run(cfg, chat_data_dir, sharpened(student, tmp_path / "teacher"), student, out)
    m = json.loads((out / "manifest.json").read_text())["metrics"]
    assert m["mode"] == "logit"
    assert m["kl_to_teacher"] < m["kl_to_teacher_before"] * 0.85
    assert m["baseline_val_loss"] is not None


def test_logit_distillation_refuses_different_vocabularies(chat_data_dir, make_tiny_model, tmp_path):
    from transformers import AutoTokenizer

    from llmcycle.errors import ConfigError
    from llmcycle.train.distill import DistillConfig, resolve_mode

    a = AutoTokenizer.from_pretrained(make_tiny_model("llama"))
    b = AutoTokenizer.from_pretrained(make_tiny_model("llama"))
    b.add_tokens(["zzzextra"])
    with pytest.raises(ConfigError, match="one vocabulary"):
        resolve_mode(DistillConfig(mode="logit"), a, b, "teacher", "student")
    assert resolve_mode(DistillConfig(), a, b, "teacher", "student") == "sequence"
