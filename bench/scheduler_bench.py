"""The server's scheduler alone (no HTTP): process CPU time per generated token and tok/s at 1 and N clients.

Each client is a thread submitting streaming requests of --tokens greedy tokens (min_new_tokens = max) to one
`infer.continuous.Scheduler`, as the server's request handlers do; rounds alternate 1 and N clients after one
warm-up at N, and the load average is recorded with each. CPU time is the whole process's (the decoding thread, its
OpenMP worker and the client threads), so it is an upper bound on the scheduler's own. Compare two trees by running
this file with each on PYTHONPATH, alternating.

    python bench/scheduler_bench.py --model default --rounds 3 --out bench/results/scheduler_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `llmcycle serve` runs: before torch loads libgomp

import llmcycle  # noqa: E402
from llmcycle.infer import Engine, GenerationSettings  # noqa: E402
from llmcycle.infer.continuous import Scheduler  # noqa: E402
from llmcycle.infer.engine import Completion  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from serve_bench import PROMPTS, random_default  # noqa: E402


def clients_run(engine: Engine, scheduler: Scheduler, settings: GenerationSettings, clients: int,
                requests: int) -> dict:
    counts: list[int] = []

    def client(i: int) -> None:
        for r in range(requests):
            ids = engine.encode_chat([{"role": "user", "content": PROMPTS[(i + r) % len(PROMPTS)]}])
            for event in scheduler.submit(ids, settings):
                if isinstance(event, Completion):
                    counts.append(event.completion_tokens)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    cpu, wall = time.process_time(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    tokens = sum(counts)
    return {"clients": clients, "tokens": tokens, "cpu_ms_per_token": round(cpu / tokens * 1e3, 3),
            "tok_s": round(tokens / wall, 1), "load_average": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="HF dir, or `default`: the default preset, random")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "scheduler_bench.json"))
    args = parser.parse_args()
    model = random_default(Path(tempfile.mkdtemp(prefix="scheduler_bench_"))) if args.model == "default" \
        else args.model
    engine = Engine.load(model, threads=args.threads)
    scheduler = Scheduler(engine, max_batch=args.clients, max_context=1024)
    settings = engine.chat_settings(GenerationSettings.from_model(
        engine.model, max_new_tokens=args.tokens, temperature=0)).replace(min_new_tokens=args.tokens)
    clients_run(engine, scheduler, settings, args.clients, 1)  # warm-up with every row busy
    runs = []
    for _ in range(args.rounds):
        runs.append(clients_run(engine, scheduler, settings, 1, 8))
        runs.append(clients_run(engine, scheduler, settings, args.clients, 2))
    scheduler.close()
    results = {"model": args.model, "threads": args.threads, "tokens": args.tokens,
               "source": str(Path(llmcycle.__file__).parent), "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
