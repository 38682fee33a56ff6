"""`llmcycle sweep`: hyperparameter search over a training stage of a run config (Optuna)."""

from __future__ import annotations

from pathlib import Path

import typer

from llmcycle.cli.common import SetOpt, run_config_help


def register(app: typer.Typer) -> None:
    """Add this command to the app."""
    app.command("sweep")(sweep_command)


def sweep_command(
    config: str = typer.Option(..., "--config", "-c", help=run_config_help("Run config")),
    space: Path = typer.Option(..., "--space", help="Search space YAML (keys of the run config and ranges)."),
    trials: int = typer.Option(10, "--trials", "-n", min=1, help="Finished trials the study should hold."),
    out: Path = typer.Option(..., "--out", "-o", help="Sweep dir (study.db, trials, best.yaml); rerun to resume."),
    name: str = typer.Option("sweep", "--name", help="Study name inside study.db."),
    sets: SetOpt = None,
) -> None:
    """TPE search with pruning on validation loss -> OUT/best.yaml, trials.md, history.png, importance.png."""
    from llmcycle.config import load_config
    from llmcycle.pipeline import RunConfig
    from llmcycle.sweep import run

    cfg = load_config(RunConfig, config, sets or [])
    result = run(cfg, space, trials, out, name)
    print(f"best config: {result / 'best.yaml'}")
    print(f"trials: {result / 'trials.md'}")
