"""On-policy preference pairs: the model answers each prompt twice (sampled through our engine), a reward model
ranks the two replies, and the better becomes `chosen`. The result is an ordinary preference data dir (train/val/
test.jsonl in TRL's paired format), so `align` trains on it like on any other preference data.
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
    prompts: int = Field(64, ge=1, description="Train prompts answered (twice each).")
    val_prompts: int = Field(16, ge=0)
    max_new_tokens: int = knob("max_new_tokens", 32)
    temperature: float = knob("temperature", 1.0)
    top_p: float = knob("top_p", 0.95)
    min_gap: float = Field(0.0, ge=0, description="Least reward gap that keeps a pair.")
    batch_size: int = Field(32, ge=1)
    seed: int = knob("seed", 0)


def ranked_pairs(engine, judge, prompts: list[list[dict]], cfg: OnPolicyConfig, seed: int) -> list[dict]:
    settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                  do_sample=True,
                                  seed=seed)
    convs = [p for p in prompts for _ in range(2)]
    replies = [c.text.strip() for c in engine.chat(convs, settings, batch_size=cfg.batch_size)]
    scores = judge.score([c + [{"role": "assistant", "content": r or "."}] for c, r in zip(convs, replies)])
    records = []
    for i, prompt in enumerate(prompts):
        (a, sa), (b, sb) = (replies[2 * i], scores[2 * i]), (replies[2 * i + 1], scores[2 * i + 1])
        if not a or not b or a == b or abs(sa - sb) <= cfg.min_gap:
            continue
        chosen, rejected = (a, b) if sa > sb else (b, a)
        records.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                        "rejected": [{"role": "assistant", "content": rejected}],
                        "meta": {"source": "onpolicy", "reward_gap": abs(sa - sb)}})
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
        raise DataError(f"{model}: its two replies to every prompt were identical or tied; nothing to prefer")
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

