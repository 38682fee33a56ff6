"""How long `llmcycle eval` takes with default settings on the default CPU model (preset `default`, random weights:
decoding speed does not depend on training) and ~1,000 chitchat test conversations, for one model and for a
model compared with a second one. Prints a table and writes bench/results/eval_speed.json.

    python bench/eval_speed.py [--repeat 2] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LLMCYCLE_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def chitchat_records(limit: int) -> list[dict]:
    """Chat records straight from the chitchat-dataset package: senders alternate, the first one is the user."""
    import chitchat_dataset

    raw = json.loads(Path(chitchat_dataset.__file__).with_name("dataset.json").read_text())
    records = []
    for convo in raw.values():
        turns: list[list] = []
        for group in convo["messages"]:
            for msg in group:
                if not msg["text"].strip():
                    continue
                if turns and turns[-1][0] == msg["sender"]:
                    turns[-1][1] += " " + msg["text"].strip()
                else:
                    turns.append([msg["sender"], msg["text"].strip()])
        messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": text}
                    for i, (_, text) in enumerate(turns)]
        if len(messages) >= 2:
            records.append({"messages": messages})
        if len(records) >= limit:
            break
    return records


def prepare(root: Path) -> tuple[Path, Path, Path]:
    from llmcycle.models import build_model
    from llmcycle.records import write_jsonl
    from llmcycle.loading import load_tokenizer
    from llmcycle.tokenizer import TokenizerConfig
    from llmcycle.tokenizer import run as train_tokenizer

    records = chitchat_records(4000)
    data = root / "data"
    write_jsonl(data / "train.jsonl", records[:3000])
    write_jsonl(data / "val.jsonl", records[3000:3000 + 1])
    write_jsonl(data / "test.jsonl", records[3000:4000])
    train_tokenizer(TokenizerConfig(vocab_size=8192), data, root / "tok")
    tok = load_tokenizer(root / "tok")
    dirs = []
    for seed in (0, 1):
        out = root / f"model{seed}"
        build_model("default", tok, seed=seed).save_pretrained(out)
        tok.save_pretrained(out)
        dirs.append(out)
    return data, dirs[0], dirs[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from llmcycle.evaluate import EvalConfig, run

    root = Path(tempfile.mkdtemp(prefix="eval_speed_"))
    try:
        data, model, other = prepare(root)
        rows = []
        for label, compare in (("one model", []), ("model + compare", [str(other)])):
            for i in range(args.repeat):
                load = os.getloadavg()[0]
                start = time.perf_counter()
                run(EvalConfig(), model, data, root / f"eval-{len(rows)}", compare=compare)
                rows.append({"case": label, "seconds": round(time.perf_counter() - start, 2),
                             "load_before": round(load, 2), "threads": torch.get_num_threads()})
                timings = json.loads((root / f"eval-{len(rows) - 1}" / "manifest.json").read_text())["timings"]
                rows[-1]["per_probe_s"] = timings
        print(f"{'case':<18}{'seconds':>9}{'load':>7}  per probe (s)")
        for row in rows:
            print(f"{row['case']:<18}{row['seconds']:>9}{row['load_before']:>7}  {row['per_probe_s']}")
        result = {"model_preset": "default", "test_conversations": 1000, "config": EvalConfig().model_dump(),
                  "cpu_count": os.cpu_count(), "rows": rows}
        out = Path(__file__).parent / "results" / "eval_speed.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
