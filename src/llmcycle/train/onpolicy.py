"""On-policy preference pairs: the model answers each prompt `samples` times (sampled through our engine), a reward
model scores the replies, and the best becomes `chosen`, the worst `rejected` (best-of-n against worst-of-n, as
iterative DPO recipes pair a policy's own samples). A pair whose reward gap is within `min_gap` is dropped: the
ranker cannot tell those replies apart, and DPO would learn its noise. The result is an ordinary preference data dir
(train/val/test.jsonl in TRL's paired format), so `align` trains on it like on any other preference data.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from llmcycle.artifacts import open_artifact
from llmcycle.config import StageConfig, to_dict
from llmcycle.errors import DataError
from llmcycle.infer.decoding import knob
from llmcycle.infer.engine import Engine
from llmcycle.infer.settings import GenerationSettings
from llmcycle.progress import say
from llmcycle.records import write_jsonl
from llmcycle.train.batches.prompts import prompts_of
from llmcycle.train.reward import RewardModel


class OnPolicyConfig(StageConfig):
    prompts: int = Field(64, ge=1, description="Train prompts answered (`samples` times each).")
    val_prompts: int = Field(16, ge=0)
    samples: int = Field(2, ge=2, description="Replies sampled per prompt; the pair is the best against the worst.")
    max_new_tokens: int = knob("max_new_tokens", 32)
    temperature: float = knob("temperature", 1.0)
    top_p: float = knob("top_p", 0.95)
    min_gap: float = Field(0.0, ge=0, description="Least reward gap that keeps a pair.")
    batch_size: int = Field(32, ge=1)
    seed: int = knob("seed", 0)


def ranked_pairs(engine, judge, prompts: list[list[dict]], cfg: OnPolicyConfig, seed: int) -> list[dict]:
    """One pair per prompt: its best-scored reply against its worst, kept when their reward gap exceeds `min_gap`."""
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                  do_sample=True, seed=seed)
    n = cfg.samples
    convs = [p for p in prompts for _ in range(n)]
    replies = [c.text.strip() for c in engine.chat(convs, settings, batch_size=cfg.batch_size)]
    scores = judge.score([c + [{"role": "assistant", "content": r or "."}] for c, r in zip(convs, replies)])
    records = []
    for i, prompt in enumerate(prompts):
        scored = [(s, r) for r, s in zip(replies[i * n:(i + 1) * n], scores[i * n:(i + 1) * n]) if r]
        if len({r for _, r in scored}) < 2:
            continue
        (best, chosen), (worst, rejected) = max(scored), min(scored)
        if best - worst <= cfg.min_gap:
            continue
        records.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                        "rejected": [{"role": "assistant", "content": rejected}],
                        "meta": {"source": "onpolicy", "reward_gap": best - worst}})
    return records


def run(cfg: OnPolicyConfig, model: str | Path, reward_model: str | Path, data_dir: str | Path,
        out: str | Path) -> Path:
    """MODEL answers DATA_DIR's prompts, REWARD_MODEL ranks the replies -> OUT (a preference data dir)."""
    engine, judge = Engine.load(model), RewardModel(reward_model)
    train = ranked_pairs(engine, judge, prompts_of(data_dir, "train", cfg.prompts), cfg, cfg.seed)
    val: list[dict] = []
    if cfg.val_prompts:
        val = ranked_pairs(engine, judge, prompts_of(data_dir, "val", cfg.val_prompts), cfg, cfg.seed + 1)
    if not train:
        raise DataError(f"{model}: its replies to every prompt were identical or within min_gap; nothing to prefer")
    inputs = {"model": str(model), "reward_model": str(reward_model), "data": str(data_dir)}
    with open_artifact(out, "data", to_dict(cfg), inputs) as art:
        write_jsonl(art.dir / "train.jsonl", train)
        write_jsonl(art.dir / "val.jsonl", val)
        write_jsonl(art.dir / "test.jsonl", [])
        gaps = [r["meta"]["reward_gap"] for r in train]
        art.metrics = {"train_records": len(train), "val_records": len(val), "mean_reward_gap": sum(gaps) / len(gaps)}
        art.extra = {"source": "onpolicy"}
    say(f"onpolicy: {len(train)} train / {len(val)} val pairs ranked by {reward_model}")
    return Path(out)

