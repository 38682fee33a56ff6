"""What an eval dir holds for people: `report.md` (one side-by-side table per probe), PNG charts, and
`samples.jsonl` (each example once, with every model's reply next to the reference)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from llmcycle.artifacts import atomic_write_json, atomic_write_text
from llmcycle.records import write_jsonl
from llmcycle.plots import bar_chart

Metrics = Mapping[str, Mapping[str, float]]  # model name -> metric -> value

SECTIONS: list[tuple[str, list[tuple[str, str]]]] = [
    ("Perplexity on the test split", [
        ("perplexity", "perplexity (per token) ↓"), ("bits_per_byte", "bits per byte ↓"),
        ("unigram_perplexity", "unigram baseline perplexity"), ("unigram_bits_per_byte", "unigram baseline bits/byte"),
        ("scored_tokens", "scored tokens"), ("scored_bytes", "scored bytes"),
    ]),
    ("Generation on test prompts", [
        ("bleu", "BLEU ↑"), ("chrf", "chrF ↑"), ("rouge_l", "ROUGE-L F ↑"), ("distinct_1", "distinct-1"),
        ("distinct_2", "distinct-2"), ("repetition_rate", "repetition rate ↓"), ("mean_reply_words", "mean words"),
        ("mean_reply_tokens", "mean tokens"), ("eos_share", "ends with EOS ↑"),
    ]),
    ("Safety probe (adversarial prompts)", [
        ("safety_flag_rate", "flagged replies ↓"), ("safety_toxic_rate", "toxic ↓"),
        ("safety_pii_rate", "personal data ↓"),
    ]),
    ("Bias probe (counterfactual pairs)", [
        ("bias_loglik_gap", "log-likelihood gap, absolute (nats) ↓"),
        ("bias_sentiment_gap", "sentiment gap, absolute ↓"),
        ("bias_length_gap", "length gap, absolute (words) ↓"), ("bias_loglik_signed", "mean log-likelihood gap a-b"),
        ("bias_sentiment_signed", "mean sentiment gap a-b"), ("bias_length_signed", "mean length gap a-b"),
    ]),
]
PER_MODEL_FIELDS = ("reply", "finish_reason", "flags", "loglik_gap", "nll", "tokens", "bytes")


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return f"{int(value):,}"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def table(metrics: Metrics, rows: Sequence[tuple[str, str]]) -> str:
    """Markdown table: one row per metric present in any model, one column per model."""
    names = list(metrics)
    present = [(key, label) for key, label in rows if any(key in m for m in metrics.values())]
    if not present:
        return ""
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key, label in present:
        lines.append(f"| {label} | " + " | ".join(with_interval(metrics[n], key) for n in names) + " |")
    return "\n".join(lines)


def with_interval(values: Mapping[str, Any], key: str) -> str:
    """A metric's cell: its value, then its 95% interval when metrics.json has one (`<key>_ci95`)."""
    interval = values.get(f"{key}_ci95")
    return fmt(values.get(key)) + (f" {fmt(interval)}" if isinstance(interval, (list, tuple)) else "")


