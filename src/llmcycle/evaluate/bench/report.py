"""The benchmark section of an eval dir's report.md: one row per benchmark metric, one column per model, and a
bar chart of each benchmark's headline number."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from llmcycle.artifacts import atomic_write_text
from llmcycle.evaluate.report import Metrics, fmt
from llmcycle.evaluate.bench import TASK_NAMES
from llmcycle.plots import bar_chart

HEADLINE = {"gsm8k": "gsm8k_exact_match", "humaneval": "humaneval_pass@1", "xsum": "xsum_rougeL",
            "truthfulqa": "truthfulqa_rougeL", "realtoxicity": "realtoxicity_toxic_rate",
            "crows_pairs": "crows_pairs_pct_stereotype", "stereoset": "stereoset_ss", "bbq": "bbq_acc"}
SCALE = {"stereoset_ss": 0.01}  # 0-100 scores drawn on the same 0-1 axis as the rest


def headline(task: str) -> str:
    return HEADLINE.get(task, f"{task}_acc")


def bench_table(metrics: Metrics, tasks: Sequence[str]) -> str:
    names = list(metrics)
    lines = ["| benchmark metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for task in tasks:
        keys = sorted({k for m in metrics.values() for k in m if k.startswith(task + "_") and not k.endswith("_n")})
        for key in keys:
            lines.append(f"| {key} | " + " | ".join(fmt(metrics[n].get(key)) for n in names) + " |")
    count = {t: next((m.get(f"{t}_n") for m in metrics.values() if f"{t}_n" in m), None) for t in tasks}
    lines.append("")
    lines.append("Questions scored: " + ", ".join(f"{t} {int(c)}" for t, c in count.items() if c is not None))
    return "\n".join(lines)


def write_bench_section(out: Path, metrics: Mapping[str, Mapping[str, float]], tasks: Sequence[str]) -> list[str]:
    """Append the table to report.md and draw bench.png; returns the chart names."""
    tasks = [t for t in tasks if t in TASK_NAMES]
    groups = {name: {headline(t): (values.get(headline(t)) or 0.0) * SCALE.get(headline(t), 1.0) for t in tasks}
              for name, values in metrics.items()}
    bar_chart(out / "bench.png", groups, "Benchmarks (headline metric; stereoset_ss / 100)", "score")
    report = out / "report.md"
    text = report.read_text(encoding="utf-8") if report.is_file() else ""
    text += "\n## Benchmarks\n\n" + bench_table(metrics, tasks) + "\n\n![benchmarks](bench.png)\n"
    atomic_write_text(report, text)
    return ["bench.png"]
