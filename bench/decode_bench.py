"""Decode speed: llmcycle's engine vs transformers `generate`, same model, same prompt, greedy, same new tokens.

Measures batch-1 and batch-8 decode tokens/s and time to first token, at 1 and 2 CPU threads, plus the int8
dynamic-quantized engine (speed and perplexity change). Prints a table and writes bench/results/decode_bench.json.

    python bench/decode_bench.py                      # the `default` preset (5.05M params), random weights
    python bench/decode_bench.py --model runs/x/base  # a real model dir
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "decode_bench.json"


def stand_in_tokenizer(vocab_size: int):
    """A word-level tokenizer covering the random model's vocabulary (the bench works on token ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="t0", eos_token="t1", pad_token="t0")


def random_default_model(vocab: int = 8192):
    """The `default` pretraining preset (hidden 256, 4 layers, 4 heads / 2 kv, ffn 704, tied), randomly initialised:
    decode speed does not depend on the weights' values."""
    from transformers import AutoModelForCausalLM

    from llmcycle.models import llama_config

    config = llama_config("default", vocab, bos_id=0, eos_id=1, pad_id=0)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def measure(engine, prompt_ids: list[int], batch: int, new_tokens: int, repeats: int) -> dict:
    """Ours and generate's time to first token and decode tokens/s: best of `repeats`, the two interleaved so
    that load from other processes falls on both alike."""
    from llmcycle.infer import GenerationSettings

    prompts = [prompt_ids] * batch
    ids = torch.tensor(prompts)
    mask = torch.ones_like(ids)

    def ours(n):
        settings = GenerationSettings(max_new_tokens=n, min_new_tokens=n, temperature=0)
        return engine.generate_ids(prompts, settings, batch_size=batch)

    def theirs(n):
        with torch.inference_mode():
            return engine.model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n,
                                         pad_token_id=engine.pad_token_id)

    runners = {"ours": ours, "generate": theirs}
    best = {(name, n): float("inf") for name in runners for n in (1, new_tokens)}
    for fn in runners.values():
        fn(4)  # warm-up
    for _ in range(repeats):
        for name, fn in runners.items():
            for n in (1, new_tokens):
                start = time.perf_counter()
                fn(n)
                best[name, n] = min(best[name, n], time.perf_counter() - start)
    row = {"batch": batch, "new_tokens": new_tokens}
    for name in runners:
        row[f"{name}_ttft_ms"] = round(best[name, 1] * 1000, 2)
        row[f"{name}_tok_s"] = round(batch * (new_tokens - 1) / max(best[name, new_tokens] - best[name, 1], 1e-9), 1)
    row["speedup"] = round(row["ours_tok_s"] / row["generate_tok_s"], 2)
    row["same_tokens"] = [c.token_ids for c in ours(new_tokens)] == theirs(new_tokens)[:, len(prompt_ids):].tolist()
    return row


def perplexity(engine, sequences: list[list[int]]) -> float:
    logprobs = engine.score_ids([s[:1] for s in sequences], [s[1:] for s in sequences])
    tokens = sum(len(lp) for lp in logprobs)
    return float(torch.exp(-torch.tensor(sum(sum(lp) for lp in logprobs)) / tokens))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model dir (default: the `default` preset with random weights)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from llmcycle.infer import Engine

    if args.model:
        base = Engine.load(args.model)
        model, tokenizer = base.model, base.tokenizer
    else:
        model = random_default_model()
        tokenizer = stand_in_tokenizer(model.config.vocab_size)
    params = sum(p.numel() for p in model.parameters())
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(2, model.config.vocab_size, (args.prompt_tokens,), generator=generator).tolist()
    load_before = os.getloadavg()[0]
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for quantize in (None, "int8"):
            engine = Engine(model, tokenizer, quantize=quantize, threads=threads)
            for batch in (1, 8):
                row = measure(engine, prompt, batch, args.new_tokens, args.repeats)
                rows.append({"threads": threads, "quantize": quantize or "none", "backend": engine.backend_name, **row})
                print_row(rows[-1])
    ppl = quantization_quality(model, tokenizer, prompt)
    result = {"model": args.model or "random `default` preset (hidden 256, 4 layers, 4/2 heads, ffn 704, vocab 8192)",
              "params": params, "prompt_tokens": args.prompt_tokens, "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
              "load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2),
              "rows": rows, "perplexity": ppl}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"perplexity fp32 {ppl['fp32']:.3f}  int8 {ppl['int8']:.3f}  change {ppl['change_pct']:+.2f}%  "
          f"(load avg {result['load_avg_before']} -> {result['load_avg_after']}); wrote {args.out}")


def quantization_quality(model, tokenizer, prompt: list[int]) -> dict:
    """Perplexity of fp32 and int8 engines on text the fp32 model samples from itself (a random model has no
    other natural text; with --model it is still a fair comparison of the two weight formats)."""
    from llmcycle.infer import Engine, GenerationSettings

    fp32 = Engine(model, tokenizer)
    settings = GenerationSettings(max_new_tokens=96, min_new_tokens=96, temperature=1.0, seed=0)
    samples = [prompt[:8] + c.token_ids for c in fp32.generate_ids([prompt[:8]] * 8, settings)]
    int8 = Engine(model, tokenizer, quantize="int8")
    a, b = perplexity(fp32, samples), perplexity(int8, samples)
    return {"fp32": round(a, 4), "int8": round(b, 4), "change_pct": round(100 * (b - a) / a, 3),
            "tokens": sum(len(s) - 1 for s in samples)}


HEADER = False


def print_row(row: dict) -> None:
    global HEADER
    if not HEADER:
        print(f"{'thr':>3} {'quant':>5} {'batch':>5} | {'ours tok/s':>10} {'gen tok/s':>10} {'speedup':>7} | "
              f"{'ours ttft ms':>12} {'gen ttft ms':>11} | same")
        HEADER = True
    print(f"{row['threads']:>3} {row['quantize']:>5} {row['batch']:>5} | {row['ours_tok_s']:>10} "
          f"{row['generate_tok_s']:>10} {row['speedup']:>6}x | {row['ours_ttft_ms']:>12} {row['generate_ttft_ms']:>11} | "
          f"{row['same_tokens']}", flush=True)


if __name__ == "__main__":
    main()
