"""The data stage: read a source, clean and filter it step by step, split it by group, write the artifact dir.

All work happens in memory before the artifact dir is opened, so a bad input never leaves anything in --out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from llmcycle.artifacts import open_artifact
from llmcycle.config import to_dict
from llmcycle.data import clean, dedup, pii, toxicity
from llmcycle.data.config import DataConfig
from llmcycle.data.example import Example, SourceData, StepReport
from llmcycle.data.sources import read_source, source_inputs
from llmcycle.data.split import leaked_groups, split_examples
from llmcycle.errors import DataError
from llmcycle.progress import say
from llmcycle.records import write_jsonl
from llmcycle.data.augment import counterfactual

Step = Callable[[list[Example], DataConfig], tuple[list[Example], StepReport]]

CHAT_STEPS: list[tuple[str, Step]] = [
    ("normalize", clean.normalize),
    ("turn_length", clean.turn_length),
    ("conversation_length", clean.conversation_length),
    ("pii", pii.scrub_pii),
    ("toxicity", toxicity.filter_toxicity),
    ("exact_dedup", dedup.exact_dedup),
    ("near_dedup", dedup.near_dedup),
]
# preferences: no turn/length edits (they would change what was judged) and no near-dedup (replies to one prompt
# are near-duplicates by design; records of one prompt share a split group instead)
PREFERENCE_STEPS: list[tuple[str, Step]] = [
    ("normalize", clean.normalize),
    ("pii", pii.scrub_pii),
    ("toxicity", toxicity.filter_toxicity),
    ("exact_dedup", dedup.exact_dedup),
]
TEXT_STEPS: list[tuple[str, Step]] = [
    ("normalize", clean.normalize),
    ("text_length", clean.text_length),
    ("pii", pii.scrub_pii),
    ("toxicity", toxicity.filter_toxicity),
    ("exact_dedup", dedup.exact_dedup),
    ("near_dedup", dedup.near_dedup),
]


@dataclass
class Prepared:
    """Everything the artifact holds, computed before anything is written."""

    data: SourceData
    reports: list[StepReport]
    splits: dict[str, list[Example]]
    timings: dict[str, float] = field(default_factory=dict)
    contamination: dict | None = None


def step_enabled(cfg: DataConfig, name: str) -> bool:
    value = getattr(cfg, name)
    return value != "off" if isinstance(value, str) else bool(value)


def apply_steps(examples: list[Example], kind: str, cfg: DataConfig, timings: dict[str, float]):
    reports = []
    for name, step in {"chat": CHAT_STEPS, "preference": PREFERENCE_STEPS}.get(kind, TEXT_STEPS):
        if not step_enabled(cfg, name):
            reports.append(StepReport(name, False))
            continue
        start = time.perf_counter()
        examples, report = step(examples, cfg)
        timings[name] = round(time.perf_counter() - start, 3)
        reports.append(report)
        if report.removed:
            say(f"data: {name} removed {report.removed} records, {len(examples)} left")
    return examples, reports


def prepare(cfg: DataConfig) -> Prepared:
    """Read, clean, filter and split (no files written); DataError when nothing survives."""
    start = time.perf_counter()
    data = read_source(cfg)
    read_s = round(time.perf_counter() - start, 3)
    say(f"data: read {len(data.examples)} {data.kind} records from {cfg.path or cfg.source}")
    prepared = prepare_read(data, cfg, str(cfg.path or cfg.source))
    prepared.timings = {"read": read_s, **prepared.timings}
    return prepared


def prepare_read(data: SourceData, cfg: DataConfig, where: str) -> Prepared:
    """Clean, filter and split records already read (a corpus, or a teacher's conversations); nothing written."""
    timings: dict[str, float] = {}
    examples, reports = apply_steps(list(data.examples), data.kind, cfg, timings)
    if not examples:
        removed = ", ".join(f"{r.step} {r.removed}" for r in reports if r.removed)
        raise DataError(
            f"{where}: no records left after filtering {len(data.examples)} "
            f"(removed by {removed or 'nothing'}); loosen or switch off filters"
        )
    start = time.perf_counter()
    splits = split_examples(examples, cfg)
    timings["split"] = round(time.perf_counter() - start, 3)
    if cfg.counterfactual != "off":
        start = time.perf_counter()
        splits["train"], report = counterfactual(splits["train"], cfg.counterfactual, cfg.seed)
        timings["counterfactual"] = round(time.perf_counter() - start, 3)
        reports.append(report)
        say(f"data: counterfactual {cfg.counterfactual}: {report.details['swapped_records']} train records swapped")
    contamination = None
    if cfg.decontaminate != "off":
        # lazy: the shipped index loads the benchmark specs (torch); `llmcycle --help` imports this module
        from llmcycle.data.shipped_index import decontaminate_train

        start = time.perf_counter()
        splits, report, contamination = decontaminate_train(splits, cfg.decontaminate, cfg.decontaminate_benchmarks)
        timings["decontaminate"] = round(time.perf_counter() - start, 3)
        reports.append(report)
        if contamination["train_records_flagged"]:
            say(f"data: {contamination['train_records_flagged']} train records hold eval items"
                + (f", {report.removed} dropped" if report.removed else " (decontaminate: drop removes them)"))
    else:
        reports.append(StepReport("decontaminate", False))
    fractions = {"val": cfg.val_frac, "test": cfg.test_frac}
    for name in [n for n, frac in fractions.items() if frac > 0 and not splits[n]]:
        say(f"data: warning: the {name} split is empty ({len(examples)} records in too few groups to share out)")
    return Prepared(data, reports, splits, timings, contamination)


def run(cfg: DataConfig, out: str | Path) -> Path:
    """Build the data artifact dir `out` (train/val/test.jsonl, card.json, card.md, card_lengths.png, manifest)."""
    began = time.time()  # reading and filtering happen before the artifact dir opens; the manifest counts them
    inputs = source_inputs(cfg)
    prepared = prepare(cfg)
    return write_prepared(prepared, out, "data", to_dict(cfg), inputs, cfg.source, began)


def write_prepared(prepared: Prepared, out: str | Path, stage: str, config: dict, inputs: dict, source: str,
                   began: float) -> Path:
    """The data dir of `prepared`, written atomically as STAGE's artifact (the data stage, or synth)."""
    from llmcycle.data.card import build_card, write_card  # lazy: matplotlib; `llmcycle --help` imports this module

    with open_artifact(out, stage, config, inputs=inputs) as art:
        art.started = began
        start = time.perf_counter()
        for name, examples in prepared.splits.items():
            write_jsonl(art.dir / f"{name}.jsonl", (e.record for e in examples))
        prepared.timings["write"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        leaked = leaked_groups(prepared.splits)
        card = build_card(source, config, prepared.data, prepared.reports, prepared.splits, leaked,
                          prepared.contamination)
        write_card(art.dir, card, prepared.splits)
        prepared.timings["card"] = round(time.perf_counter() - start, 3)
        art.metrics = {f"{name}_records": len(ex) for name, ex in prepared.splits.items()}
        art.metrics["records_read"] = len(prepared.data.examples)
        art.extra["source_files"] = prepared.data.files  # sha256 of each corpus file read (a folder has many)
        art.extra["timings_s"] = prepared.timings
    counts = ", ".join(f"{name} {len(ex)}" for name, ex in prepared.splits.items())
    say(f"{stage}: wrote {out} ({counts})")
    return Path(out)
