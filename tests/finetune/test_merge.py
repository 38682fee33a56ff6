"""Merge and parity: the merged model equals base + adapter, loads with AutoModelForCausalLM, stops on the same EOS."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llmcycle import merge
from llmcycle.parity import check_parity


@pytest.fixture(scope="module")
def phi3_adapter(make_tiny_model, chat_data_dir, tmp_path_factory):
    from llmcycle.train import finetune
    from tests.finetune.conftest import make_small_config

    out = tmp_path_factory.mktemp("phi3sft") / "sft"
    cfg = make_small_config(train={"max_steps": 3, "eval_every": 3, "lr": 2e-2})
    return finetune.run(cfg, chat_data_dir, make_tiny_model("phi3"), out)


def test_merge_matches_base_plus_adapter(phi3_adapter, make_tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    out = merge.run(merge.MergeConfig(), phi3_adapter, tmp_path / "merged")
    manifest = json.loads((out / "manifest.json").read_text())
    parity = manifest["parity"]
    assert parity["passed"] and parity["max_abs_logit_diff"] < 1e-4 and parity["same_eos"] and parity["same_template"]
    assert manifest["dtype"] == "fp32"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert (out / "tokenizer_config.json").is_file() and (out / "generation_config.json").is_file()
    # the adapter really changed the model, so parity above is not trivially true
    base_vs_merged = check_parity(make_tiny_model("phi3"), out)
    assert not base_vs_merged["passed"] and base_vs_merged["max_abs_logit_diff"] > 1e-3


def test_merge_to_bf16_keeps_parity_within_bf16_tolerance(phi3_adapter, tmp_path):
    out = merge.run(merge.MergeConfig(dtype="bf16"), phi3_adapter, tmp_path / "merged16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    parity = json.loads((out / "manifest.json").read_text())["parity"]
    assert parity["passed"] and parity["stored_dtype"] == "bf16" and parity["top1_agreement"] > 0.9


def test_check_parity_cli(phi3_adapter, make_tiny_model, tmp_path, cli, one_line_error):
    merged = merge.run(merge.MergeConfig(), phi3_adapter, tmp_path / "merged")
    code, out, err = cli("check-parity", phi3_adapter, merged)
    assert code == 0 and json.loads(out)["passed"] is True
    code, out, err = cli("check-parity", make_tiny_model("phi3"), merged)
    assert "parity check failed: max abs logit diff" in one_line_error(code, err)
    assert json.loads(out)["passed"] is False


def test_merge_refuses_a_dir_that_is_not_an_adapter(make_tiny_model, tmp_path, cli, one_line_error):
    code, _, err = cli("merge", "--model", make_tiny_model("llama"), "--out", tmp_path / "m")
    assert "is a full model dir, not an adapter" in one_line_error(code, err)
    code, _, err = cli("merge", "--model", tmp_path, "--out", tmp_path / "m")
    assert "not an adapter dir" in one_line_error(code, err)
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()


def test_merge_refuses_an_adapter_whose_base_is_missing(phi3_adapter, tmp_path, cli, one_line_error):
    orphan = tmp_path / "orphan"
    shutil.copytree(phi3_adapter, orphan)
    cfg_file = orphan / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = str(tmp_path / "gone")
    cfg_file.write_text(json.dumps(cfg))
    code, _, err = cli("merge", "--model", orphan, "--out", tmp_path / "m")
    assert f"base model {tmp_path / 'gone'} is missing" in one_line_error(code, err)
    assert not (tmp_path / "m").exists()


def test_merged_generation_stops_like_the_adapter(phi3_adapter, tmp_path):
    from transformers import GenerationConfig

    merged = merge.run(merge.MergeConfig(parity=False), phi3_adapter, tmp_path / "merged")
    gen = GenerationConfig.from_pretrained(merged)
    tok_eos = json.loads((phi3_adapter / "tokenizer_config.json").read_text())["eos_token"]
    assert tok_eos == "<|im_end|>"
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    from llmcycle.loading import load_tokenizer

    assert load_tokenizer(merged).convert_tokens_to_ids(tok_eos) in eos
    assert torch.tensor(eos).numel() >= 1
