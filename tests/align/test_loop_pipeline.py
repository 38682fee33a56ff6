"""`llmcycle run` with the closed loop on the tiny config: reward -> align -> gates, skipped when up to date."""

from __future__ import annotations

import json
from pathlib import Path

from llmcycle.config import load_config
from llmcycle.pipeline import RunConfig, run

TINY = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
STAGES = "stages=[data,tokenizer,pretrain,finetune,merge,reward,align,gates]"


def test_tiny_run_closes_the_loop(tmp_path):
    run_dir = tmp_path / "run"
    cfg = load_config(RunConfig, TINY, [STAGES])
    first = {r.stage: r.status for r in run(cfg, run_dir)}
    assert first["reward"] == first["align"] == first["gates"] == "ran"
    assert json.loads((run_dir / "reward" / "manifest.json").read_text())["stage"] == "reward"
    assert (run_dir / "onpolicy" / "train.jsonl").is_file()  # the pairs the reward model ranked
    gates = json.loads((run_dir / "gates" / "gates.json").read_text())
    assert {g["gate"] for g in gates["gates"]} >= {"win_rate", "perplexity", "safety_flag_rate"}
    assert "Alignment gates" in (run_dir / "report.md").read_text()
    again = {r.stage: r.status for r in run(cfg, run_dir)}
    assert set(again.values()) == {"skipped"}
