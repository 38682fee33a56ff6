"""`align --method grpo`: online RL. Each step samples a group of replies per prompt through our inference engine
(the policy being trained, adapter and all), scores them with rule rewards and/or a reward model, normalises the
rewards within each group (advantage = (r - group mean) / group std) and takes one policy-gradient step with a KL
term to the reference (the base with the adapter disabled). The loop's batches are prompt indices; rollouts happen
inside the objective, so resume skips consumed prompts without sampling them again.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import torch

from llmcycle.artifacts import open_artifact
from llmcycle.config import to_dict
from llmcycle.errors import ConfigError, DataError
from llmcycle.infer.context import trim_tokens
from llmcycle.infer.engine import Engine
from llmcycle.infer.settings import GenerationSettings
from llmcycle.progress import say
from llmcycle.safety.flags import flag_reply
from llmcycle.textstats import repetition_rate, words
from llmcycle.train.align_config import AlignConfig, GRPOOptions
from llmcycle.train.batches.preference import Encoded, collate
from llmcycle.train.batches.prompts import prompt_batches, prompts_of
from llmcycle.train.loop import train_loop
from llmcycle.train.objectives import GRPO
from llmcycle.train.policy import load_policy, prepare_tokenizer, resolve_base, save_policy
from llmcycle.train.reward import RewardModel

RULES = ("length", "repetition", "moderation", "model")


def rule_rewards(opts: GRPOOptions, judge: Any = None) -> Callable[[list[list[dict]], list[str]], list[float]]:
    """A function (prompts, replies) -> rewards: the sum of the configured rules."""
    unknown = [r for r in opts.rewards if r not in RULES]
    if unknown:
        raise ConfigError(f"align.grpo.rewards: unknown reward {unknown[0]!r} (choose from {', '.join(RULES)})")
    if "model" in opts.rewards and judge is None:
        raise ConfigError("align.grpo.rewards: 'model' needs align.grpo.reward_model (a `llmcycle reward` dir)")

    def score(prompts: list[list[dict]], replies: list[str]) -> list[float]:
        total = [0.0] * len(replies)
        for rule in opts.rewards:
            if rule == "length":
                values = [1 - min(1.0, abs(len(words(t)) - opts.target_words) / opts.target_words) for t in replies]
            elif rule == "repetition":
                values = [-repetition_rate([t]) for t in replies]
            elif rule == "moderation":
                values = [-1.0 if flag_reply(t) else 0.0 for t in replies]
            else:
                values = judge.score([p + [{"role": "assistant", "content": t or "."}] for p, t in zip(prompts, replies)])
            total = [a + b for a, b in zip(total, values)]
        return total

    return score


def group_advantages(rewards: list[float], group: int) -> list[float]:
    """(r - group mean) / (group std + 1e-4), per group of `group` consecutive replies."""
    out = []
    for start in range(0, len(rewards), group):
        chunk = rewards[start:start + group]
        mean = sum(chunk) / len(chunk)
        std = (sum((r - mean) ** 2 for r in chunk) / len(chunk)) ** 0.5
        out += [(r - mean) / (std + 1e-4) for r in chunk]
    return out


def make_rollout(engine: Any, tokenizer: Any, prompts: list[list[dict]], opts: GRPOOptions, max_len: int,
                 reward_fn, seed: int):
    """The objective's rollout: prompt-index batch -> a batch of sampled replies with advantages and stats."""
    def rollout(model: Any, batch: dict[str, Any]) -> dict[str, Any]:
        indices = batch["prompt_index"].tolist()
        convs = [prompts[i] for i in indices for _ in range(opts.group_size)]
        settings = GenerationSettings(max_new_tokens=opts.max_new_tokens, temperature=opts.temperature, do_sample=True,
                                      seed=seed * 7919 + sum(indices) * 31 + indices[0])
        was_training = model.training
        with torch.no_grad():
            completions = engine.chat(convs, settings, batch_size=len(convs))
        model.train(was_training)
        replies = [c.text for c in completions]
        rewards = reward_fn(convs, replies)
        adv = group_advantages(rewards, opts.group_size)
        rows = [sampled_row(engine, conv, c, max_len) for conv, c in zip(convs, completions)]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        mean = sum(rewards) / len(rewards)
        stats = {"reward_mean": mean, "reward_std": (sum((r - mean) ** 2 for r in rewards) / len(rewards)) ** 0.5,
                 "reply_words": sum(len(t.split()) for t in replies) / len(replies)}
        return collate(rows, pad, {"advantages": torch.tensor(adv, dtype=torch.float32), "stats": stats})

    return rollout


