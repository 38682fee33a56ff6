"""How often a judge agrees with people: its verdicts on held-out human preference pairs, with a 95% interval.

Human pairs come from a data dir's rated chats (chitchat's witty/upbeat/interesting ratings, paired as the reward
stage pairs them: two conversations whose mean ratings differ by at least `min_rating_gap`), from its paired
preference records, or from the server's feedback store (pairwise choices). Which side is shown first is a seeded
coin per pair, so a judge that always answers "A" agrees half the time. Agreement counts a tie as half.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from llmcycle.artifacts import atomic_write_json
from llmcycle.errors import DataError
from llmcycle.evaluate.judges import Judge, Pair, load_judge
from llmcycle.evaluate.stats import sign_test, win_rate_interval


@dataclass(frozen=True)
class HumanPairsConfig:
    """Which human pairs: a data dir split (rated chats or preference records) and/or a feedback database."""

    data_dir: str | None = None
    split: str = "val"  # the reward stage trains on "train": val and test are held out from it
    record_offset: int = 0
    record_stride: int = 1
    min_rating_gap: float = 1.0
    pairs_per_record: int = 1
    feedback_db: str | None = None
    limit: int | None = None
    seed: int = 0


def balanced(chosen_rejected: Sequence[tuple[list, list]], seed: int) -> list[Pair]:
    """Pairs with the human-preferred side placed first or second by a seeded coin, labelled accordingly."""
    rng = random.Random(seed)
    out = []
    for chosen, rejected in chosen_rejected:
        out.append(Pair(chosen, rejected, "A") if rng.random() < 0.5 else Pair(rejected, chosen, "B"))
    return out


def data_dir_pairs(cfg: HumanPairsConfig) -> list[tuple[list, list]]:
    """(chosen, rejected) conversations of a data dir split, built as the reward stage builds them."""
    from llmcycle.train.reward import RewardConfig, split_pairs

    reward_cfg = RewardConfig(min_rating_gap=cfg.min_rating_gap, pairs_per_record=cfg.pairs_per_record,
                              record_offset=cfg.record_offset, record_stride=cfg.record_stride, seed=cfg.seed)
    return split_pairs(cfg.data_dir, cfg.split, reward_cfg, None)


def feedback_pairs(db: str | Path) -> list[tuple[list, list]]:
    """(prompt + chosen, prompt + rejected) of the feedback store's pairwise choices."""
    from llmcycle.data.sources.feedback import feedback_records

    records = [r for r in feedback_records(Path(db)) if "chosen" in r]
    if not records:
        raise DataError(f"{db}: the feedback database holds no pairwise choices (thumbs alone make no pairs)")
    return [(r["prompt"] + r["chosen"], r["prompt"] + r["rejected"]) for r in records]


def human_pairs(cfg: HumanPairsConfig) -> list[Pair]:
    """The labelled pairs `cfg` names, balanced; a DataError (one line) when there are none."""
    raw: list[tuple[list, list]] = []
    if cfg.data_dir is None and cfg.feedback_db is None:
        raise DataError("judge check: no human labels (give a data dir with rated chats or preference pairs, "
                        "or a feedback database)")
    if cfg.data_dir is not None:
        raw += data_dir_pairs(cfg)
    if cfg.feedback_db is not None:
        raw += feedback_pairs(cfg.feedback_db)
    if cfg.limit is not None:
        raw = random.Random(cfg.seed).sample(raw, min(cfg.limit, len(raw)))
    return balanced(raw, cfg.seed)


def judge_check(judge: Judge, pairs: Sequence[Pair]) -> dict[str, Any]:
    """Agreement of `judge` with the pairs' human labels: {agreement, ci95, n, ties, ...}."""
    labelled = [p for p in pairs if p.label in ("A", "B")]
    if not labelled:
        raise DataError("judge check: none of the pairs carries a human label")
    verdicts = judge.compare(labelled)
    agree = sum(v == p.label for v, p in zip(verdicts, labelled))
    ties = sum(v == "tie" for v in verdicts)
    disagree = len(labelled) - agree - ties
    interval = win_rate_interval(agree, ties, disagree)
    return {"judge": getattr(judge, "name", type(judge).__name__), "agreement": interval.value,
            "ci95": interval.ci95, "n": len(labelled), "ties": ties, "agree": agree, "disagree": disagree,
            "decided_accuracy": agree / (agree + disagree) if agree + disagree else None,
            "sign_test_p": sign_test(agree, disagree), "first_shown_preferred": sum(v == "A" for v in verdicts)}


def run_check(judge_spec: str, cfg: HumanPairsConfig, out: str | Path | None = None) -> dict[str, Any]:
    """`llmcycle judge-check`: the human pairs first (a missing label source fails before any model loads), then
    the judge, then its agreement (written to OUT as JSON when given)."""
    pairs = human_pairs(cfg)
    if not pairs:
        raise DataError(f"judge check: {cfg.data_dir or cfg.feedback_db} yields no human preference pairs "
                        f"(rated chats whose ratings differ by at least {cfg.min_rating_gap}, or pairwise records)")
    result = {**judge_check(load_judge(judge_spec), pairs), "pairs_from": {"data_dir": cfg.data_dir,
              "split": cfg.split, "feedback_db": cfg.feedback_db}}
    if out is not None:
        atomic_write_json(Path(out), result)
    return result
