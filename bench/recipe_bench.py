"""Recipe bench: which SFT settings and which decoding defaults make the default run's fine-tuned model better than its
base on replies, not only on perplexity.

From one pretrained base (`llmcycle run --stages data,tokenizer,pretrain`), it fine-tunes each SFT variant, then
answers two prompt sets under each decoding setting:

- the eval's test prompts (each test conversation cut before its last assistant turn; chrF, ROUGE-L with bootstrap
  intervals, repetition, distinct-2),
- the gates' held-out prompts (each test conversation's first user turn), where a collapsed model says one stock
  phrase to everyone: the share of replies holding the most common word 3-gram, and of the most common reply.

    python bench/recipe_bench.py --run runs/default --variants base config full --decodings greedy sample_t0.7

Prints one line per (model, decoding) and writes bench/results/recipe_bench.json (appending to the list of runs).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from llmcycle.config import read_yaml
from llmcycle.evaluate.generation import prompts_from
from llmcycle.evaluate.stage import sample
from llmcycle.evaluate.stats import wilson
from llmcycle.evaluate.tasks import Subject, generate
from llmcycle.evaluate.textmetrics import generation_intervals, generation_metrics
from llmcycle.gates import held_out
from llmcycle.infer import Engine, GenerationSettings
from llmcycle.merge import MergeConfig
from llmcycle.merge import run as merge_run
from llmcycle.records import load_split
from llmcycle.textstats import ngrams, words
from llmcycle.train.finetune import FinetuneConfig
from llmcycle.train.finetune import run as finetune_run

RESULTS = Path(__file__).parent / "results" / "recipe_bench.json"
STOCK_N = 4  # words in a stock phrase

# SFT variants: overrides of the run config's finetune section (dotted keys)
VARIANTS: dict[str, dict[str, Any]] = {
    "config": {},
    "lora": {"method": "lora", "lora.r": 16, "lora.alpha": 32, "train.lr": 1.0e-3},
    "full": {"method": "full", "train.lr": 5.0e-4},
    "full_nowarm": {"method": "full", "train.lr": 5.0e-4, "train.warmup_steps": 0},
    "full_lr1e-3": {"method": "full", "train.lr": 1.0e-3},
    "full_lr2e-4": {"method": "full", "train.lr": 2.0e-4},
}
# decoding settings tried at eval / gates time
DECODINGS: dict[str, dict[str, Any]] = {
    "greedy": {"temperature": 0.0},
    "greedy_rp1.2": {"temperature": 0.0, "repetition_penalty": 1.2},
    "greedy_rp1.3_nr3": {"temperature": 0.0, "repetition_penalty": 1.3, "no_repeat_ngram_size": 3},
    "greedy_nr3": {"temperature": 0.0, "no_repeat_ngram_size": 3},
    "sample_t0.7": {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1, "seed": 0},
    "sample_t0.7_nr3": {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1,
                        "no_repeat_ngram_size": 3, "seed": 0},
}


def set_dotted(section: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        section = section.setdefault(part, {})
    section[last] = value


def finetuned(base_section: dict[str, Any], run: Path, name: str, work: Path, max_steps: int | None,
              reuse: bool = False) -> tuple[str, float]:
    """Fine-tune the run's base with variant `name` (merged when it is an adapter); (model dir, seconds)."""
    section = json.loads(json.dumps(base_section))
    section.setdefault("train", {})
    for key, value in VARIANTS[name].items():
        set_dotted(section, key, value)
    if max_steps:
        section["train"]["max_steps"] = max_steps
    cfg = FinetuneConfig(**section)
    out = work / name
    if reuse and (out / ("sft" if cfg.method == "full" else "merged") / "config.json").is_file():
        return str(out / ("sft" if cfg.method == "full" else "merged")), 0.0
    start = time.perf_counter()
    finetune_run(cfg, run / "data", run / "base", out / "sft")
    model = out / "sft"
    if cfg.method != "full":
        merge_run(MergeConfig(), out / "sft", out / "merged")
        model = out / "merged"
    return str(model), time.perf_counter() - start


