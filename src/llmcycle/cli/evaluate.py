"""`llmcycle eval`: measure a model (and any to compare with it) on a data dir's test split and the shipped
safety and bias probes."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from llmcycle.cli.common import ConfigOpt, SetOpt


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("eval")(eval_command)


def eval_command(
    model: str = typer.Option(..., "--model", "-m", help="Model dir (full, merged or adapter) or hub id."),
    data: Path = typer.Option(..., "--data", "-d", help="Data dir with a test split (test.jsonl)."),
    out: Path = typer.Option(..., "--out", "-o", help="Eval dir to write (metrics.json, report.md, charts)."),
    compare: Optional[List[str]] = typer.Option(None, "--compare", help="Another model to measure alongside "
                                                "(repeatable), e.g. the base model."),
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Perplexity, bits-per-byte, generation metrics, safety and bias probes -> EVAL_DIR/report.md."""
    from llmcycle.config import load_config
    from llmcycle.evaluate import EvalConfig, run
    from llmcycle.evaluate.report import read_metrics, summary_lines

    cfg = load_config(EvalConfig, config, sets or [], section="eval")
    result = run(cfg, model, data, out, compare=compare or [])
    for line in summary_lines(read_metrics(result)):
        print(line)
    print(f"report: {result / 'report.md'}")
