"""Which model size learns most in the default's pretraining minutes: model shapes compared at equal compute time.

The default run gives pretraining a few minutes on 2 CPU cores, far too few tokens for any of these models to
converge, so a smaller model that takes more steps in the same time can end better. Each shape's speed is measured
against the first's in one process, interleaved (`--repeats` rounds of a few optimizer steps each, median per
shape), and each shape then pretrains for `--steps` x its speed ratio steps on the run's own data and tokenizer —
a step count, not a clock, so the perplexities do not depend on the machine's load while they train. Printed and
written to bench/results/model_size_bench.json.

    python bench/model_size_bench.py --run runs/default --steps 260 [--shape 256x4:704 --shape 128x4:352 ...]

A shape is HIDDENxLAYERS:FFN (4 heads, 2 kv heads, context 512, tied embeddings, like the presets).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from llmcycle.models import PRESETS, Preset, build_model
from llmcycle.loading import load_tokenizer
from llmcycle.train import pretrain
from llmcycle.train.pretrain import PretrainConfig

RESULTS = Path(__file__).resolve().parent / "results" / "model_size_bench.json"
DEFAULT_SHAPES = ["256x4:704", "256x2:704", "192x4:512", "128x4:352", "128x6:352"]


def parse_shape(text: str) -> Preset:
    size, ffn = text.split(":")
    hidden, layers = size.split("x")
    return Preset(hidden=int(hidden), layers=int(layers), heads=4, kv_heads=2, ffn=int(ffn), context=512)


def seconds_per_step(models: dict[str, torch.nn.Module], vocab: int, repeats: int, batch: int, seq: int) -> dict:
    """Median seconds per optimizer step of each model, measured interleaved so load drifts hit all alike."""
    rows = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            start = time.perf_counter()
            for _ in range(3):
                model(input_ids=rows, labels=rows).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            times[name].append((time.perf_counter() - start) / 3)
    return {name: statistics.median(t) for name, t in times.items()}


def pretrain_at(name: str, steps: int, run: Path, lr: float, work: Path) -> dict:
    cfg = PretrainConfig(preset=name, seq_len=128, seed=0, train=dict(
        max_steps=steps, batch_size=16, lr=lr, warmup_steps=40, eval_every=10_000, save_every=10_000))
    out = pretrain.run(cfg, run / "data", run / "tokenizer", work / name)
    return json.loads((out / "manifest.json").read_text())["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="A run folder with data/ and tokenizer/.")
    parser.add_argument("--steps", type=int, default=260, help="Steps of the first shape (the reference).")
    parser.add_argument("--shape", action="append", help=f"HIDDENxLAYERS:FFN (default {' '.join(DEFAULT_SHAPES)}).")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    shapes = args.shape or DEFAULT_SHAPES
    tokenizer = load_tokenizer(args.run / "tokenizer")
    for shape in shapes:
        PRESETS[shape] = parse_shape(shape)
    models = {shape: build_model(shape, tokenizer) for shape in shapes}
    load_before = os.getloadavg()
    speed = seconds_per_step(models, len(tokenizer), args.repeats, 16, 128)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for shape in shapes:
            steps = round(args.steps * speed[shapes[0]] / speed[shape])
            metrics = pretrain_at(shape, steps, args.run, args.lr, Path(tmp))
            rows.append({"shape": shape, "params": metrics["params"], "seconds_per_step": round(speed[shape], 4),
                         "steps": steps, "val_perplexity": round(metrics["val_perplexity"], 2),
                         "unigram_val_perplexity": round(metrics["unigram_val_perplexity"], 2)})
            print(json.dumps(rows[-1]), flush=True)
    result = {"rows": rows, "reference_steps": args.steps, "lr": args.lr, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "load_avg_before": load_before, "load_avg_after": os.getloadavg()}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
