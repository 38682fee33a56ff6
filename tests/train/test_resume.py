"""Resume: checkpoints load without unpickling code, and `--resume` on a finished run trains longer."""

from __future__ import annotations

import json

import pytest
import torch

from llmcycle.errors import TrainingError
from llmcycle.train.checkpoint import checkpoint_dirs, load_checkpoint
from llmcycle.train.loop import train_loop

from .conftest import batch_source, tiny_llama
from .test_pretrain import fast_cfg

RAN = []


class Payload:
    """What a tampered rng.pt could hold: unpickling it would run code."""

    def __reduce__(self):
        return (RAN.append, ("code ran",))


def test_checkpoint_loads_weights_only(tmp_path, loop_cfg):
    train, val = batch_source()
    train_loop(tiny_llama(), train, val, loop_cfg(max_steps=4), tmp_path)
    ckpt = checkpoint_dirs(tmp_path / "checkpoints")[-1]
    from llmcycle.train.schedule import make_scheduler
    from llmcycle.train.setup import make_optimizer

    model = tiny_llama()
    optimizer = make_optimizer(model, loop_cfg(max_steps=4), "cpu")
    scheduler = make_scheduler(optimizer, 4, 2, 0.1)
    assert load_checkpoint(ckpt, model, optimizer, scheduler)["step"] == 4  # what we save is weights-only loadable
    torch.save({"torch": torch.get_rng_state(), "python": Payload()}, ckpt / "rng.pt")
    with pytest.raises(TrainingError, match="checkpoint does not load") as err:
        load_checkpoint(ckpt, model, optimizer, scheduler)
    assert "\n" not in str(err.value)
    assert RAN == []


def test_resume_on_a_finished_run_trains_longer(tmp_path, chat_data_dir, tiny_tokenizer_dir, cli):
    from llmcycle.train.pretrain import run

    out = tmp_path / "base"
    run(fast_cfg(max_steps=4, save_every=2), chat_data_dir, tiny_tokenizer_dir, out)
    first = (out / "model.safetensors").read_bytes()
    longer = run(fast_cfg(max_steps=8, save_every=2), chat_data_dir, tiny_tokenizer_dir, out, resume=True)
    manifest = json.loads((longer / "manifest.json").read_text())
    assert manifest["metrics"]["steps"] == 8
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in history if r.get("split") == "train"]
    assert train_steps == list(range(1, 9))  # steps 1-4 kept from the first run, 5-8 added
    assert [p.name for p in checkpoint_dirs(out / "checkpoints")][-1] == "step-000008"
    assert (out / "model.safetensors").read_bytes() != first
    # the schedule is the longer run's: past the 4-step run's floor, the lr is back on the 8-step cosine
    lrs = {r["step"]: r["lr"] for r in history if r.get("split") == "train"}
    assert lrs[6] > lrs[4] and lrs[8] < lrs[6]
