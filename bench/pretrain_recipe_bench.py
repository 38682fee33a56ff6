"""Which pretraining recipe learns most in the default's pretraining minutes: recipes compared at equal compute time.

A recipe is the default's pretraining with some settings changed: the loop's (lr, warmup_steps, decay,
min_lr_ratio, weight_decay, betas, max_grad_norm, batch_size), the row length (seq_len) or the model's shape
(shape=HIDDENxLAYERS:FFN, optionally /HEADS/KV_HEADS). A recipe that changes what a step costs (batch, rows, shape)
has its seconds per step measured against the first recipe's in one process, interleaved (`--repeats` rounds of a
few optimizer steps each, median per recipe); every recipe then pretrains for `--steps` x its speed ratio steps on
the run's own data and tokenizer -- a step count, not a clock, so the perplexities do not depend on the machine's
load while they train. `--steps 656` is what the default's 4 minutes buy on 2 idle cores. Printed and written to
bench/results/pretrain_recipe_bench[_TAG].json.

    python bench/pretrain_recipe_bench.py --run runs/default --steps 656 \\
        --recipe base: --recipe lr5e-3:lr=5e-3 --recipe b8:batch_size=8 --recipe narrow:shape=96x4:264
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

from llmcycle.loading import load_tokenizer
from llmcycle.models import PRESETS, Preset, build_model
from llmcycle.train import pretrain
from llmcycle.train.objectives import summed_cross_entropy
from llmcycle.train.pretrain import PretrainConfig

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_TRAIN = {"batch_size": 16, "lr": 3e-3, "warmup_steps": 40}
SPEED_KEYS = ("batch_size", "seq_len", "shape")


def parse_recipe(text: str) -> tuple[str, dict]:
    """NAME:key=value,key=value -> (NAME, settings); values are read as JSON where they parse, else kept as text."""
    name, _, body = text.partition(":")
    settings = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return name, settings


def parse_shape(text: str) -> Preset:
    """HIDDENxLAYERS:FFN[/HEADS/KV_HEADS] (4 heads, 2 kv heads, context 512, tied embeddings by default)."""
    size, ffn = text.split(":")
    ffn, *heads = ffn.split("/")
    hidden, layers = size.split("x")
    n_heads, kv = (int(heads[0]), int(heads[1])) if heads else (4, 2)
    return Preset(hidden=int(hidden), layers=int(layers), heads=n_heads, kv_heads=kv, ffn=int(ffn), context=512)


def preset_name(settings: dict) -> str:
    shape = settings.get("shape")
    if shape is None:
        return "default"
    PRESETS[shape] = parse_shape(shape)
    return shape


def speed_key(settings: dict) -> tuple:
    return tuple((k, settings.get(k)) for k in SPEED_KEYS)


def seconds_per_step(setups: dict[tuple, tuple], repeats: int) -> dict[tuple, float]:
    """Median seconds per optimizer step of each (model, rows) setup, measured interleaved so load drifts hit all
    alike; each step is the training loop's (its fused projection + loss, clipping, AdamW)."""
    times: dict[tuple, list[float]] = {key: [] for key in setups}
    for _ in range(repeats):
        for key, (model, rows) in setups.items():
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
            start = time.perf_counter()
            for _ in range(3):
                summed_cross_entropy(model, {"input_ids": rows, "labels": rows}).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad()
            times[key].append((time.perf_counter() - start) / 3)
    return {key: statistics.median(t) for key, t in times.items()}


def measure_speeds(recipes: list[tuple[str, dict]], tokenizer, repeats: int) -> dict[tuple, float]:
    setups = {}
    for _, settings in recipes:
        key = speed_key(settings)
        if key not in setups:
            batch, seq = settings.get("batch_size", DEFAULT_TRAIN["batch_size"]), settings.get("seq_len", 128)
            rows = torch.randint(0, len(tokenizer), (batch, seq), generator=torch.Generator().manual_seed(0))
            setups[key] = (build_model(preset_name(settings), tokenizer), rows)
    return seconds_per_step(setups, repeats) if len(setups) > 1 else {key: 1.0 for key in setups}


def pretrain_recipe(settings: dict, steps: int, seed: int, run: Path, work: Path) -> dict:
    train = {**DEFAULT_TRAIN, **{k: v for k, v in settings.items() if k not in ("seq_len", "shape")},
             "max_steps": steps, "eval_every": 10_000, "save_every": 10_000}
    cfg = PretrainConfig(preset=preset_name(settings), seq_len=settings.get("seq_len", 128), seed=seed, train=train)
    out = pretrain.run(cfg, run / "data", run / "tokenizer", work)
    return json.loads((out / "manifest.json").read_text())["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="A run folder with data/ and tokenizer/.")
    parser.add_argument("--steps", type=int, default=656, help="Steps of the first recipe (the reference).")
    parser.add_argument("--recipe", action="append", required=True, help="NAME:key=value,... (the first is the "
                        "reference; NAME: alone is the default's recipe).")
    parser.add_argument("--seed", type=int, action="append", help="Seeds (default 0); each recipe trains once per seed.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tag", default="", help="Suffix of the results file.")
    parser.add_argument("--speed", action="append", default=[], metavar="NAME=RATIO",
                        help="A recipe's speed against the reference, measured elsewhere (under heavy load the "
                        "interleaved measurement of a few steps is noisy: take the ratio of a quieter one).")
    parser.add_argument("--untrained-reference", action="store_true",
                        help="The first recipe only sets the speed reference (trained in another run).")
    args = parser.parse_args()
    recipes = [parse_recipe(text) for text in args.recipe]
    tokenizer = load_tokenizer(args.run / "tokenizer")
    load_before = os.getloadavg()
    given = {name: float(ratio) for name, ratio in (text.split("=") for text in args.speed)}
    unmeasured = [recipe for recipe in recipes if recipe[0] not in given]
    speed = measure_speeds(unmeasured, tokenizer, args.repeats)
    reference = speed[speed_key(recipes[0][1])]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seed or [0]:
            for name, settings in recipes[1:] if args.untrained_reference else recipes:
                ratio = given.get(name) or reference / speed[speed_key(settings)]
                steps = round(args.steps * ratio)
                metrics = pretrain_recipe(settings, steps, seed, args.run, Path(tmp) / f"{name}-{seed}")
                rows.append({"recipe": name, "settings": settings, "seed": seed, "params": metrics["params"],
                             "speed_vs_reference": round(ratio, 3), "steps": steps,
                             "tokens": metrics["tokens_seen"], "val_loss": round(metrics["val_loss"], 4),
                             "val_perplexity": round(metrics["val_perplexity"], 2),
                             "unigram_val_perplexity": round(metrics["unigram_val_perplexity"], 2),
                             "unigram_ratio": round(metrics["unigram_val_perplexity"] / metrics["val_perplexity"], 2)})
                print(json.dumps(rows[-1]), flush=True)
                write_results(args, rows, speed, load_before)


def write_results(args, rows: list[dict], speed: dict, load_before) -> None:
    """Rewritten after every recipe, so a run stopped part way keeps the rows it finished."""
    result = {"rows": rows, "reference_steps": args.steps, "seconds_per_step": {str(k): v for k, v in speed.items()},
              "torch": torch.__version__, "threads": torch.get_num_threads(), "load_avg_before": load_before,
              "load_avg_after": os.getloadavg()}
    path = RESULTS / f"pretrain_recipe_bench{'_' + args.tag if args.tag else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
