"""Pretraining step throughput: llmcycle's training loop vs the plain transformers `Trainer`, same model (a named
preset), same rows, same batch, same optimizer settings, in one process.

Each contender trains `--steps` optimizer steps (their mean train loss is printed: the same maths gives the same
loss); the first `--warmup` steps are not timed, and every later step is
timed from the end of the previous one (so data loading, logging and the optimizer are all inside the time). MFU is
model FLOPs per second over an fp32 matmul peak measured in this process.

Two clocks: wall time, and (meaningful with OMP_NUM_THREADS=1) this process's CPU time, which other people's jobs
on a shared machine hardly disturb; the peak is measured with the same clock. Contenders run interleaved
`--repeats` times and each keeps its best round.

    python bench/pretrain_bench.py [--preset default] [--seq-len 128] [--batch-size 16] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from llmcycle.infer.gemm import GEMM_ENV
from llmcycle.models import build_model, get_preset
from llmcycle.train.loop import LoopConfig, train_loop
from llmcycle.train.objectives import CrossEntropy, logits_cross_entropy
from llmcycle.train.mfu import _PEAKS, flops_per_token, measured_peak_flops

RESULTS = Path(__file__).resolve().parent / "results" / "pretrain_bench.json"


class FakeTokenizer:
    """What build_model reads from a tokenizer: the benchmark needs no trained tokenizer."""

    def __init__(self, vocab: int):
        self.vocab, self.bos_token_id, self.eos_token_id, self.pad_token_id = vocab, 0, 2, 0

    def __len__(self) -> int:
        return self.vocab


def make_rows(vocab: int, n_rows: int, seq_len: int) -> torch.Tensor:
    return torch.randint(0, vocab, (n_rows, seq_len), generator=torch.Generator().manual_seed(0))


def loop_config(args, **kw) -> LoopConfig:
    big = 10**9
    return LoopConfig(max_steps=args.steps, batch_size=args.batch_size, lr=1e-3, warmup_steps=2,
                      eval_every=big, save_every=big, log_every=big, **kw)


def run_ours(args, rows, label: str, gemm: str | None = None, **loop_kw) -> tuple[list[tuple[float, float]], float]:
    """Our loop; `gemm` sets LLMCYCLE_GEMM for this run (onednn: the training products through oneDNN);
    `objective=` replaces the loss (e.g. the unfused logits one, to see what the fused output projection gains)."""
    before = os.environ.get(GEMM_ENV)
    if gemm is not None:
        os.environ[GEMM_ENV] = gemm
    try:
        return _run_ours(args, rows, label, **loop_kw)
    finally:
        os.environ.pop(GEMM_ENV, None)
        if before is not None:
            os.environ[GEMM_ENV] = before


def _run_ours(args, rows, label: str, objective=None, **loop_kw) -> tuple[list[tuple[float, float]], float]:
    """(per-step (wall, CPU) times, mean train loss over all steps)."""
    model = build_model(args.preset, FakeTokenizer(args.vocab), seed=0)
    stamps: list[tuple[float, float]] = []

    def batches(epoch: int):
        for i in range(0, rows.shape[0] - args.batch_size + 1, args.batch_size):
            ids = rows[i:i + args.batch_size]
            yield {"input_ids": ids, "labels": ids}

    losses: list[float] = []

    def stamp(step: int, record: dict) -> None:
        stamps.append(now())
        losses.append(record["loss"])

    with tempfile.TemporaryDirectory() as work:
        stamps.append(now())
        train_loop(model, batches, None, loop_config(args, **loop_kw), Path(work), desc=label, on_step=stamp,
                   objective=objective)
    return deltas(stamps), sum(losses) / len(losses)


def now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def deltas(stamps: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])]


def cpu_clock_peak(size: int = 1024, repeats: int = 6) -> float:
    """fp32 matmul FLOP/s by this process's CPU time (the load-robust twin of mfu.measured_peak_flops)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        torch.mm(a, b)
        best = min(best, time.process_time() - start)
    return 2.0 * size**3 / max(best, 1e-9)