def stock_shares(replies: list[str]) -> dict[str, Any]:
    """How much one phrase dominates: the most common 4-gram of letters-and-digits words (counted once per reply, so
    "I'm not sure" is the phrase "i m not sure"'s first four words and punctuation makes no phrase) and the most
    common reply, each as a share of replies with its Wilson interval."""
    n = len(replies)
    grams: Counter = Counter()
    for reply in replies:
        grams.update(set(ngrams([w for w in words(reply) if w.isalnum()], STOCK_N)))
    top_gram, gram_k = grams.most_common(1)[0] if grams else ((), 0)
    top_reply, reply_k = Counter(r.strip().lower() for r in replies).most_common(1)[0] if replies else ("", 0)
    return {"top_phrase": " ".join(top_gram), "top_phrase_share": gram_k / max(1, n),
            "top_phrase_ci95": list(wilson(gram_k, n)), "top_reply": top_reply,
            "top_reply_share": reply_k / max(1, n), "n": n}


def measure(model: str, eval_prompts, gate_prompts, decoding: dict[str, Any], max_new: tuple[int, int]) -> dict:
    engine = Engine.load(model)
    subject = Subject(Path(model).name, model, engine)
    settings = GenerationSettings(max_new_tokens=max_new[0], **decoding)
    done = generate(subject, [c for c, _ in eval_prompts], settings, 16, "eval prompts")
    replies, refs = [c.text for c in done], [r for _, r in eval_prompts]
    metrics = generation_metrics(replies, refs)
    metrics["intervals"] = {k: v.as_dict() for k, v in generation_intervals(replies, refs).items()}
    metrics["eval_stock"] = stock_shares(replies)
    gate_settings = GenerationSettings(max_new_tokens=max_new[1], **decoding)
    gate_replies = [c.text for c in generate(subject, gate_prompts, gate_settings, 16, "gate prompts")]
    metrics["gate_stock"] = stock_shares(gate_replies)
    metrics["gate_replies"] = gate_replies
    metrics["eval_replies"] = replies
    return metrics


def line(name: str, decoding: str, m: dict[str, Any]) -> str:
    ci = m["intervals"]
    return (f"{name:14s} {decoding:18s} chrF {m['chrf']:5.2f} [{ci['chrf']['lo']:.2f},{ci['chrf']['hi']:.2f}] "
            f"ROUGE-L {m['rouge_l']:.3f} [{ci['rouge_l']['lo']:.3f},{ci['rouge_l']['hi']:.3f}] "
            f"rep {m['repetition_rate']:.3f} d2 {m['distinct_2']:.3f} "
            f"gate top phrase {m['gate_stock']['top_phrase_share']:.2f} ('{m['gate_stock']['top_phrase']}') "
            f"gate top reply {m['gate_stock']['top_reply_share']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder with data/ and pretrain/")
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--variants", nargs="+", default=["config"], choices=["base", *VARIANTS])
    parser.add_argument("--decodings", nargs="+", default=["greedy"], choices=list(DECODINGS))
    parser.add_argument("--max-steps", type=int, default=None, help="SFT steps (default: the config's)")
    parser.add_argument("--prompts", type=int, default=64, help="prompts per set (the eval's and gates' default)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/recipe_bench"))
    parser.add_argument("--note", default="")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON file the run is appended to")
    parser.add_argument("--reuse", action="store_true", help="measure a variant already fine-tuned under --work")
    args = parser.parse_args()
    section = read_yaml(args.config).get("finetune") or {}
    eval_prompts = sample(prompts_from(load_split(args.run / "data", "test")), args.prompts, 0)
    gate_prompts = held_out(args.run / "data")[0][: args.prompts]
    distinct = len({json.dumps(p) for p in gate_prompts})
    print(f"{len(eval_prompts)} eval prompts; {len(gate_prompts)} gate prompts, {distinct} distinct")
    rows = []
    for name in args.variants:
        load = Path("/proc/loadavg").read_text().split()[:3]
        model, seconds = ((str(args.run / "base"), 0.0) if name == "base"
                          else finetuned(section, args.run, name, args.work, args.max_steps, args.reuse))
        for decoding in args.decodings:
            m = measure(model, eval_prompts, gate_prompts, DECODINGS[decoding], (48, 32))
            print(line(name, decoding, m), flush=True)
            rows.append({"variant": name, "overrides": VARIANTS.get(name, {}), "decoding": decoding,
                         "settings": DECODINGS[decoding], "sft_seconds": round(seconds, 1), "loadavg": load, **m})
    runs = json.loads(args.results.read_text()) if args.results.is_file() else []
    runs.append({"note": args.note, "run": str(args.run), "max_steps": args.max_steps, "cpus": os.cpu_count(),
                 "gate_prompts": len(gate_prompts), "distinct_gate_prompts": distinct,
                 "rows": rows})
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()
