"""Every shipped config loads against the run config it configures (recursively: no file is left unchecked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmcycle.config import load_config
from llmcycle.pipeline import STAGES, RunConfig, stage_plan

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert {p.stem for p in CONFIGS} >= {"tiny", "default", "phi3-lora"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_plans(path, tmp_path):
    cfg = load_config(RunConfig, path, [f"data.path={tmp_path}"] if "phi3" in path.name else [])
    plan = [stage for stage, *_ in stage_plan(cfg, tmp_path)]
    assert plan and set(plan) <= set(STAGES)
    if cfg.base is None:
        assert plan[:3] == ["data", "tokenizer", "pretrain"]
    else:
        assert "pretrain" not in plan and "finetune" in plan


def test_every_shipped_config_is_documented():
    """The docs' table of shipped configs names each one (a new config gets a line there)."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "index.md").read_text(encoding="utf-8")
    assert [p.name for p in CONFIGS if f"`configs/{p.name}`" not in page] == []
