"""Structured output on a real model: N `json_schema` requests through the server's scheduler, how many replies
validate against the schema, and decode speed with the grammar vs without it (the same prompts, interleaved so
both see the same machine load).

Requests go through `infer.continuous.Scheduler` one at a time (one client), the server's own decoding path
without HTTP; decode tok/s counts the tokens after the first, over the time from the first piece to the end.
Prints a table and writes bench/results/structured_bench.json with the load average.

    python bench/structured_bench.py --model smollm2-135m-instruct --requests 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import jsonschema

from llmcycle.infer import Engine, GenerationSettings
from llmcycle.infer.continuous import Piece, Scheduler
from llmcycle.infer.engine import Completion

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "age", "city", "hobbies"],
          "properties": {"name": {"type": "string", "maxLength": 40},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120},
                         "city": {"type": "string", "maxLength": 40},
                         "hobbies": {"type": "array", "maxItems": 3,
                                     "items": {"type": "string", "maxLength": 30}}}}
PEOPLE = ["a baker", "a pilot", "a retired teacher", "a young painter", "a fisherman", "a nurse", "a chess player",
          "a gardener", "a student", "a violinist"]
ASKS = ["Describe {} as JSON with name, age, city and hobbies.", "Invent {} and give their details as JSON.",
        "Return a JSON object about {}: name, age, city, hobbies.", "Make up {}. Answer in JSON only.",
        "Give me a JSON profile of {}."]


def prompts(n: int) -> list[str]:
    return [ASKS[i % len(ASKS)].format(PEOPLE[(i // len(ASKS)) % len(PEOPLE)]) for i in range(n)]


def one(scheduler: Scheduler, ids: list[int], settings: GenerationSettings) -> tuple[Completion, float | None]:
    """The completion and its decode rate (tok/s after the first token)."""
    first = None
    for event in scheduler.submit(ids, settings):
        if isinstance(event, Piece) and first is None and event.token_ids:
            first = time.perf_counter()
        if isinstance(event, Completion):
            elapsed = time.perf_counter() - first if first else 0
            rate = (event.completion_tokens - 1) / elapsed if elapsed > 0 and event.completion_tokens > 1 else None
            return event, rate
    raise RuntimeError("generation failed")


def valid(text: str) -> bool:
    try:
        jsonschema.validate(json.loads(text), SCHEMA)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--free-max-tokens", type=int, default=None,
                        help="max tokens of the unconstrained runs (a rate needs fewer tokens than a valid reply)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/structured_bench.json")
    args = parser.parse_args()

    engine = Engine.load(args.model, threads=args.threads)
    began = time.perf_counter()
    engine.json_grammar({"type": "object", "properties": {"warm": {"type": "integer"}}})
    first_s = time.perf_counter() - began  # reads the tokenizer's vocabulary once per model
    began = time.perf_counter()
    grammar = engine.json_grammar(SCHEMA)
    compile_s = time.perf_counter() - began
    scheduler = Scheduler(engine, max_batch=4, max_context=2048)
    base = engine.chat_settings(GenerationSettings.from_model(engine.model, max_new_tokens=args.max_tokens,
                                                              temperature=0.7, top_p=0.95))
    results = {"grammar": [], "free": []}
    load_before = os.getloadavg()
    for i, text in enumerate(prompts(args.requests)):
        ids = engine.encode_chat([{"role": "user", "content": text}])
        for kind in ("grammar", "free"):
            settings = base.replace(seed=i, grammar=grammar) if kind == "grammar" else base.replace(
                seed=i, max_new_tokens=args.free_max_tokens or args.max_tokens)
            completion, rate = one(scheduler, ids, settings)
            results[kind].append({"prompt": text, "text": completion.text, "tokens": completion.completion_tokens,
                                  "finish": completion.finish_reason, "tok_s": rate, "valid": valid(completion.text)})
    scheduler.close()
    load_after = os.getloadavg()

    summary = {}
    for kind, rows in results.items():
        rates = [r["tok_s"] for r in rows if r["tok_s"]]
        summary[kind] = {"n": len(rows), "valid": sum(r["valid"] for r in rows),
                         "valid_pct": 100 * sum(r["valid"] for r in rows) / len(rows),
                         "tok_s_median": statistics.median(rates), "tok_s_mean": statistics.mean(rates),
                         "tok_s_stdev": statistics.stdev(rates) if len(rates) > 1 else 0.0,
                         "tokens_mean": statistics.mean(r["tokens"] for r in rows)}
    ratio = summary["grammar"]["tok_s_median"] / summary["free"]["tok_s_median"]
    report = {"model": args.model, "threads": engine.threads, "max_tokens": args.max_tokens,
              "schema_compile_s": compile_s, "first_grammar_s": first_s, "summary": summary, "speed_ratio_median": ratio,
              "loadavg_before": load_before, "loadavg_after": load_after, "rows": results}
    print(f"model {args.model}, {args.requests} requests each, threads {engine.threads}, schema compile "
          f"{compile_s * 1e3:.1f} ms (first grammar of the model {first_s:.2f} s), loadavg {load_before[0]:.2f} -> {load_after[0]:.2f}")
    print(f"{'':8} {'valid':>10} {'tok/s med':>10} {'mean±sd':>14} {'tokens':>7}")
    for kind, s in summary.items():
        print(f"{kind:8} {s['valid']:>4}/{s['n']:<4} {s['tok_s_median']:>10.1f} "
              f"{s['tok_s_mean']:>7.1f}±{s['tok_s_stdev']:<5.1f} {s['tokens_mean']:>7.1f}")
    print(f"grammar / free decode speed (medians): {ratio:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
