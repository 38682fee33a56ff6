"""The dataset card: card.json for machines, card.md for people, card_lengths.png for a glance at lengths.

Everything in it is a function of the inputs and the config (no timings), so same seed means identical cards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcycle.artifacts import atomic_write_json, atomic_write_text
from llmcycle.data.example import Example, SourceData, StepReport

HISTOGRAM = "card_lengths.png"


def record_words(example: Example) -> int:
    return sum(len(text.split()) for text in example.contents())


def percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def split_stats(examples: list[Example]) -> dict[str, Any]:
    words = sorted(record_words(e) for e in examples)
    stats: dict[str, Any] = {
        "records": len(examples),
        "groups": len({e.group for e in examples}),
        "chars": sum(len(text) for e in examples for text in e.contents()),
        "words": sum(words),
        "words_per_record": {"mean": round(sum(words) / len(words), 1) if words else 0.0,
                             "p50": percentile(words, 0.5), "p95": percentile(words, 0.95),
                             "max": words[-1] if words else 0},
    }
    if examples and examples[0].is_chat:
        roles = [m["role"] for e in examples for m in e.record["messages"]]
        stats["turns"] = sum(1 for r in roles if r != "system")
        stats["user_turns"] = roles.count("user")
        stats["assistant_turns"] = roles.count("assistant")
        stats["system_messages"] = roles.count("system")
    return stats


def build_card(
    source: str, cfg_dict: dict[str, Any], data: SourceData, reports: list[StepReport],
    splits: dict[str, list[Example]], leaked: list[str], contamination: dict[str, Any] | None = None,
) -> dict[str, Any]:
    card = {
        "source": {"name": source, "path": cfg_dict.get("path"), "record_kind": data.kind, "files": data.files,
                   **data.stats},
        "records_read": len(data.examples),
        "records_written": sum(len(v) for v in splits.values()),
        "filters": [r.as_dict() for r in reports],
        "splits": {name: split_stats(examples) for name, examples in splits.items()},
        "leakage": {"groups_in_several_splits": len(leaked), "near_dedup": cfg_dict.get("near_dedup")},
        "config": cfg_dict,
        "histogram": HISTOGRAM,
    }
    if contamination is not None:
        card["contamination"] = contamination
    return card


def card_markdown(card: dict[str, Any]) -> str:
    src = card["source"]
    lines = [
        f"# Dataset card: {src['name']}",
        "",
        f"{card['records_read']} {src['record_kind']} records read from `{src['path'] or src['name']}`, "
        f"{card['records_written']} written. Seed {card['config']['seed']}; splits are grouped so no group "
        f"is in two of them ({card['leakage']['groups_in_several_splits']} found).",
        "",
    ]
    if src.get("skipped"):
        reasons = "; ".join(f"{n} x {why}" for why, n in src.get("skipped_reasons", {}).items())
        lines += [f"{src['skipped']} source rows skipped (they cannot be training records): {reasons}.", ""]
    lines += [
        "| split | records | groups | words | chars | words/record p50 | p95 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in card["splits"].items():
        w = s["words_per_record"]
        cells = [name, s["records"], s["groups"], s["words"], s["chars"], w["p50"], w["p95"]]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "| step | on | removed | changed |", "|---|---|---:|---:|"]
    for f in card["filters"]:
        lines.append(f"| {f['step']} | {'yes' if f['enabled'] else 'no'} | {f['removed']} | {f['changed']} |")
    lines += contamination_markdown(card.get("contamination"))
    lines += ["", f"![words per record]({card['histogram']})", ""]
    return "\n".join(lines)


def contamination_markdown(section: dict[str, Any] | None) -> list[str]:
    """Eval items found in the train split, per eval set (only the sets with any, and the totals)."""
    if not section:
        return []
    lines = ["", f"Contamination: {section['train_records_flagged']} of {section['train_records_checked']} train "
             f"records hold an eval item ({section['train_records_dropped']} dropped; mode {section['mode']}).", ""]
    found = {k: v for k, v in section["eval_sets"].items() if v["contaminated_items"]}
    if found:
        lines += ["| eval set | items | contaminated items | train records |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v['items']} | {v['contaminated_items']} | {v['train_records']} |" for k, v in found.items()]
    checked = ", ".join(section["eval_sets"])
    lines.append(f"Checked against: {checked}." + (f" Skipped: {'; '.join(section['benchmarks_skipped'])}."
                                                   if section["benchmarks_skipped"] else ""))
    return lines


def write_card(root: Path, card: dict[str, Any], splits: dict[str, list[Example]]) -> None:
    from llmcycle.plots import histograms

    lengths = {name: [record_words(e) for e in examples] for name, examples in splits.items()}
    cap = max(1, percentile(sorted(w for ws in lengths.values() for w in ws), 0.99))  # a few huge records
    groups = {name: [min(w, cap) for w in ws] for name, ws in lengths.items()}  # would squash the picture
    edges = [cap * i / 40 for i in range(41)]  # shared bins, so the splits compare
    histograms(root / HISTOGRAM, groups, "Record length per split (clipped at p99)", "words per record", bins=edges)
    atomic_write_json(root / "card.json", card)
    atomic_write_text(root / "card.md", card_markdown(card))
