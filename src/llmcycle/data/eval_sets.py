"""The eval sets a training split will meet, as plain texts for the contamination check.

- every benchmark `llmcycle.evaluate.bench` loads from the installed data packages (questions with their gold answer,
  the few-shot pools too: a model that saw a shot's answer has seen the benchmark);
- the shipped probe prompts (safety prompts, both sides of every bias pair);
- a data dir's test split (each conversation as one text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from llmcycle.errors import UserError
from llmcycle.records import load_split


@dataclass
class EvalSet:
    """A named set of eval texts: (item id, text), and the question alone where it is worth an exact check."""

    name: str
    items: list[tuple[str, str]]
    questions: dict[str, str] = field(default_factory=dict)
    documents: bool = False  # whole conversations: copied only when most of one is (one shared 13-gram is a
    # shared task prompt, such as chitchat's "one thing my best friend doesn't know about me is")


def record_texts(record: dict[str, Any]) -> list[str]:
    """Every text a training or test record holds: message contents (a preference record's prompt, chosen,
    rejected and completion) or its plain text."""
    if isinstance(record.get("text"), str):
        return [record["text"]]
    texts = []
    for key in ("messages", "prompt", "chosen", "rejected", "completion"):
        value = record.get(key)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts.extend(str(m.get("content", "")) for m in value if isinstance(m, dict))
    return texts


def answer_of(item: Any) -> str:
    """The gold answer's text of a benchmark item (a choice, a reference string, or the first of several)."""
    gold = item.gold
    if item.choices and isinstance(gold, int) and 0 <= gold < len(item.choices):
        return item.choices[gold]
    if isinstance(gold, list):
        return str(gold[0]) if gold else ""
    return "" if gold is None else str(gold)


def benchmark_set(name: str, root: str | Path | None = None) -> EvalSet:
    """One benchmark's items (scored and few-shot) read through its llmcycle loader."""
    from llmcycle.evaluate.bench import task_specs  # lazy: the benchmark package pulls in torch

    split = task_specs()[name].loader(root=root)
    items, questions = [], {}
    for item in list(split.test) + list(split.fewshot):
        context = item.context or " ".join(item.choices)
        items.append((str(item.id), f"{context} {answer_of(item)}".strip()))
        if item.context:
            questions[str(item.id)] = item.context
    return EvalSet(name, items, questions)


def benchmark_sets(names: Sequence[str] | None = None, root: str | Path | None = None
                   ) -> tuple[list[EvalSet], list[str]]:
    """The benchmarks whose data is installed (all of them unless `names`), and a note for each one skipped."""
    from llmcycle.evaluate.bench import TASK_NAMES, check_names  # lazy: pulls in torch

    if names is not None:
        check_names(list(names))
    sets, skipped = [], []
    for name in names if names is not None else TASK_NAMES:
        try:
            sets.append(benchmark_set(name, root))
        except UserError as exc:
            skipped.append(f"{name}: {exc}")
    return sets, skipped


def probe_sets() -> list[EvalSet]:
    """The shipped safety prompts and bias pairs, which the eval stage puts to every model."""
    # lazy: the evaluate package pulls in torch; checking records alone stays light
    from llmcycle.evaluate.bias import load_pairs
    from llmcycle.evaluate.safety import load_prompts

    safety = [(str(p.get("id", i)), p["prompt"]) for i, p in enumerate(load_prompts())]
    bias = [(f"{p.get('id', i)}/{side}", p[side]) for i, p in enumerate(load_pairs()) for side in ("a", "b")]
    return [EvalSet("safety_prompts", safety, dict(safety)), EvalSet("bias_pairs", bias, dict(bias))]


def records_set(name: str, records: Iterable[dict[str, Any]]) -> EvalSet:
    """Records (a test split) as eval texts: each conversation joined, so only a copied conversation matches,
    not a greeting that many conversations share."""
    return EvalSet(name, [(str(i), "\n".join(record_texts(r))) for i, r in enumerate(records)], documents=True)


def test_split_set(data_dir: str | Path) -> EvalSet | None:
    """The data dir's test split, or None when it has none."""
    if not (Path(data_dir) / "test.jsonl").is_file():
        return None
    return records_set("test_split", load_split(data_dir, "test"))
