"""The masked objective's price and what it buys: the default preset pretrained twice on the same steps, data and
tokenizer, next-token only and with fill-in-the-middle on half the train records, then

- left-to-right perplexity of both on the same validation rows (paired bootstrap interval of the relative change:
  what FIM costs the ordinary objective), and
- infilling on held-out middles: one whole turn of a validation conversation removed, each model asked for it
  between its prefix and suffix (greedy); exact match and chrF of the middle, with intervals.

    python bench/fim_bench.py                      # -> bench/results/fim_bench.json
    python bench/fim_bench.py --steps 100 --items 50
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from llmcycle.evaluate.stats import perplexity_score, rate_interval, relative_change
from llmcycle.evaluate.textmetrics import corpus_interval
from llmcycle.infer.engine import Engine
from llmcycle.infer.infill import infill
from llmcycle.infer.settings import GenerationSettings
from llmcycle.records import load_split
from llmcycle.train.packing import load_packed

RESULTS = Path(__file__).resolve().parent / "results"


def pretrain(run: Path, steps: int, fim_rate: float) -> float:
    """data -> tokenizer (FIM markers reserved in both runs) -> pretrain for exactly `steps` steps; seconds."""
    sets = ["tokenizer.fim=true", f"pretrain.train.max_steps={steps}", "pretrain.train.max_minutes=null",
            f"pretrain.train.save_every={steps}", f"pretrain.train.eval_every={steps}"]
    if fim_rate:
        sets.append(f"pretrain.fim={{rate: {fim_rate}}}")
    cmd = [sys.executable, "-m", "llmcycle", "run", "-c", "default", "--out", str(run),
           "--stages", "data,tokenizer,pretrain"] + [a for s in sets for a in ("--set", s)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def row_stats(model_dir: Path, data_dir: Path, seq_len: int) -> np.ndarray:
    """[rows, 2]: each validation row's summed next-token loss (nats) and its scored tokens."""
    engine = Engine.load(str(model_dir))
    rows = load_packed(data_dir, "val", engine.tokenizer, seq_len).rows
    out = []
    with torch.no_grad():
        for start in range(0, rows.shape[0], 16):
            ids = rows[start:start + 16]
            logits = engine.model(input_ids=ids).logits[:, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").sum(1)
            out += [[float(x), ids.shape[1] - 1] for x in nll]
    return np.array(out)


def middles(data_dir: Path, n: int, seed: int = 0) -> list[tuple[list[dict], int]]:
    """(messages, turn) pairs: a short assistant turn (1-12 words, neither first nor last message) of each of `n`
    validation conversations, the middle to infill, with the three messages before it and the one after."""
    rng = random.Random(seed)
    items = []
    for rec in load_split(data_dir, "val"):
        msgs = rec.get("messages") or []
        turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant" and 1 <= len(m["content"].split()) <= 12
                 and 0 < i < len(msgs) - 1]
        if turns:
            turn = rng.choice(turns)
            first = max(0, turn - 3)  # three messages before and one after: the prompt fits a 512-token context
            items.append((msgs[first:turn + 2], turn - first))
    rng.shuffle(items)
    return items[:n]


def split_text(tokenizer, messages: list[dict], turn: int) -> tuple[str, str, str]:
    """(prefix, middle, suffix) of the conversation as pretraining renders it (chat template, BOS left out: the
    infill prompt adds its own)."""
    marker = "\x00MIDDLE\x00"
    masked = [dict(m) for m in messages]
    middle = masked[turn]["content"]
    masked[turn]["content"] = marker
    text = tokenizer.apply_chat_template(masked, tokenize=False)
    prefix, suffix = text.split(marker)
    bos = tokenizer.bos_token or ""
    return (prefix if not bos or prefix.startswith(bos) else bos + prefix)[len(bos):], middle, suffix


def infill_scores(model_dir: Path, items, max_new_tokens: int) -> dict:
    engine = Engine.load(str(model_dir))
    triples = [split_text(engine.tokenizer, m, i) for m, i in items]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0)
    got = [c.text.strip() for c in infill(engine, [(p, s) for p, _, s in triples], settings)]
    refs = [mid.strip() for _, mid, _ in triples]
    exact = sum(g == r for g, r in zip(got, refs))
    ci, chrf = rate_interval(exact, len(refs)), corpus_interval("chrf", got, refs)
    return {"exact_match": ci.value, "exact_match_ci95": ci.ci95, "n": len(refs),
            "chrf": chrf.value, "chrf_ci95": chrf.ci95, "samples": [{"middle": r, "infilled": g} for r, g in
                                                        list(zip(refs, got))[:8]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rate", type=float, default=0.5, help="Share of train records rewritten as FIM.")
    parser.add_argument("--items", type=int, default=100, help="Held-out middles to infill.")
    parser.add_argument("--work", default="runs/fim_bench")
    parser.add_argument("--out", default=str(RESULTS / "fim_bench.json"))
    args = parser.parse_args()
    work = Path(args.work)
    load = [os.getloadavg()]
    seconds = {name: pretrain(work / name, args.steps, rate) for name, rate in (("ntp", 0.0), ("fim", args.rate))}
    load.append(os.getloadavg())
    data = work / "ntp" / "data"
    stats = {name: row_stats(work / name / "base", data, 128) for name in ("ntp", "fim")}
    change = relative_change(stats["ntp"], stats["fim"], perplexity_score)
    ppl = {name: float(perplexity_score(s.sum(0, keepdims=True))[0]) for name, s in stats.items()}
    items = middles(data, args.items)
    infills = {name: infill_scores(work / name / "base", items, 24) for name in ("ntp", "fim")}
    load.append(os.getloadavg())
    out = {"steps": args.steps, "fim_rate": args.rate, "val_rows": len(stats["ntp"]), "val_perplexity": ppl,
           "fim_vs_ntp_perplexity_change": change.as_dict(), "infill": infills, "pretrain_seconds": seconds,
           "torch_threads": torch.get_num_threads(), "load_average": load}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"{'':<8}{'val ppl':>10}  {'infill exact match [95%]':<26}{'infill chrF [95%]'}")
    for name in ("ntp", "fim"):
        em = infills[name]
        print(f"{name:<8}{ppl[name]:>10.2f}  {em['exact_match']:.3f} [{em['exact_match_ci95'][0]:.3f}, "
              f"{em['exact_match_ci95'][1]:.3f}]{'':<5}{em['chrf']:.2f} [{em['chrf_ci95'][0]:.2f}, "
              f"{em['chrf_ci95'][1]:.2f}]")
    print(f"FIM's left-to-right perplexity change: {change.value:+.2%} [{change.lo:+.2%}, {change.hi:+.2%}] "
          f"on {change.n} rows; load {load[0][0]:.1f} -> {load[-1][0]:.1f}")


if __name__ == "__main__":
    main()
