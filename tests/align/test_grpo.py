"""GRPO through the engine and the shared loop: a rule reward (reply length) rises on a tiny Llama."""

from __future__ import annotations

import json

from tests.align.conftest import small_align


def test_grpo_raises_a_rule_reward(chat_data_dir, make_tiny_model, tmp_path):
    from llmcycle.train import align

    cfg = small_align("grpo", beta=0.001, tuning="full",
                      train={"max_steps": 32, "lr": 1e-2, "log_every": 8, "save_every": 32, "eval_every": 32},
                      grpo={"group_size": 8, "prompts_per_step": 2, "max_new_tokens": 12, "rewards": ["length"],
                            "target_words": 16})
    out = tmp_path / "grpo"
    align.run(cfg, chat_data_dir, make_tiny_model("llama"), out)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in history if "reward_mean" in r]
    assert {"reward_std", "kl", "reply_words"} <= set(logged[0])
    assert logged[-1]["reward_mean"] > logged[0]["reward_mean"] + 0.08
    assert logged[-1]["kl"] > 0  # the frozen reference differs from the trained policy
    assert (out / "model.safetensors").is_file()
