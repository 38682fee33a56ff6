"""Soak: `llmcycle serve` under mixed, partly hostile load for a bounded time, then the damage report.

64 clients (by default) loop for --seconds over: well-formed streaming and non-streaming chats, streams cancelled
mid-way, malformed JSON, oversized prompts (100,000 characters), hostile fields (seed 2**64, a negative top_k), and
a thumbs rating on every reply they got; one `POST /admin/reload` half-way; with --promote DIR, the server runs
`--watch POINTER` and two thirds of the way the improve loop's promotion (a compare-and-swap of the pointer) names
DIR, and the server must switch to it without failing a request. It prints and writes (JSON):
5xx count (must be 0; 429 is an answer), well-formed streams that failed, every acknowledged feedback row found in
the database, server alive at the end, RSS at start and end, and the load average.

    python bench/soak.py --model runs/default/merged --seconds 120
    python bench/soak.py --model runs/default/merged --promote runs/default/aligned --seconds 600
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from machine import stamp  # noqa: E402
from serve_bench import PROMPTS, free_port, rss_mb, wait_ready  # noqa: E402

from llmcycle.improve import promote  # noqa: E402

ADMIN = "soak-admin"


def start(model: str, port: int, work: Path, threads: int, pointer: Path | None,
          quantize: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    served = ["--watch", str(pointer)] if pointer else ["--model", model]
    cmd = [sys.executable, "-m", "llmcycle", "serve", *served, "--port", str(port),
           "--feedback-db", str(work / "fb.db"), "--request-log", str(work / "requests.jsonl"),
           "--admin-key", ADMIN, "--max-batch", "16", "--max-queue", "256", "--max-tokens", "64",
           "--max-context", "512", "--threads", str(threads)] + (["--quantize", quantize] if quantize else [])
    log = open(work / "server.log", "ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    wait_ready(f"http://127.0.0.1:{port}", proc)
    return proc


def chat(stream: bool, **extra) -> dict:
    return {"messages": [{"role": "user", "content": random.choice(PROMPTS)}], "max_tokens": random.randint(4, 32),
            "stream": stream, **extra}


HOSTILE = [{"seed": 2 ** 64}, {"top_k": -1}, {"max_tokens": 10 ** 9}, {"n": 10 ** 6},
           {"messages": [{"role": "user", "content": "x" * 100_000}]},
           {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "nonsense"}}}}]


async def one(client: httpx.AsyncClient, url: str, stats: Counter, acked: list, failures: list) -> None:
    kind = random.choices(["stream", "plain", "cancel", "malformed", "hostile"], [4, 3, 2, 1, 1])[0]
    stats[kind] += 1
    if kind == "malformed":
        reply = await client.post(url + "/v1/chat/completions", content=b"{not json",
                                  headers={"Content-Type": "application/json"})
        stats[f"status {reply.status_code}"] += 1
        return
    body = chat(kind != "plain", **(random.choice(HOSTILE) if kind == "hostile" else {}))
    if not body["stream"] or kind == "hostile":
        body["stream"] = False
        reply = await client.post(url + "/v1/chat/completions", json=body)
        stats[f"status {reply.status_code}"] += 1
        if reply.status_code == 200:
            await rate(client, url, reply.json()["id"], stats, acked)
        return
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as reply:
        stats[f"status {reply.status_code}"] += 1
        if reply.status_code != 200:
            return
        frames, rid, done = 0, None, False
        async for line in reply.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            payload = json.loads(line[6:])
            if "error" in payload:
                failures.append(payload["error"]["message"])
                return
            rid, frames = payload["id"], frames + 1
            if kind == "cancel" and frames >= 2:
                return  # leaving mid-stream
        if not done:
            failures.append("stream ended without [DONE]")
        elif rid:
            await rate(client, url, rid, stats, acked)


async def rate(client: httpx.AsyncClient, url: str, rid: str, stats: Counter, acked: list) -> None:
    reply = await client.post(url + "/v1/feedback", json={"response_id": rid, "rating": random.choice([1, -1])})
    stats[f"feedback {reply.status_code}"] += 1
    if reply.status_code == 200:
        acked.append(reply.json()["id"])


async def soak(url: str, clients: int, seconds: float, model: str, pointer: Path | None = None,
               promote_to: str | None = None) -> dict:
    stats: Counter = Counter()
    acked: list[int] = []
    failures: list[str] = []
    deadline = time.monotonic() + seconds
    reload_at = time.monotonic() + seconds / 2
    promote_at = time.monotonic() + seconds * 2 / 3
    reloaded: dict = {}
    promoted: dict = {}

    async def worker(i: int) -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            while time.monotonic() < deadline:
                if i == 0 and not reloaded and time.monotonic() > reload_at:
                    reply = await client.post(url + "/admin/reload", json={"model": model},
                                              headers={"Authorization": f"Bearer {ADMIN}"})
                    reloaded["status"] = reply.status_code
                if i == 1 and pointer and promote_to and not promoted and time.monotonic() > promote_at:
                    promoted["swapped"] = promote(pointer, promote_to, expected=str(Path(model).resolve()))
                    promoted["at_s"] = round(seconds - (deadline - time.monotonic()), 1)
                try:
                    await one(client, url, stats, acked, failures)
                except httpx.HTTPError as exc:
                    stats[f"client error {type(exc).__name__}"] += 1

    await asyncio.gather(*(worker(i) for i in range(clients)))
    return {"stats": dict(stats), "acked": acked, "failures": failures, "reload": reloaded, "promotion": promoted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="runs/default/merged")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quantize", default=None, help="the server's weight format (bf16, int8, int4)")
    parser.add_argument("--promote", default=None, help="A model dir the improve loop's pointer promotion names "
                        "two thirds of the way (the server watches the pointer).")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "soak.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="soak_"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pointer = None
    if args.promote:
        pointer = work / "current.txt"
        pointer.write_text(str(Path(args.model).resolve()))
    load_start = os.getloadavg()
    proc = start(args.model, port, work, args.threads, pointer, args.quantize)
    rss_start = rss_mb(proc.pid)
    result = asyncio.run(soak(url, args.clients, args.seconds, args.model, pointer, args.promote))
    alive = proc.poll() is None and httpx.get(url + "/health", timeout=30).status_code == 200
    served_at_end = httpx.get(url + "/v1/models", timeout=30).json()["data"][0]["root"] if alive else None
    rss_end = rss_mb(proc.pid) if proc.poll() is None else None
    metrics = httpx.get(url + "/metrics", timeout=30).text if alive else ""
    proc.terminate()
    code = proc.wait(60)
    with sqlite3.connect(work / "fb.db") as db:
        stored = {row[0] for row in db.execute("SELECT id FROM feedback")}
    stats = result["stats"]
    out = {
        **stamp(), "model": args.model, "clients": args.clients, "seconds": args.seconds, "threads": args.threads,
        "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "requests": sum(v for k, v in stats.items() if k.startswith("status ")),
        "status_5xx": sum(v for k, v in stats.items() if k.startswith("status 5")),
        "failed_well_formed_streams": len(result["failures"]), "failure_samples": result["failures"][:5],
        "feedback_acked": len(result["acked"]), "feedback_acked_missing": len(set(result["acked"]) - stored),
        "store_failures": [line for line in metrics.splitlines() if line.startswith("llmcycle_store_failures_total")],
        "reload_status": result["reload"].get("status"), "promotion": result["promotion"],
        "served_at_end": served_at_end, "alive_at_end": alive, "exit_code_on_sigterm": code,
        "rss_mb_start": rss_start, "rss_mb_end": rss_end, "counts": stats, "server_log": str(work / "server.log"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("requests", "status_5xx", "failed_well_formed_streams", "feedback_acked",
                                          "feedback_acked_missing", "promotion", "served_at_end", "alive_at_end",
                                          "exit_code_on_sigterm",
                                          "rss_mb_start", "rss_mb_end", "load_average_end")}, indent=2))


if __name__ == "__main__":
    main()
