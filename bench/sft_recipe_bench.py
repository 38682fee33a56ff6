"""Which SFT recipe makes the default's replies better than its base's: finetune + merge + eval per recipe and seed.

Pretraining is paid once: each `--run` is a run folder whose data, tokenizer and base are reused (one per seed, e.g.
the three fresh-clone seeds), and every recipe fine-tunes that base with the run config's `finetune:` section
changed by the recipe's settings (dotted keys, e.g. `method=full`, `train.lr=5e-4`, `lora.r=32`), merges an adapter,
and evaluates the result against the base with the config's `eval:` section (the same decoding for both models).
Reported per recipe and seed: the paired chrF and ROUGE-L differences SFT minus base with their 95% intervals (the
eval's paired bootstrap over the same test prompts), assistant-turn perplexity of both, the validation loss before
and after, and the fine-tune's wall time with the load average. Printed and written to
bench/results/sft_recipe_bench[_TAG].json.

    python bench/sft_recipe_bench.py --run runs/default:0 --run runs/seed1:1 --run runs/seed2:2 \\
        --recipe lora: --recipe full:method=full,train.lr=5e-4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from llmcycle import merge
from llmcycle.config import load_config
from llmcycle.evaluate.stage import EvalConfig, run as evaluate
from llmcycle.merge import MergeConfig
from llmcycle.train import finetune
from llmcycle.train.finetune import PEFT_METHODS, FinetuneConfig

RESULTS = Path(__file__).resolve().parent / "results"
PAIRED_KEYS = ("chrf", "rouge_l", "perplexity", "mean_reply_words", "repetition_rate", "eos_share")


def parse_recipe(text: str) -> tuple[str, list[str]]:
    """NAME:key=value,key=value -> (NAME, ['key=value', ...]) in `--set` form relative to `finetune:`."""
    name, _, body = text.partition(":")
    return name, [item for item in body.split(",") if item]


def parse_run(text: str) -> tuple[Path, int]:
    """RUN_DIR[:SEED] (seed 0 when not given): the fine-tune's and the eval's seed for that base."""
    path, _, seed = text.rpartition(":") if ":" in text else (text, "", "0")
    return Path(path), int(seed)


def finetune_config(config: str, sets: list[str], seed: int, max_minutes: float) -> FinetuneConfig:
    """The config's `finetune:` with the recipe's settings; its clock lifted, so a recipe trains its steps at any
    load (the quality is then the steps', and the wall time is reported beside it)."""
    sets = [f"train.max_minutes={max_minutes}"] + sets
    cfg = load_config(FinetuneConfig, config, [f"finetune.{s}" for s in sets], section="finetune")
    return cfg.model_copy(update={"seed": seed})


def eval_config(config: str, seed: int, max_examples: int | None) -> EvalConfig:
    """The config's `eval:` at SEED: base and SFT are decoded alike, so the paired difference is the recipe's."""
    sets = [f"eval.seed={seed}"] + ([f"eval.max_examples={max_examples}"] if max_examples else [])
    return load_config(EvalConfig, config, sets, section="eval")


def one(config: str, run: Path, seed: int, name: str, sets: list[str], work: Path, max_examples: int | None,
        max_minutes: float) -> dict:
    """Fine-tune RUN's base with the recipe, merge, evaluate against the base; the row of the table."""
    out = work / f"{name}_s{seed}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = finetune_config(config, sets, seed, max_minutes)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    finetune.run(cfg, run / "data", run / "base", out / "sft")
    wall = time.perf_counter() - start
    model = out / "sft"
    if cfg.method in PEFT_METHODS:
        model = merge.run(MergeConfig(), out / "sft", out / "merged")
    evaluate(eval_config(config, seed, max_examples), model, run / "data", out / "eval", compare=[run / "base"])
    ft = json.loads((out / "sft" / "manifest.json").read_text())
    ev = json.loads((out / "eval" / "manifest.json").read_text())
    main = ev["main_model"]
    base_name = next(n for n in ev["metrics"] if n != main)
    row = {"recipe": name, "sets": sets, "seed": seed, "run": str(run), "finetune_wall_s": round(wall, 1),
           "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
           **{k: ft["metrics"].get(k) for k in ("steps", "val_loss_before", "val_loss")},
           **{f"{k}_diff": flip(v) for k, v in ev["comparisons"][base_name].items()}}
    for key in PAIRED_KEYS:  # [base, SFT]
        row[key] = [ev["metrics"][base_name][key], ev["metrics"][main][key]]
    return row


def flip(comparison: dict) -> dict:
    """The eval reports compared-minus-main (base - SFT); the table wants SFT - base."""
    return {"delta": -comparison["delta"], "lo": -comparison["hi"], "hi": -comparison["lo"], "n": comparison["n"]}


def fmt_diff(d: dict, digits: int) -> str:
    mark = " *" if d["lo"] > 0 else ""
    return f"{d['delta']:+.{digits}f} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]{mark}"


def table(rows: list[dict]) -> str:
    lines = ["| recipe | seed | chrF base / SFT | chrF diff [95%] | ROUGE-L diff [95%] | ppl base / SFT | "
             "val loss | finetune s (load) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['seed']} | {r['chrf'][0]:.2f} / {r['chrf'][1]:.2f} | "
                     f"{fmt_diff(r['chrf_diff'], 2)} | {fmt_diff(r['rouge_l_diff'], 3)} | "
                     f"{r['perplexity'][0]:.1f} / {r['perplexity'][1]:.1f} | "
                     f"{r['val_loss_before']:.3f} → {r['val_loss']:.3f} | {r['finetune_wall_s']} ({r['load_before']}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--run", action="append", required=True, help="RUN_DIR[:SEED], repeatable")
    ap.add_argument("--recipe", action="append", required=True, help="NAME:key=value,... (finetune keys)")
    ap.add_argument("--work", default="/tmp/sft_recipe_bench")
    ap.add_argument("--max-examples", type=int, default=None, help="eval.max_examples (default: the config's)")
    ap.add_argument("--max-minutes", type=float, default=30.0,
                    help="finetune.train.max_minutes for every recipe (a recipe may set its own)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--json", default=None, help="where the JSON goes (default bench/results/sft_recipe_bench[_TAG])")
    args = ap.parse_args(argv)
    rows = []
    out = Path(args.json) if args.json else RESULTS / f"sft_recipe_bench{'_' + args.tag if args.tag else ''}.json"
    for name, sets in map(parse_recipe, args.recipe):
        for run, seed in map(parse_run, args.run):
            rows.append(one(args.config, run, seed, name, sets, Path(args.work), args.max_examples,
                           args.max_minutes))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"rows": rows, "load_end": os.getloadavg()}, indent=1) + "\n")
    print(table(rows))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