def sampled_row(engine: Any, conv: list[dict], completion: Any, max_len: int) -> Encoded:
    """The tokens the policy actually sampled (re-tokenizing the text could merge them differently), plus the
    end-of-turn id when it stopped there; the prompt loses its oldest tokens if the row is too long."""
    prompt = engine.encode_chat(conv)
    reply = list(completion.token_ids)
    if completion.finish_reason == "eos" and engine.eos_token_ids:
        reply.append(engine.eos_token_ids[0])
    reply = reply or [engine.eos_token_ids[0] if engine.eos_token_ids else 0]
    prompt = trim_tokens(prompt, max(1, max_len - len(reply)), keep="end")  # the sampled reply stays whole
    return Encoded(prompt + reply, [0] * len(prompt) + [1] * len(reply))


def run(cfg: AlignConfig, data_dir: str | Path, base: str | Path, out: str | Path, resume: bool = False) -> Path:
    """GRPO: DATA_DIR (prompts) + BASE -> OUT (adapter or model dir), logging reward mean/std, KL, reply length."""
    opts = cfg.grpo
    base_id = resolve_base(base)
    tokenizer, _ = prepare_tokenizer(base_id)
    prompts = prompts_of(data_dir, cfg.train_split, cfg.max_train_records)
    if len(prompts) < opts.prompts_per_step:
        raise DataError(f"{data_dir}: {len(prompts)} prompts, fewer than grpo.prompts_per_step={opts.prompts_per_step}")
    judge = None
    if opts.reward_model:
        judge = RewardModel(opts.reward_model)
    reward_fn = rule_rewards(opts, judge)
    model = load_policy(cfg, base_id, tokenizer)
    engine = Engine(model, tokenizer, fast=False)
    reference = None
    if cfg.tuning == "full":
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    objective = GRPO(cfg.beta, make_rollout(engine, tokenizer, prompts, opts, cfg.max_seq_len, reward_fn, cfg.seed),
                     reference)
    loop = cfg.train.model_copy(update={"seed": cfg.seed, "batch_size": opts.prompts_per_step})
    with open_artifact(out, "align", to_dict(cfg), {"data": data_dir, "base": base_id},
                       resumable=True, resume=resume) as art:
        result = train_loop(model, lambda epoch: prompt_batches(len(prompts), opts.prompts_per_step,
                                                                opts.group_size, cfg.seed * 1_000_003 + epoch),
                            None, loop, art.dir, resume=resume, desc=f"align (grpo, {cfg.tuning})",
                            objective=objective)
        model.train(False)
        save_policy(model, tokenizer, base_id, art.dir, adapter=cfg.tuning == "lora")
        logged = [r for r in result.history if "reward_mean" in r]
        art.metrics = {"steps": result.steps, "train_loss": result.train_loss, "seconds": round(result.seconds, 2),
                       "reward_mean_first": logged[0]["reward_mean"] if logged else None,
                       "reward_mean_last": logged[-1]["reward_mean"] if logged else None,
                       "kl_last": logged[-1].get("kl") if logged else None}
        art.extra = {"method": "grpo", "tuning": cfg.tuning, "base": base_id, "prompts": len(prompts),
                     "rewards": opts.rewards}
    say(f"align: wrote {out} (grpo; reward mean {art.metrics['reward_mean_first']} -> {art.metrics['reward_mean_last']})")
    return Path(out)
