"""A 4-trial sweep on the tiny config finishes, prunes, resumes from its SQLite study and writes the best config."""

from __future__ import annotations

import json

import pytest
import yaml

SPACE = {
    "stage": "pretrain",
    "pruner": {"n_startup_trials": 2, "n_warmup_steps": 0},
    "sampler": {"n_startup_trials": 4, "seed": 0},
    "params": {"pretrain.train.lr": {"type": "float", "low": 1.0e-5, "high": 1.0e-2, "log": True},
               "pretrain.train.warmup_steps": {"type": "int", "low": 0, "high": 3}},
}


FAST = ["--set", "data.limit=120", "--set", "pretrain.train.max_steps=8", "--set", "pretrain.train.eval_every=2",
        "--set", "pretrain.final_eval_rows=8", "--set", "pretrain.sample_tokens=0"]


def write_space(path, space):
    path.write_text(yaml.safe_dump(space))
    return path


def test_sweep_prunes_resumes_and_writes_best(cli, tmp_path):
    from llmcycle.config import load_config
    from llmcycle.pipeline import RunConfig

    space, out = write_space(tmp_path / "space.yaml", SPACE), tmp_path / "sweep"
    code, stdout, _ = cli("sweep", "-c", "tiny", "--space", space, "--trials", "2", "-o", out, *FAST)
    assert code == 0, stdout
    first = json.loads((out / "sweep.json").read_text())
    assert first["trials"] == 2
    code, stdout, _ = cli("sweep", "-c", "tiny", "--space", space, "--trials", "4", "-o", out, *FAST)  # resume
    assert code == 0, stdout
    summary = json.loads((out / "sweep.json").read_text())
    rows = (out / "trials.csv").read_text().splitlines()
    assert summary["trials"] == 4 and len(rows) == 5  # the first two kept, two more run
    assert summary["pruned"] >= 1 and summary["complete"] >= 1
    assert "up to date" in stdout or (out / "upstream" / "data").is_dir()
    best = load_config(RunConfig, out / "best.yaml")
    assert best.data.limit == 120
    assert best.pretrain.train.lr == pytest.approx(summary["best_params"]["pretrain.train.lr"])
    assert best.pretrain.train.lr != RunConfig().pretrain.train.lr
    assert (out / "history.png").stat().st_size > 0
    assert "PRUNED" in (out / "trials.md").read_text()


@pytest.mark.parametrize("space, message", [
    ({**SPACE, "params": {"pretrain.train.nope": {"type": "int", "low": 1, "high": 2}}},
     "params.pretrain.train.nope: the config has no such key"),
    ({**SPACE, "params": {"pretrain.train.lr": {"type": "float", "low": 2, "high": 1}}}, "low <= high"),
    ({**SPACE, "stage": "merge"}, "stage"),
])
def test_bad_space_exits_2(cli, tmp_path, space, message):
    path = write_space(tmp_path / "space.yaml", space)
    code, stdout, stderr = cli("sweep", "-c", "tiny", "--space", path, "--trials", "1", "-o", tmp_path / "sw")
    assert code == 2 and message in stdout + stderr
