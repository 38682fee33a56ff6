"""DPO throughput: llmcycle align vs TRL's DPOTrainer + PEFT, same model, pairs, LoRA, batch, beta and lr, one epoch.

Pairs are chitchat exchanges: the real reply is chosen, a reply from another conversation rejected. The model is
the `default` preset (random init) on our tokenizer. Both run fp32 without gradient checkpointing (TRL's CPU-friendly
settings); TRL computes the reference on the fly with the adapter disabled (its default), llmcycle precomputes it
once with the adapter disabled (counted in its end-to-end time). Throughput = real (non-pad) tokens of the chosen
and rejected sequences per second. Loss parity with TRL is checked in tests/align/test_trl_parity.py.

    python bench/align_bench.py [--pairs 128] [--batch 8] [--threads 2]

Prints a table and writes bench/results/align_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LLMCYCLE_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_inputs(root: Path, n_pairs: int):
    from llmcycle.data.config import DataConfig
    from llmcycle.data.stage import run as data_run
    from llmcycle.models import build_model
    from llmcycle.records import load_split, write_jsonl
    from llmcycle.loading import load_tokenizer
    from llmcycle.tokenizer import TokenizerConfig, run as tok_run

    data_run(DataConfig(limit=max(400, n_pairs * 2)), root / "raw")
    tok_run(TokenizerConfig(vocab_size=8192), root / "raw", root / "tok")
    tok = load_tokenizer(root / "tok")
    exchanges = []
    for rec in load_split(root / "raw", "train"):
        m = rec["messages"]
        if len(m) >= 2 and m[0]["role"] == "user" and len(m[0]["content"]) < 300 and len(m[1]["content"]) < 300:
            exchanges.append((m[0]["content"], m[1]["content"]))
    pairs = []
    for i, (user, reply) in enumerate(exchanges[:n_pairs]):
        other = exchanges[(i + 7) % len(exchanges)][1]
        if other != reply:
            pairs.append({"prompt": [{"role": "user", "content": user}],
                          "chosen": [{"role": "assistant", "content": reply}],
                          "rejected": [{"role": "assistant", "content": other}]})
    write_jsonl(root / "prefs" / "train.jsonl", pairs)
    model = build_model("default", tok, seed=0)
    model.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    return pairs, tok


def run_trl(root: Path, pairs, tok, args) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    began = time.perf_counter()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float32)
    config = DPOConfig(output_dir=str(root / "trl"), beta=args.beta, per_device_train_batch_size=args.batch,
                       num_train_epochs=1, learning_rate=args.lr, max_length=args.max_len, report_to=[],
                       use_cpu=True, save_strategy="no", logging_steps=1000, seed=0, disable_tqdm=True,
                       gradient_checkpointing=False, bf16=False, dataloader_num_workers=0)
    peft = LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(pairs), processing_class=tok,
                         peft_config=peft)
    setup = time.perf_counter() - began
    tokens = sum(int(b["attention_mask"].sum()) for b in trainer.get_train_dataloader())

    class Clock(TrainerCallback):
        start = end = 0.0

        def on_train_begin(self, *a, **k):
            Clock.start = time.perf_counter()

        def on_train_end(self, *a, **k):
            Clock.end = time.perf_counter()

    trainer.add_callback(Clock())
    trainer.train()
    seconds = Clock.end - Clock.start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "stage_seconds": setup + seconds}


def run_ours(root: Path, args) -> dict:
    from llmcycle.train.align import AlignConfig, run

    cfg = AlignConfig(method="dpo", beta=args.beta, max_seq_len=args.max_len,
                      lora={"r": args.r, "alpha": 2 * args.r, "dropout": 0.0, "target_modules": TARGETS},
                      train={"max_steps": args.steps, "batch_size": args.batch, "lr": args.lr, "warmup_steps": 0,
                             "eval_every": 10_000, "save_every": 10_000, "log_every": 10_000})
    start = time.perf_counter()
    run(cfg, root / "prefs", root / "base", root / "ours")
    total = time.perf_counter() - start
    m = json.loads((root / "ours" / "manifest.json").read_text())["metrics"]
    tokens = m["tokens"]
    return {"tokens": tokens, "seconds": tokens / m["tokens_per_s"], "tokens_per_s": m["tokens_per_s"],
            "stage_seconds": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--max-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pairs, tok = make_inputs(root, args.pairs)
        args.steps = len(pairs) // args.batch
        load_before = os.getloadavg()
        trl = run_trl(root, pairs, tok, args)
        ours = run_ours(root, args)
        load_after = os.getloadavg()
    ours_e2e = ours["tokens"] / ours["stage_seconds"]
    result = {
        "pairs": len(pairs), "batch": args.batch, "threads": args.threads, "steps": args.steps,
        "trl_dpo": trl, "llmcycle_dpo": ours,
        "speedup_train": ours["tokens_per_s"] / trl["tokens_per_s"],
        "speedup_end_to_end": ours_e2e / (trl["tokens"] / trl["stage_seconds"]),
        "loadavg_before": load_before, "loadavg_after": load_after,
        "python": sys.version.split()[0], "machine": platform.machine(),
    }
    print(f"| DPO, LoRA r={args.r}, default preset, {len(pairs)} pairs x1 epoch | tokens/s | seconds |")
    print("|---|---|---|")
    print(f"| TRL DPOTrainer + PEFT (reference on the fly), training | {trl['tokens_per_s']:.0f} | {trl['seconds']:.1f} |")
    print(f"| TRL, with model load and dataset preparation | {trl['tokens'] / trl['stage_seconds']:.0f} | "
          f"{trl['stage_seconds']:.1f} |")
    print(f"| llmcycle align (training) | {ours['tokens_per_s']:.0f} | {ours['seconds']:.1f} |")
    print(f"| llmcycle align, whole stage (load, reference pass, margins, save) | {ours_e2e:.0f} | "
          f"{ours['stage_seconds']:.1f} |")
    print(f"speedup: {result['speedup_train']:.2f}x training, {result['speedup_end_to_end']:.2f}x whole stage; "
          f"load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "align_bench.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
