"""`llmcycle run` resumes a killed `reward` and a killed `align` stage from their checkpoints, not from step 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmcycle.config import load_config
from llmcycle.pipeline import RunConfig, run
from llmcycle.train.loop import step_hook

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
UPSTREAM = "stages=[data,tokenizer,pretrain,finetune,merge]"
LOOP = "stages=[data,tokenizer,pretrain,finetune,merge,reward,align]"
# checkpoints every step, so a kill after step 2 leaves step-000002 to resume from
FAST = ["reward.train.save_every=1", "align.train.save_every=1", "align.train.max_steps=3"]


def killed_at(calls: int, seen: list[int]):
    """A step hook that records every step and interrupts the run at its `calls`-th step (after its checkpoint)."""
    def hook(step: int, record: dict) -> None:
        seen.append(step)
        if len(seen) == calls:
            raise KeyboardInterrupt

    return step_hook(hook)


def statuses(results) -> dict[str, str]:
    return {r.stage: r.status for r in results}


def test_run_resumes_killed_reward_and_align(tmp_path):
    run_dir = tmp_path / "run"
    run(load_config(RunConfig, TINY, [UPSTREAM, *FAST]), run_dir)
    cfg = load_config(RunConfig, TINY, [LOOP, *FAST])

    seen: list[int] = []
    with pytest.raises(KeyboardInterrupt), killed_at(2, seen):
        run(cfg, run_dir)
    assert seen == [1, 2] and not (run_dir / "reward").exists()
    assert (run_dir / "reward.partial" / "checkpoints" / "step-000002").is_dir()

    seen.clear()
    with pytest.raises(KeyboardInterrupt), killed_at(4, seen):  # reward's last 2 steps, then align dies at its 2nd
        run(cfg, run_dir)
    assert seen == [3, 4, 1, 2], "reward restarted instead of resuming from its step-2 checkpoint"
    assert (run_dir / "reward" / "manifest.json").is_file() and not (run_dir / "aligned").exists()
    assert (run_dir / "aligned.partial" / "checkpoints" / "step-000002").is_dir()

    seen.clear()
    with step_hook(lambda step, record: seen.append(step)):
        again = statuses(run(cfg, run_dir))
    assert again["reward"] == "skipped" and again["align"] == "resumed"
    assert seen == [3], "align restarted instead of resuming from its step-2 checkpoint"
    assert (run_dir / "aligned" / "manifest.json").is_file()