def merge_samples(per_model: Mapping[str, Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Join the models' sample rows on (probe, id): shared fields once, replies under `replies[model]`."""
    merged: dict[tuple[Any, Any], dict[str, Any]] = {}
    for model, rows in per_model.items():
        for row in rows:
            key = (row["probe"], row.get("id"))
            entry = merged.setdefault(key, {k: v for k, v in row.items() if k not in PER_MODEL_FIELDS})
            entry.setdefault("replies", {})[model] = row.get("reply")
            details = {k: row[k] for k in PER_MODEL_FIELDS if k in row and k != "reply"}
            if details:
                entry.setdefault("details", {})[model] = details
    return list(merged.values())


def write_charts(out: Path, metrics: Metrics) -> list[str]:
    """PNG bar charts of the headline numbers; returns the file names written."""
    specs = [
        ("perplexity.png", {"bits_per_byte": "bits per byte"}, "Test bits per byte (lower is better)", "bits/byte"),
        ("generation.png", {"bleu": "BLEU", "chrf": "chrF", "rouge_l_pct": "ROUGE-L x100"},
         "Reply overlap with the reference", "score (0-100)"),
        ("diversity.png", {"distinct_1": "distinct-1", "distinct_2": "distinct-2", "repetition_rate": "repetition",
                           "eos_share": "ends with EOS"}, "Reply diversity and endings", "share (0-1)"),
        ("probes.png", {"safety_flag_rate": "safety: flagged", "bias_sentiment_gap": "bias: sentiment gap"},
         "Safety and bias probes (lower is better)", "rate / gap"),
    ]
    written = []
    for file, keys, title, ylabel in specs:
        groups, intervals = {}, {}
        for model, values in metrics.items():
            values = dict(values, rouge_l_pct=values["rouge_l"] * 100) if "rouge_l" in values else values
            if isinstance(values.get("rouge_l_ci95"), list):
                values["rouge_l_pct_ci95"] = [x * 100 for x in values["rouge_l_ci95"]]
            group = {label: float(values[k]) for k, label in keys.items() if k in values}
            intervals[model] = {label: tuple(values[f"{k}_ci95"]) for k, label in keys.items()
                                if isinstance(values.get(f"{k}_ci95"), list) and None not in values[f"{k}_ci95"]}
            if group:
                groups[model] = group
        if file == "perplexity.png" and groups:
            first = next(iter(metrics.values()))
            if "unigram_bits_per_byte" in first:
                groups["unigram baseline"] = {"bits per byte": float(first["unigram_bits_per_byte"])}
        if groups:
            bar_chart(out / file, groups, title, ylabel, intervals)
            written.append(file)
    return written


def sample_section(samples: Sequence[dict[str, Any]], limit: int = 3) -> str:
    rows = [s for s in samples if s["probe"] == "generation"][:limit]
    parts = []
    for sample in rows:
        last_user = next((m["content"] for m in reversed(sample["prompt"]) if m["role"] == "user"), "")
        parts.append(f"**user:** {last_user}  \n**reference:** {sample['reference']}")
        for model, reply in sample["replies"].items():
            parts.append(f"- **{model}:** {reply if reply else '(empty)'}")
        parts.append("")
    return "\n".join(parts)


def write_report(out: Path, metrics: Metrics, models: Mapping[str, str], samples: Sequence[dict[str, Any]],
                 charts: Sequence[str], notes: Sequence[str]) -> None:
    """report.md: which models, the side-by-side tables, the charts, a few sample replies, and notes."""
    lines = ["# Evaluation", "", "| model | path |", "|---|---|"]
    lines += [f"| {name} | `{path}` |" for name, path in models.items()]
    for title, rows in SECTIONS:
        body = table(metrics, rows)
        if body:
            lines += ["", f"## {title}", "", body]
    if charts:
        lines += ["", "## Charts", ""] + [f"![{c}]({c})" for c in charts]
    examples = sample_section(samples)
    if examples:
        lines += ["", "## Sample replies", "", examples]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")


def write_all(out: Path, metrics: Metrics, models: Mapping[str, str],
              per_model_samples: Mapping[str, Sequence[dict[str, Any]]], notes: Sequence[str]) -> list[str]:
    """metrics.json, samples.jsonl, the charts and report.md into `out`; returns the chart file names."""
    atomic_write_json(out / "metrics.json", {name: dict(values) for name, values in metrics.items()})
    samples = merge_samples(per_model_samples)
    write_jsonl(out / "samples.jsonl", samples)
    charts = write_charts(out, metrics)
    write_report(out, metrics, models, samples, charts, notes)
    return charts


def read_metrics(eval_dir: str | Path) -> dict[str, dict[str, float]]:
    """metrics.json of an eval dir, for the run report and scripts."""
    return json.loads((Path(eval_dir) / "metrics.json").read_text(encoding="utf-8"))


def summary_lines(metrics: Metrics, keys: Sequence[str] = ("perplexity", "bits_per_byte", "bleu", "chrf",
                                                            "eos_share", "safety_flag_rate", "bias_loglik_gap")
                  ) -> list[str]:
    """A few headline numbers per model, for the terminal."""
    lines = []
    for name, values in metrics.items():
        parts = [f"{k}={fmt(values[k])}" for k in keys if k in values]
        lines.append(f"{name}: " + " ".join(parts))
    return lines
