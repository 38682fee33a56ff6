"""`llmcycle run`: the whole lifecycle from one config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmcycle.cli.common import SetOpt, run_config_help
from llmcycle.registry import CORE, stages_help
from llmcycle.report import final_lines


def register(app: typer.Typer) -> None:
    @app.command("run", help=f"Run {' -> '.join(CORE)} (and any opt-in stage the config names), skipping what is "
                 "up to date and resuming what was killed.")
    def run_command(
        config: Annotated[str, typer.Option("--config", "-c", help=run_config_help("Run config"))] = "default",
        out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default runs/NAME).")] = None,
        sets: SetOpt = None,
        stages: Annotated[Optional[str], typer.Option("--stages", help=stages_help())] = None,
        force: Annotated[bool, typer.Option("--force", help="Rerun stages even when up to date.")] = False,
    ) -> None:
        from llmcycle.config import load_config
        from llmcycle.pipeline import RunConfig, run

        flags = {"stages": [s.strip() for s in stages.split(",") if s.strip()]} if stages else {}
        cfg = load_config(RunConfig, config, sets or [], **flags)
        run_dir = out or Path("runs") / cfg.name
        results = run(cfg, run_dir, force=force, config_ref=config)
        typer.echo(f"report: {run_dir / 'report.md'}")
        for line in final_lines([r.out for r in results], config):
            typer.echo(line)
