"""Bias benchmarks before and after counterfactual data augmentation (`data.counterfactual`).

Trains the same run config once per augmentation mode (same seeds, same step budget), then scores every merged
model in one `llmcycle eval` on CrowS-Pairs, StereoSet and BBQ (overall and per bias type) and on llmcycle's own
counterfactual bias probe, on the same test split. A base model given with --compare-base is scored alongside.

    python bench/counterfactual_bench.py [-c default] [--modes off,add] [--work bench/work/counterfactual]
    python bench/counterfactual_bench.py -c configs/smollm2-lora.yaml --compare-base models/smollm2

Prints a table and writes bench/results/counterfactual_bench.json (and the eval dir's report.md and charts).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "counterfactual_bench.json"
TASKS = "crows_pairs,stereoset,bbq"
SHOWN = ("crows_pairs_pct_stereotype", "crows_pairs_pct_stereotype_gender", "stereoset_ss", "stereoset_ss_gender",
         "stereoset_lms", "stereoset_icat", "bbq_acc", "bbq_acc_ambiguous", "bbq_acc_disambiguated",
         "bias_loglik_gap", "bias_sentiment_gap")


def llmcycle(*args: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "llmcycle", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env={**os.environ, "LLMCYCLE_QUIET": "1"})
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): llmcycle {' '.join(args)}\n{done.stdout[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default="default")
    parser.add_argument("--modes", default="off,add")
    parser.add_argument("--work", type=Path, default=Path("bench/work/counterfactual"))
    parser.add_argument("--compare-base", help="also score this model (e.g. the pretrained base of a LoRA recipe)")
    parser.add_argument("--limit", type=int, help="questions per benchmark (default: all)")
    args = parser.parse_args()
    modes = args.modes.split(",")
    rows: dict[str, dict] = {}
    for mode in modes:
        out = args.work / mode
        seconds = llmcycle("run", "-c", args.config, "-o", str(out), "--stages", "data,tokenizer,pretrain,finetune,merge"
                           if args.config == "default" else "data,finetune,merge", "--set", f"data.counterfactual={mode}")
        card = json.loads((out / "data" / "card.json").read_text())
        step = next((f for f in card["filters"] if f["step"] == "counterfactual"), {})
        rows[mode] = {"train_s": round(seconds, 1), "counterfactual": step,
                      "train_records": card["splits"]["train"]["records"]}
        print(f"{mode}: trained in {seconds:.0f} s; {rows[mode]['counterfactual'] or 'no augmentation'}", flush=True)
    models = [str(args.work / m / "merged") for m in modes]
    compare = ([args.compare_base] if args.compare_base else []) + models[1:]
    eval_args = ["eval", "-m", models[0], "--data", str(args.work / modes[0] / "data"), "--tasks", TASKS,
                 "-o", str(args.work / "eval"), "--set", "probes=[bias]"]
    for c in compare:
        eval_args += ["--compare", c]
    if args.limit:
        eval_args += ["--limit", str(args.limit)]
    eval_s = llmcycle(*eval_args)
    metrics = json.loads((args.work / "eval" / "metrics.json").read_text())
    names = list(metrics)
    print(f"| metric | {' | '.join(names)} |\n|---|{'---|' * len(names)}")
    for key in SHOWN:
        print(f"| {key} | " + " | ".join(f"{metrics[n].get(key, float('nan')):.4f}" for n in names) + " |")
    print(f"eval {eval_s:.0f} s; report: {args.work / 'eval' / 'report.md'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"config": args.config, "modes": rows, "models": names, "eval_s": round(eval_s, 1),
                                   "metrics": {n: {k: metrics[n].get(k) for k in SHOWN} for n in names},
                                   "all_metrics": metrics}, indent=2) + "\n")


if __name__ == "__main__":
    main()
