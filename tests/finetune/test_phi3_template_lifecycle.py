"""A Phi-3-style base (turns end with <|end|>, EOS <|endoftext|>, a template that drops system messages) through
finetune -> merge -> engine: every stage agrees on the end-of-turn token and keeps the system text."""

from __future__ import annotations

import json


def test_phi3_style_base_finetunes_merges_and_stops_on_end(make_templated_model, chat_data_dir, tmp_path,
                                                          small_config):
    from transformers import AutoTokenizer, GenerationConfig

    from llmcycle import merge
    from llmcycle.infer import Engine
    from llmcycle.modeldir import drops_system
    from llmcycle.train import finetune

    base = make_templated_model("phi3")
    cfg = small_config(train={"max_steps": 2, "eval_every": 2, "eval_batches": 1}, max_seq_len=96)
    adapter = finetune.run(cfg, chat_data_dir, base, tmp_path / "sft")
    info = json.loads((adapter / "manifest.json").read_text())
    assert info["end_of_turn_token"] == "<|end|>" and info["eos_token"] == "<|endoftext|>"
    assert "system folded" in info["chat_template"]
    assert not drops_system(AutoTokenizer.from_pretrained(adapter))  # the adapter carries the folding template

    merged = merge.run(merge.MergeConfig(), adapter, tmp_path / "merged")
    tok = AutoTokenizer.from_pretrained(merged)
    end, eos = tok.convert_tokens_to_ids("<|end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert GenerationConfig.from_pretrained(merged).eos_token_id == [end, eos]
    assert json.loads((merged / "manifest.json").read_text())["parity"]["eos_a"] == [end, eos]
    engine = Engine.load(merged)
    assert engine.eos_token_ids == [end, eos]
    text = engine.chat_text([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}])
    assert "be brief" in text
