"""How often judges agree with people: chitchat's held-out rated conversations (pairs built as the reward stage
builds them) judged by a reward model and by an LLM judge, agreement with its 95% interval.

    python bench/judge_bench.py --data DATA_DIR [--split test] [--reward-model DIR | --train-reward OUT]
                                [--llm smollm2-135m-instruct] [--pairs 64] [--max-prompt-tokens 384]

--train-reward trains a reward model on DATA_DIR's train split first (the reward stage, SmolLM2-135M-Instruct
as its base unless --reward-base). Prints a table and writes bench/results/judge_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from llmcycle.judge_check import HumanPairsConfig, human_pairs, judge_check
from llmcycle.evaluate.judges import LLMJudge, LocalChoices, RewardModelJudge

RESULTS = Path(__file__).resolve().parent / "results" / "judge_bench.json"


def train_reward(data: str, base: str, out: str, steps: int) -> str:
    from llmcycle.train.reward import RewardConfig, RewardLoopConfig, run

    loop = RewardLoopConfig(max_steps=steps, batch_size=8, lr=1e-4, warmup_steps=4, eval_every=steps,
                            save_every=steps, log_every=10, eval_batches=4)
    cfg = RewardConfig(max_seq_len=128, min_rating_gap=2.0, max_val_pairs=64, train_layers=2, train=loop)
    run(cfg, data, base, out)
    return out


def timed(judge, pairs) -> dict:
    load = os.getloadavg()[0]
    start = time.perf_counter()
    result = judge_check(judge, pairs)
    result.update(seconds=round(time.perf_counter() - start, 1), load_average_before=round(load, 2),
                  load_average_after=round(os.getloadavg()[0], 2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--reward-model")
    parser.add_argument("--train-reward")
    parser.add_argument("--reward-base", default="smollm2-135m-instruct")
    parser.add_argument("--reward-steps", type=int, default=40)
    parser.add_argument("--llm", default="smollm2-135m-instruct")
    parser.add_argument("--max-prompt-tokens", type=int, default=384)
    args = parser.parse_args()
    pairs = human_pairs(HumanPairsConfig(data_dir=args.data, split=args.split, min_rating_gap=2.0,
                                         limit=args.pairs))
    results: dict = {"data": args.data, "split": args.split, "pairs": len(pairs), "min_rating_gap": 2.0,
                     "cpus": os.cpu_count(), "judges": {}}
    reward = args.reward_model
    if reward is None and args.train_reward:
        start = time.perf_counter()
        reward = train_reward(args.data, args.reward_base, args.train_reward, args.reward_steps)
        results["reward_training_s"] = round(time.perf_counter() - start, 1)
        manifest = json.loads((Path(reward) / "manifest.json").read_text())
        results["reward_val_pairwise_accuracy"] = manifest.get("metrics", {}).get("val_pairwise_accuracy")
    if reward:
        results["judges"]["reward_model"] = timed(RewardModelJudge(reward), pairs)
    if args.llm:
        judge = LLMJudge(LocalChoices(args.llm, max_prompt_tokens=args.max_prompt_tokens))
        results["judges"]["llm"] = {**timed(judge, pairs), "max_prompt_tokens": args.max_prompt_tokens}
    for name, r in results["judges"].items():
        print(f"{name:14s} agreement {r['agreement']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] n={r['n']} "
              f"ties={r['ties']} first-shown={r['first_shown_preferred']} {r['seconds']} s "
              f"(load {r['load_average_before']})")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
