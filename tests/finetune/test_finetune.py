"""The finetune stage end to end on tiny random-initialised Llama and Phi-3 models."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from llmcycle.errors import HardwareError
from llmcycle.train import finetune


@pytest.fixture(scope="module")
def lora_run(make_tiny_model, chat_data_dir, tmp_path_factory):
    """One LoRA run on tiny Llama, shared by the tests that inspect its output."""
    from tests.finetune.conftest import make_small_config

    out = tmp_path_factory.mktemp("sft") / "sft"
    finetune.run(make_small_config(), chat_data_dir, make_tiny_model("llama"), out)
    return out


def test_lora_lowers_val_loss_and_writes_a_peft_dir(lora_run, make_tiny_model):
    manifest = json.loads((lora_run / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert metrics["steps"] == 6
    assert metrics["val_loss"] < metrics["val_loss_before"] - 0.05
    adapter_cfg = json.loads((lora_run / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == str(make_tiny_model("llama").resolve())
    assert set(adapter_cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                  "down_proj"}
    weights = load_file(lora_run / "adapter_model.safetensors")
    assert any("lora_B" in k and w.abs().sum() > 0 for k, w in weights.items())  # B starts at zero: it trained
    for name in ("tokenizer.json", "tokenizer_config.json", "metrics.jsonl", "loss.png"):
        assert (lora_run / name).is_file(), name
    assert "generation-marker mask" in manifest["label_mask"]
    assert manifest["eos_token"] == "<|im_end|>"


def test_adapter_loads_with_peft(lora_run, make_tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from llmcycle.train.lora import quiet_peft

    base = AutoModelForCausalLM.from_pretrained(make_tiny_model("llama"))
    with quiet_peft():
        model = PeftModel.from_pretrained(base, lora_run)
    assert model(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[-1] == base.config.vocab_size


def test_phi3_gets_fused_targets(make_tiny_model, chat_data_dir, tmp_path, small_config):
    cfg = small_config(train={"max_steps": 2, "eval_every": 2, "save_every": 2})
    out = finetune.run(cfg, chat_data_dir, make_tiny_model("phi3"), tmp_path / "sft")
    targets = set(json.loads((out / "adapter_config.json").read_text())["target_modules"])
    assert targets == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}


def test_kill_and_resume_equals_uninterrupted(make_tiny_model, chat_data_dir, tmp_path, small_config, monkeypatch):
    base = make_tiny_model("llama")
    # LoRA dropout on: the resumed run matches only if the RNG state comes back with the checkpoint
    cfg = small_config(train={"max_steps": 6, "eval_every": 3, "save_every": 2}, lora={"dropout": 0.2})
    straight = finetune.run(cfg, chat_data_dir, base, tmp_path / "straight")

    real_loop = finetune.train_loop

    def killed_after_step_4(*args, **kwargs):
        def kill(step, record):
            if step == 4:
                raise KeyboardInterrupt
        return real_loop(*args, on_step=kill, **kwargs)

    monkeypatch.setattr(finetune, "train_loop", killed_after_step_4)
    with pytest.raises(KeyboardInterrupt):
        finetune.run(cfg, chat_data_dir, base, tmp_path / "resumed")
    assert not (tmp_path / "resumed").exists() and (tmp_path / "resumed.partial" / "checkpoints").is_dir()
    monkeypatch.setattr(finetune, "train_loop", real_loop)
    resumed = finetune.run(cfg, chat_data_dir, base, tmp_path / "resumed", resume=True)

    a, b = load_file(straight / "adapter_model.safetensors"), load_file(resumed / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    ma = json.loads((straight / "manifest.json").read_text())["metrics"]
    mb = json.loads((resumed / "manifest.json").read_text())["metrics"]
    assert mb["val_loss"] == pytest.approx(ma["val_loss"], rel=1e-5)
    assert mb["val_loss_before"] == ma["val_loss_before"]


def test_dora_runs(make_tiny_model, chat_data_dir, tmp_path, small_config):
    cfg = small_config(method="dora", train={"max_steps": 2, "eval_every": 2})
    out = finetune.run(cfg, chat_data_dir, make_tiny_model("llama"), tmp_path / "dora")
    assert json.loads((out / "adapter_config.json").read_text())["use_dora"] is True
    assert any("lora_magnitude_vector" in k for k in load_file(out / "adapter_model.safetensors"))


def test_full_finetune_writes_a_loadable_model(make_tiny_model, chat_data_dir, tmp_path, small_config):
    from transformers import AutoModelForCausalLM

    base = make_tiny_model("phi3")
    cfg = small_config(method="full", train={"max_steps": 2, "eval_every": 2, "lr": 1e-3})
    out = finetune.run(cfg, chat_data_dir, base, tmp_path / "full")
    tuned, original = AutoModelForCausalLM.from_pretrained(out), AutoModelForCausalLM.from_pretrained(base)
    changed = [n for (n, p), q in zip(tuned.named_parameters(), original.parameters()) if not torch.equal(p, q)]
    assert len(changed) == len(list(original.parameters()))  # every weight trained
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == tuned.config.eos_token_id
    assert not (out / "adapter_config.json").exists()


def test_qlora_refuses_without_cuda(make_tiny_model, chat_data_dir, tmp_path, small_config, cli, one_line_error):
    assert not torch.cuda.is_available()
    with pytest.raises(HardwareError, match="qlora needs a CUDA GPU"):
        finetune.run(small_config(method="qlora"), chat_data_dir, make_tiny_model("llama"), tmp_path / "q")
    code, _, err = cli("finetune", "--data", chat_data_dir, "--model", make_tiny_model("llama"), "--out",
                       tmp_path / "q", "--tuning", "qlora")
    assert "needs a CUDA GPU" in one_line_error(code, err)
    assert not (tmp_path / "q").exists() and not (tmp_path / "q.partial").exists()


def test_early_stopping_passes_through_to_the_loop(make_tiny_model, chat_data_dir, tmp_path, small_config):
    cfg = small_config(train={"max_steps": 6, "eval_every": 1, "lr": 1e-12, "warmup_steps": 0,
                              "early_stopping_patience": 1})
    out = finetune.run(cfg, chat_data_dir, make_tiny_model("llama"), tmp_path / "es")
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["stopped_early"] is True and metrics["steps"] == 2  # a learning rate of ~0 never improves val


def test_resume_on_a_finished_finetune_trains_longer(make_tiny_model, chat_data_dir, tmp_path, small_config):
    base, out = make_tiny_model("llama"), tmp_path / "sft"
    finetune.run(small_config(train={"max_steps": 2, "eval_every": 2, "save_every": 2}), chat_data_dir, base, out)
    longer = small_config(train={"max_steps": 4, "eval_every": 2, "save_every": 2})
    finetune.run(longer, chat_data_dir, base, out, resume=True)
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["steps"] == 4 and not (tmp_path / "sft.partial").exists()
