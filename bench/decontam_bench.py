"""Benchmark of the contamination check: the full chitchat corpus against every installed benchmark and the probe
prompts, with eval items planted into copies of chitchat conversations.

Planted copies: exact, re-cased and re-punctuated, and lightly edited (1 word changed or added in texts under 13
words, 2 under 30, 3 beyond). Recall: planted records flagged for the item planted in them. False flags: clean
records flagged (the corpus as shipped; what it really shares with the benchmarks counts against us too).

    python bench/decontam_bench.py [--planted 300] [--seed 0]

Prints a table and writes bench/results/decontam_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

from llmcycle.data.decontaminate import EvalIndex
from llmcycle.data.eval_sets import benchmark_sets, probe_sets
from llmcycle.data.sources.chitchat import read_chitchat

RESULTS = Path(__file__).resolve().parent / "results" / "decontam_bench.json"
FILLER = "really maybe quite very just still also even".split()


def edit(text: str, rng: random.Random) -> str:
    """A few words changed or added: the light edits a copy picks up when pasted into a dataset."""
    words = text.split()
    k = 1 if len(words) < 13 else 2 if len(words) < 30 else 3
    for _ in range(k):
        i = rng.randrange(len(words))
        if rng.random() < 0.5:
            words[i] = rng.choice(FILLER)
        else:
            words.insert(i, rng.choice(FILLER))
    return " ".join(words)


def recase(text: str, rng: random.Random) -> str:
    """Case and punctuation changed, the words kept."""
    out = text.upper() if rng.random() < 0.5 else text.lower()
    return out.replace(".", "!").replace(",", ";").replace("?", " ?")


def plant(records: list[dict], sets: list, count: int, seed: int) -> tuple[list[dict], dict[int, str]]:
    """Copies of chitchat conversations with an eval item inserted as a user turn; {record index: set:item}."""
    rng = random.Random(seed)
    pool = [(s.name, item_id, text) for s in sets for item_id, text in s.items if len(text.split()) >= 8]
    planted, truth = [], {}
    for i in range(count):
        name, item_id, text = rng.choice(pool)
        variant = ("exact", "recase", "edit")[i % 3]
        text = text if variant == "exact" else recase(text, rng) if variant == "recase" else edit(text, rng)
        host = json.loads(json.dumps(rng.choice(records)))
        at = rng.randrange(len(host["messages"]) + 1)
        host["messages"].insert(at, {"role": "user", "content": text})
        truth[len(records) + len(planted)] = (f"{name}:{item_id}", variant)
        planted.append(host)
    return records + planted, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planted", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    clean = [e.record for e in read_chitchat().examples]
    sets, skipped = benchmark_sets()
    sets += probe_sets()
    load_s = time.perf_counter() - start
    records, truth = plant(clean, sets, args.planted, args.seed)
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    index = EvalIndex(sets)
    index_s = time.perf_counter() - start
    start = time.perf_counter()
    report = index.check(clean)
    clean_s = time.perf_counter() - start
    start = time.perf_counter()
    planted_report = index.check(records)
    planted_s = time.perf_counter() - start
    found = {row: variant for row, (item, variant) in truth.items()
             if any(f.startswith(item + " ") for f in planted_report.flagged.get(row, []))}
    per_variant = {v: [sum(1 for r, (_, x) in truth.items() if x == v and r in found),
                       sum(1 for _, x in truth.values() if x == v)] for v in ("exact", "recase", "edit")}
    missed = [truth[r][0] for r in truth if r not in found][:10]
    result = {
        "clean_records": len(clean), "eval_sets": {s.name: len(s.items) for s in sets}, "skipped_sets": skipped,
        "eval_items": sum(len(s.items) for s in sets), "load_inputs_s": round(load_s, 2),
        "index_eval_sets_s": round(index_s, 2), "check_clean_s": round(clean_s, 2),
        "total_clean_s": round(load_s + index_s + clean_s, 2), "check_with_planted_s": round(planted_s, 2),
        "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "clean_flagged": len(report.flagged), "false_flag_rate": round(len(report.flagged) / len(clean), 5),
        "clean_flag_examples": {str(r): report.flagged[r] for r in report.records[:10]},
        "planted": len(truth), "planted_found": len(found), "recall_by_variant": per_variant, "missed": missed,
        "per_set_clean": {k: v["contaminated_items"] for k, v in report.per_set.items()},
    }
    print(f"{'clean records':28s} {len(clean)}\n{'eval items':28s} {result['eval_items']} in {len(sets)} sets")
    print(f"{'time: read + index + check':28s} {load_s:.1f} + {index_s:.1f} + {clean_s:.1f} s (load average "
          f"{load_before:.2f} before, {result['load_average_after']:.2f} after, {os.cpu_count()} cpus)")
    print(f"{'clean records flagged':28s} {len(report.flagged)} ({100 * result['false_flag_rate']:.2f}%)")
    print(f"{'planted found':28s} {len(found)}/{len(truth)}  " +
          "  ".join(f"{v} {a}/{b}" for v, (a, b) in per_variant.items()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
