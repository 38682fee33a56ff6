"""float32 CPU products: the default BLAS (MKL) against oneDNN, which `llmcycle.infer.gemm` routes inference
through. Times SmolLM2-135M's projection shapes at several row counts, and with --model DIR one scoring forward
of a whole model (batch 8 x 160 tokens) both ways, in the same process and thread count.

    python bench/gemm_bench.py [--threads 1] [--model DIR]

Prints a table and writes bench/results/gemm_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from machine import cpu_name

RESULTS = Path(__file__).resolve().parent / "results" / "gemm_bench.json"
SHAPES = {"qkv": (576, 960), "out": (576, 576), "gate_up": (576, 3072), "down": (1536, 576), "head": (576, 49152)}
ROWS = (1, 4, 8, 16, 64, 256, 1024)


def seconds(fn, min_time: float = 0.3) -> float:
    fn()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_time:
        fn()
        runs += 1
    return (time.perf_counter() - start) / runs


def shape_rows() -> list[dict]:
    rows = []
    onednn = torch.ops.mkldnn._linear_pointwise
    for name, (k, n) in SHAPES.items():
        weight = torch.randn(n, k)
        for m in ROWS:
            if name == "head" and m > 64:
                continue
            x = torch.randn(m, k)
            blas = seconds(lambda: F.linear(x, weight))
            dnn = seconds(lambda: onednn(x, weight, None, "none", [], ""))
            flops = 2 * m * k * n
            rows.append({"layer": name, "rows": m, "in": k, "out": n, "blas_gflops": round(flops / blas / 1e9, 1),
                         "onednn_gflops": round(flops / dnn / 1e9, 1), "speedup": round(blas / dnn, 2)})
    return rows


def model_row(path: str) -> dict:
    from llmcycle.infer import gemm
    from llmcycle.loading import load_model

    model = load_model(path, dtype="fp32", device="cpu", merge=True).eval()
    ids = torch.randint(10, model.config.vocab_size - 10, (8, 160))

    def forward():
        with torch.inference_mode():
            model.model(input_ids=ids)

    blas = seconds(forward, 2.0)
    gemm.use_onednn(model)
    dnn = seconds(forward, 2.0)
    return {"model": path, "tokens": int(ids.numel()), "blas_s": round(blas, 3), "onednn_s": round(dnn, 3),
            "blas_tok_s": round(ids.numel() / blas, 1), "onednn_tok_s": round(ids.numel() / dnn, 1),
            "speedup": round(blas / dnn, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", help="an HF model dir: time one decoder forward both ways")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = shape_rows()
    print("| layer | rows | BLAS GFLOP/s | oneDNN GFLOP/s | speed-up |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layer']} ({r['in']}x{r['out']}) | {r['rows']} | {r['blas_gflops']} | {r['onednn_gflops']} | "
              f"{r['speedup']}x |")
    result = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__,
              "load_before": os.getloadavg()[0], "shapes": rows}
    if args.model:
        result["model_forward"] = m = model_row(args.model)
        print(f"decoder forward, {m['tokens']} tokens: BLAS {m['blas_tok_s']} tok/s, oneDNN {m['onednn_tok_s']} "
              f"tok/s ({m['speedup']}x)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
