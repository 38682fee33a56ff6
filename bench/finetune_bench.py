"""LoRA SFT throughput: llmcycle finetune vs a plain TRL SFTTrainer + PEFT setup, same model, data and settings.

Both train one epoch over the same chat records (chitchat conversations cut into 4-turn pieces that fit
`--seq-len`, so neither side truncates), with assistant-only loss, the same LoRA (r, alpha, targets), batch size
(rows) and learning rate, on the `default` model preset (or `--model`), with the same thread count. Throughput is conversation
tokens (no padding) per second of training. TRL runs like-for-like (fp32, no gradient checkpointing: its defaults
turn on bf16 autocast and gradient checkpointing, which only slow a CPU down; `--trl-defaults` times that too), then
llmcycle (padding-free packing, logits only where a token is trained).

    python bench/finetune_bench.py [--records 400] [--seq-len 512] [--batch 8] [--threads 2] [--repeats 2]
    python bench/finetune_bench.py --model smollm2-135m-instruct   # a real pretrained base (49,152-token vocab)

Prints a table and writes bench/results/finetune_bench.json. GPU-only parts (QLoRA peak memory) are not measured
here: there is no GPU on this machine.
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


def make_inputs(root: Path, n_records: int, seq_len: int, model: str | None = None):
    """Chitchat -> data dir, 4-turn records that fit seq_len, and a base: a random `default` one with our tokenizer,
    or `model` (a dir, a .gguf, or a named GGUF base such as smollm2-135m-instruct)."""
    from llmcycle.data.config import DataConfig
    from llmcycle.data.stage import run as data_run
    from llmcycle.models import build_model
    from llmcycle.records import load_split, write_jsonl
    from llmcycle.loading import load_tokenizer
    from llmcycle.tokenizer import TokenizerConfig, run as tok_run

    data_run(DataConfig(limit=max(400, n_records)), root / "raw")
    if model is not None:
        tok = pretrained_base(model, root / "base")
    else:
        tok_run(TokenizerConfig(vocab_size=8192), root / "raw", root / "tok")
        tok = load_tokenizer(root / "tok")
    records = []
    for rec in load_split(root / "raw", "train"):
        msgs = rec["messages"]
        for start in range(0, len(msgs) - 1, 4):
            piece = msgs[start:start + 4]
            if piece[0]["role"] != "user" or not any(m["role"] == "assistant" for m in piece):
                continue
            if len(tok.apply_chat_template(piece, tokenize=True, return_dict=True)["input_ids"]) <= seq_len:
                records.append({"messages": piece})
    records = records[:n_records]
    write_jsonl(root / "sft" / "train.jsonl", records)
    if model is None:
        build_model("default", tok, seed=0).save_pretrained(root / "base")
        tok.save_pretrained(root / "base")
    return records, tok


def pretrained_base(model: str, out: Path):
    """A copy of a pretrained model in `out`, in float32, with our ChatML template (without a BOS), which marks
    assistant turns and renders earlier turns the same whatever follows (TRL's assistant-only loss needs both), so
    both contenders train on the same tokens. Returns its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmcycle.loading import resolve
    from llmcycle.modeldir.chat import CHAT_TEMPLATE, IM_END, IM_START

    src = resolve(model)
    tok = AutoTokenizer.from_pretrained(src)
    if not {IM_START, IM_END} <= set(tok.get_vocab()):
        raise SystemExit(f"{model}: its vocabulary has no ChatML tokens for the benchmark's chat template")
    tok.chat_template = CHAT_TEMPLATE.removeprefix("{{ bos_token }}")
    AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).save_pretrained(out)
    tok.save_pretrained(out)
    return tok


