"""DPO / KTO / ORPO through the shared loop on a tiny Llama: losses fall, the planted preference's margin rises."""

from __future__ import annotations

import json

import pytest
import torch

from tests.align.conftest import small_align


@pytest.mark.parametrize("method", ["dpo", "kto", "orpo"])
def test_method_lowers_loss_and_raises_margin(method, pref_data_dir, make_tiny_model, tmp_path):
    from llmcycle.train import align

    out = tmp_path / method
    align.run(small_align(method), pref_data_dir, make_tiny_model("llama"), out)
    manifest = json.loads((out / "manifest.json").read_text())
    m = manifest["metrics"]
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in history if r.get("split") == "train"]
    assert losses[-1] < losses[0]
    assert m["margin_after"] > 0.05 and m["pair_accuracy_after"] > 0.5
    assert (out / "adapter_config.json").is_file()


def test_reference_with_adapter_disabled_equals_the_base(pref_data_dir, make_tiny_model, tmp_path):
    from llmcycle.loading import load_base_model
    from llmcycle.train import align
    from llmcycle.train.objectives import reference_logps, sequence_logps

    base_dir = make_tiny_model("llama")
    cfg = small_align("dpo")
    tokenizer, _ = align.prepare_tokenizer(str(base_dir))
    data = align.PreferenceData("dpo", tokenizer, align.read_records(pref_data_dir, "val", ("paired",), 4), 64, "v")
    batch = data.batch([0, 1, 2, 3])
    policy = align.load_policy(cfg, str(base_dir), tokenizer)
    with torch.no_grad():  # move the adapter away from its no-op start
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)
    policy_logps, _ = sequence_logps(policy, batch)
    base_logps, _ = sequence_logps(load_base_model(base_dir, "fp32").eval(), batch)
    ref = reference_logps(policy, batch)
    assert not torch.allclose(policy_logps, base_logps, atol=1e-3)
    assert torch.allclose(ref, base_logps, atol=1e-5)


def test_completion_mask_is_the_reply_and_its_end_of_turn(make_tiny_model):
    from llmcycle.train import align

    tokenizer, _ = align.prepare_tokenizer(str(make_tiny_model("llama")))
    prompt = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
              {"role": "user", "content": "how are you"}]
    enc = align.encode(tokenizer, prompt, [{"role": "assistant", "content": "fine thanks"}], "x", 256)
    kept = tokenizer.decode([t for t, m in zip(enc.input_ids, enc.completion_mask) if m])
    assert kept.replace(" ", "") == ("fine thanks" + tokenizer.eos_token).replace(" ", "") or \
        kept.replace(" ", "").startswith("finethanks")
    assert "hello" not in kept


def test_kill_and_resume_equals_an_uninterrupted_run(pref_data_dir, make_tiny_model, tmp_path):
    from llmcycle.train import align

    base = make_tiny_model("llama")
    cfg = small_align("dpo")
    whole = tmp_path / "whole"
    align.run(cfg, pref_data_dir, base, whole)

    class Kill(Exception):
        pass

    part = tmp_path / "part"
    original = align.train_loop

    def killing_loop(*args, **kw):
        kw["on_step"] = lambda step, rec: (_ for _ in ()).throw(Kill()) if step == 4 else None
        return original(*args, **kw)

    align.train_loop = killing_loop
    try:
        with pytest.raises(Kill):
            align.run(cfg, pref_data_dir, base, part)
    finally:
        align.train_loop = original
    align.run(cfg, pref_data_dir, base, part, resume=True)
    a = json.loads((whole / "manifest.json").read_text())["metrics"]
    b = json.loads((part / "manifest.json").read_text())["metrics"]
    assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-6)
    assert b["margin_after"] == pytest.approx(a["margin_after"], abs=1e-5)


def test_max_epochs_caps_the_steps_on_few_pairs(pref_data_dir, make_tiny_model, tmp_path):
    """48 pairs at 8 a step: 2 passes are 12 steps, so a budget of 40 steps stops there (and says how many passes)."""
    from llmcycle.train import align
    from llmcycle.train.align_config import AlignLoopConfig

    cfg = small_align("dpo")
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 40, "max_epochs": 2})})
    out = tmp_path / "capped"
    align.run(cfg, pref_data_dir, make_tiny_model("llama"), out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["steps"] == 12 and manifest["epochs"] == 2.0
    loop = AlignLoopConfig(max_steps=40, max_epochs=2, batch_size=8)
    assert loop.capped(48, processes=2).max_steps == 6 and loop.capped(None).max_steps == 40
    assert AlignLoopConfig(max_steps=5, max_epochs=2, batch_size=8).capped(48).max_steps == 5
