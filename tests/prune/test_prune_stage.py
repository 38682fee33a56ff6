"""`prune` as a registered stage: the CLI command and the run's runner call the same function; bad input is one
line, exit 2, nothing written."""

from __future__ import annotations

import json

from llmcycle import registry
from llmcycle.cli import main
from llmcycle.prune import PruneConfig


def test_cli_prune_writes_a_pruned_model(make_tiny_model, tmp_path, capsys):
    base = make_tiny_model("llama")
    out = tmp_path / "p"
    try:
        main(["prune", "--model", str(base), "--out", str(out), "--method", "magnitude", "--sparsity", "0.25",
              "--set", "seed=3"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "prune"
    assert manifest["config"]["sparsity"] == 0.25 and manifest["config"]["seed"] == 3
    assert manifest["metrics"]["achieved_sparsity"] == 0.25


def test_cli_prune_bad_sparsity_is_one_line_exit_2(make_tiny_model, tmp_path, capsys):
    base = make_tiny_model("llama")
    out = tmp_path / "p"
    try:
        main(["prune", "--model", str(base), "--out", str(out), "--method", "magnitude", "--sparsity", "1.5"])
    except SystemExit as exc:
        assert exc.code == 2
    err = capsys.readouterr().err.strip()
    assert "sparsity" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("p*"))


def test_registered_runner_prunes_the_final_model(make_tiny_model, chat_data_dir, tmp_path):
    stage = registry.stage("prune")
    assert stage.inputs == {"model": registry.FINAL_MODEL, "data": "data"} and not stage.core
    base = make_tiny_model("llama")
    out = stage.run(PruneConfig(pattern="2:4"), {"model": base, "data": chat_data_dir}, tmp_path / "pruned")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["metrics"]["achieved_sparsity"] == 0.5 and manifest["config"]["method"] == "wanda"