def run_trl(root: Path, records, tok, args, like_for_like: bool) -> dict:
    """TRL as it comes (its defaults: bf16 autocast, gradient checkpointing), or like-for-like with llmcycle's
    settings (fp32, no gradient checkpointing), which is the fair comparison."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(root / "base", dtype=torch.float32)
    config = SFTConfig(
        output_dir=str(root / "trl"), max_length=args.seq_len, per_device_train_batch_size=args.batch,
        num_train_epochs=1, learning_rate=args.lr, lr_scheduler_type="cosine", warmup_steps=5,
        assistant_only_loss=True, logging_steps=10, save_strategy="no", report_to="none", use_cpu=True,
        seed=0, dataloader_num_workers=0, disable_tqdm=True,
        **({"gradient_checkpointing": False, "bf16": False} if like_for_like else {}),
    )
    peft_config = LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.05, target_modules=TARGETS,
                             task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(records), processing_class=tok,
                         peft_config=peft_config)
    tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    start = time.perf_counter()
    out = trainer.train()
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "steps": out.global_step, "train_loss": out.training_loss, "threads": torch.get_num_threads()}


def run_ours(root: Path, records, tok, args, packing: bool = True) -> dict:
    from llmcycle.train.finetune import FinetuneConfig, run
    from llmcycle.train.batches.sft import count_batches
    from llmcycle.train.sft_data import build_examples

    examples, _ = build_examples(tok, root / "sft", "train", args.seq_len)
    steps = count_batches(examples, args.batch, args.seq_len, packing=packing)
    cfg = FinetuneConfig.model_validate({
        "method": "lora", "max_seq_len": args.seq_len, "packing": packing, "val_split": None,
        "lora": {"r": args.r, "alpha": 2 * args.r, "dropout": 0.05, "target_modules": TARGETS},
        "train": {"max_steps": steps, "batch_size": args.batch, "lr": args.lr, "warmup_steps": 5,
                  "eval_every": 10**6, "save_every": 10**6, "log_every": 10},
    })
    out = run(cfg, root / "sft", root / "base", root / f"ours-{packing}")
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    tokens = sum(len(e) for e in examples)
    return {"tokens": tokens, "seconds": metrics["seconds"], "tokens_per_s": tokens / metrics["seconds"],
            "steps": metrics["steps"], "train_loss": metrics["train_loss"]}


def combined(runs: list[dict]) -> dict:
    """One side's runs as one row: tokens per second over all of them, each run's figure kept."""
    row = dict(runs[-1])
    row["seconds"] = sum(r["seconds"] for r in runs)
    row["tokens"] = sum(r["tokens"] for r in runs)
    row["tokens_per_s"] = row["tokens"] / row["seconds"]
    row["runs_tokens_per_s"] = [round(r["tokens_per_s"], 2) for r in runs]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None,
                        help="A pretrained base (dir, .gguf, or e.g. smollm2-135m-instruct) instead of a random "
                             "`default` model with our tokenizer.")
    parser.add_argument("--out", type=Path, default=None, help="Result file (default: results/finetune_bench.json, "
                        "or finetune_bench_<model>.json with --model).")
    parser.add_argument("--repeats", type=int, default=2, help="Runs of each side, in ABBA order (TRL, ours, ours, "
                        "TRL, ...): the first run in a process is slower, whichever side it is.")
    parser.add_argument("--trl-defaults", action="store_true",
                        help="Also time TRL's own defaults (bf16 autocast, gradient checkpointing: slow on CPU).")
    args = parser.parse_args()
    import warnings

    import datasets
    import torch
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="finetune_bench_") as tmp:
        root = Path(tmp)
        records, tok = make_inputs(root, args.records, args.seq_len, args.model)
        load_before = os.getloadavg()[0]
        trl_runs, our_runs = [], []
        for i in range(args.repeats):  # ABBA: a drift of the machine's speed, or a first run's warm-up, cancels
            pair = [lambda: trl_runs.append(run_trl(root, records, tok, args, like_for_like=True)),
                    lambda: our_runs.append(run_ours(root, records, tok, args))]
            for run_one in (pair if i % 2 == 0 else pair[::-1]):
                run_one()
        trl_plain, ours = combined(trl_runs), combined(our_runs)
        unpacked = run_ours(root, records, tok, args, packing=False)  # where the speed comes from
        trl = run_trl(root, records, tok, args, like_for_like=False) if args.trl_defaults else None
        load_after = os.getloadavg()[0]
    speedup = ours["tokens_per_s"] / trl_plain["tokens_per_s"]
    speedup_defaults = ours["tokens_per_s"] / trl["tokens_per_s"] if trl else None
    result = {
        "benchmark": "finetune_lora_sft_tokens_per_s", "records": len(records), "settings": vars(args),
        "trl_sfttrainer_peft_fp32": trl_plain, "trl_sfttrainer_peft_defaults": trl, "llmcycle": ours,
        "llmcycle_no_packing": unpacked, "speedup": speedup, "speedup_vs_trl_defaults": speedup_defaults,
        "load_avg_1m": [load_before, load_after], "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
        "torch": torch.__version__, "machine": platform.machine(),
        "qlora_peak_memory": "not measured: no CUDA GPU on this machine",
    }
    print(f"{'setup':<26}{'tokens':>9}{'steps':>7}{'seconds':>10}{'tokens/s':>11}{'train loss':>12}")
    rows = [("TRL SFTTrainer+PEFT fp32", trl_plain), ("llmcycle finetune", ours),
            ("  llmcycle, no packing", unpacked)]
    if trl:
        rows.append(("TRL defaults (bf16, ckpt)", trl))
    for name, row in rows:
        print(f"{name:<26}{row['tokens']:>9}{row['steps']:>7}{row['seconds']:>10.1f}{row['tokens_per_s']:>11.0f}"
              f"{row['train_loss']:>12.3f}")
    print(f"runs (tokens/s, ABBA order): TRL {trl_plain['runs_tokens_per_s']}, llmcycle {ours['runs_tokens_per_s']}")
    versus_defaults = f", {speedup_defaults:.2f}x vs TRL defaults" if trl else ""
    print(f"speedup {speedup:.2f}x vs TRL like-for-like{versus_defaults} "
          f"(load avg {load_before:.1f} -> {load_after:.1f}, {args.threads} threads)")
    out = args.out or RESULTS / (f"finetune_bench_{Path(args.model).stem}.json" if args.model else "finetune_bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