def run_trainer(args, rows, bf16: bool = False) -> tuple[list[tuple[float, float]], float]:
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = build_model(args.preset, FakeTokenizer(args.vocab), seed=0)
    stamps: list[tuple[float, float]] = []

    class Stamp(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if not stamps:
                stamps.append(now())

        def on_step_end(self, a, state, control, **kw):
            stamps.append(now())

    data = Dataset.from_dict({"input_ids": rows.tolist(), "labels": rows.tolist()}).with_format("torch")
    with tempfile.TemporaryDirectory() as work:
        targs = TrainingArguments(
            output_dir=work, per_device_train_batch_size=args.batch_size, max_steps=args.steps, learning_rate=1e-3,
            warmup_steps=2, lr_scheduler_type="cosine", weight_decay=0.1, adam_beta2=0.95, max_grad_norm=1.0,
            logging_steps=10**9, save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0, disable_tqdm=True, seed=0, bf16=bf16)
        out = Trainer(model=model, args=targs, train_dataset=data, callbacks=[Stamp()]).train()
    return deltas(stamps), out.training_loss


def summarise(name: str, run: tuple[list[tuple[float, float]], float], args, fpt: float, peak: float,
              cpu_peak: float) -> dict:
    step_times, mean_loss = run
    timed = step_times[args.warmup:]
    wall = statistics.median(t[0] for t in timed)
    cpu = statistics.median(t[1] for t in timed)
    tokens = args.batch_size * args.seq_len
    return {"name": name, "median_step_s": wall, "tokens_per_s": tokens / wall, "mfu": tokens / wall * fpt / peak,
            "median_step_cpu_s": cpu, "tokens_per_cpu_s": tokens / cpu, "mfu_cpu_clock": tokens / cpu * fpt / cpu_peak,
            "steps_timed": len(timed), "mean_train_loss": mean_loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (compilation happens here)")
    parser.add_argument("--variants", default="ours,ours-compile,trainer,ours-bf16,ours-bf16-compile,trainer-bf16",
                        help="comma list of: ours, ours-logits, ours-onednn, ours-compile, ours-bf16, ours-bf16-compile, trainer, trainer-bf16")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; each contender's best counts")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("LLMCYCLE_QUIET", "1")
    get_preset(args.preset)
    rows = make_rows(args.vocab, args.batch_size * args.steps, args.seq_len)
    peak = measured_peak_flops("cuda" if torch.cuda.is_available() else "cpu")
    cpu_peak = cpu_clock_peak()
    fpt = flops_per_token(build_model(args.preset, FakeTokenizer(args.vocab)), args.seq_len)
    contenders = {
        "llmcycle loop (fp32)": lambda: run_ours(args, rows, "ours"),
        "llmcycle loop (fp32, unfused loss)": lambda: run_ours(args, rows, "ours-logits",
                                                               objective=CrossEntropy(logits_cross_entropy)),
        "llmcycle loop (fp32, oneDNN)": lambda: run_ours(args, rows, "ours-onednn", gemm="onednn"),
        "llmcycle loop (bf16 autocast)": lambda: run_ours(args, rows, "ours-bf16", precision="bf16"),
        "llmcycle loop (fp32, compiled)": lambda: run_ours(args, rows, "ours-compile", compile=True),
        "llmcycle loop (bf16, compiled)": lambda: run_ours(args, rows, "ours-bf16-c", precision="bf16", compile=True),
        "transformers Trainer (fp32)": lambda: run_trainer(args, rows),
        "transformers Trainer (bf16)": lambda: run_trainer(args, rows, bf16=True),
    }
    keys = {"ours": "llmcycle loop (fp32)", "ours-logits": "llmcycle loop (fp32, unfused loss)", "ours-onednn": "llmcycle loop (fp32, oneDNN)", "ours-bf16": "llmcycle loop (bf16 autocast)",
            "ours-compile": "llmcycle loop (fp32, compiled)", "ours-bf16-compile": "llmcycle loop (bf16, compiled)",
            "trainer": "transformers Trainer (fp32)", "trainer-bf16": "transformers Trainer (bf16)"}
    names = [keys[v.strip()] for v in args.variants.split(",")]
    rounds: dict[str, list[dict]] = {name: [] for name in names}
    for _ in range(args.repeats):  # interleaved, so a burst of load from elsewhere hits every contender alike
        for name in names:
            rounds[name].append(summarise(name, contenders[name](), args, fpt, peak, cpu_peak))
    results = [min(rounds[name], key=lambda r: r["median_step_s"]) for name in names]
    for r in results:  # the CPU-clock columns also keep their best round
        best = min(rounds[r["name"]], key=lambda x: x["median_step_cpu_s"])
        r.update({k: best[k] for k in ("median_step_cpu_s", "tokens_per_cpu_s", "mfu_cpu_clock")})
    _PEAKS.clear()  # the peak again after the runs; the higher of the two (a lower, safer MFU) counts
    peak2 = measured_peak_flops("cuda" if torch.cuda.is_available() else "cpu")
    cpu_peak2 = cpu_clock_peak()
    for r in results:
        r["mfu"] *= peak / max(peak, peak2)
        r["mfu_cpu_clock"] *= cpu_peak / max(cpu_peak, cpu_peak2)
    peak, cpu_peak = max(peak, peak2), max(cpu_peak, cpu_peak2)
    base = next((r for r in results if r["name"] == keys["trainer"]), results[0])
    for r in results:
        r["speedup_vs_trainer"] = r["tokens_per_s"] / base["tokens_per_s"]
        r["speedup_vs_trainer_cpu_clock"] = r["tokens_per_cpu_s"] / base["tokens_per_cpu_s"]
    load = os.getloadavg()[0]
    print(f"preset={args.preset} seq_len={args.seq_len} batch={args.batch_size} threads={torch.get_num_threads()} "
          f"fp32 matmul peak={peak / 1e9:.0f} GFLOP/s (CPU clock {cpu_peak / 1e9:.0f}) load={load:.1f}")
    print(f"{'':32} {'--------- wall clock ---------':>36}  {'---------- CPU clock ----------':>36}")
    print(f"{'contender':32} {'step ms':>8} {'tokens/s':>9} {'MFU':>6} {'vs Trainer':>10}  "
          f"{'step ms':>8} {'tokens/s':>9} {'MFU':>6} {'vs Trainer':>10} {'mean loss':>9}")
    for r in results:
        print(f"{r['name']:32} {1000 * r['median_step_s']:8.0f} {r['tokens_per_s']:9.0f} {100 * r['mfu']:5.1f}% "
              f"{r['speedup_vs_trainer']:9.2f}x  {1000 * r['median_step_cpu_s']:8.0f} {r['tokens_per_cpu_s']:9.0f} "
              f"{100 * r['mfu_cpu_clock']:5.1f}% {r['speedup_vs_trainer_cpu_clock']:9.2f}x {r['mean_train_loss']:9.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "preset": args.preset, "vocab": args.vocab, "seq_len": args.seq_len, "batch_size": args.batch_size,
        "threads": torch.get_num_threads(), "load_avg_1m": load, "peak_flops": peak,
        "peak_flops_cpu_clock": cpu_peak, "flops_per_token": fpt,
        "python": sys.version.split()[0], "torch": torch.__version__, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
