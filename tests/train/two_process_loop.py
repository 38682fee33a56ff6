"""Run under `accelerate launch --num_processes 2`: the shared loop on the masked batch source (micro-batches of
unequal label counts); the main process writes the train losses to argv[1]."""

import json
import sys
from pathlib import Path

from conftest import batch_source, tiny_llama

from llmcycle.train.loop import LoopConfig, train_loop

if __name__ == "__main__":
    train, val = batch_source(batch=4, masked=True)
    cfg = LoopConfig(max_steps=3, batch_size=4, lr=3e-3, warmup_steps=2, eval_every=3, log_every=1, save_every=3)
    result = train_loop(tiny_llama(), train, val, cfg, Path(sys.argv[1]).parent / "work")
    if result is not None and __import__("accelerate").PartialState().is_main_process:
        losses = [r["loss"] for r in result.history if "loss" in r]
        Path(sys.argv[1]).write_text(json.dumps({"losses": losses}))
