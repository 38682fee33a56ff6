"""CLI: `llmcycle prune --model DIR --out DIR [--data DIR]` (parse, build the config, call the stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmcycle.cli.common import ConfigOpt, SetOpt


def prune(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model dir to prune (full weights).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output dir: an ordinary Hugging Face model dir.")],
    data: Annotated[Optional[Path], typer.Option(
        "--data", "-d", help="Data dir: calibration text for wanda, and the heal fine-tune's records.")] = None,
    method: Annotated[Optional[str], typer.Option("--method", help="wanda | magnitude (default wanda).")] = None,
    pattern: Annotated[Optional[str], typer.Option(
        "--pattern", help="unstructured | N:M (e.g. 2:4) | structured (default unstructured).")] = None,
    sparsity: Annotated[Optional[float], typer.Option(
        "--sparsity", help="Share of weights (or MLP channels, structured) to remove, in (0, 1).")] = None,
    heads: Annotated[Optional[float], typer.Option(
        "--heads", help="Share of query heads to remove (structured only).")] = None,
    layers: Annotated[Optional[float], typer.Option(
        "--layers", help="Share of whole decoder layers to remove, those that change their input least on --data "
        "(structured only).")] = None,
    heal_steps: Annotated[Optional[int], typer.Option(
        "--heal-steps", help="LoRA heal steps on --data after structured pruning (0: none).")] = None,
    heal_objective: Annotated[Optional[str], typer.Option(
        "--heal-objective", help="distill (learn the unpruned model's distributions; default) | sft (cross-entropy "
        "on --data's replies).")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Prune a model: unstructured, N:M or structured (heads and MLP channels really removed)."""
    from llmcycle.cli.finetune import quiet_loading
    from llmcycle.config import load_config
    from llmcycle.prune import PruneConfig, run

    quiet_loading()
    cfg = load_config(PruneConfig, config, sets or [], section="prune", method=method, pattern=pattern,
                      sparsity=sparsity, heads=heads, layers=layers, heal_steps=heal_steps,
                      heal_objective=heal_objective)
    print(run(cfg, model, data, out))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("prune")(prune)
