"""CLI: `llmcycle finetune`, `llmcycle merge`, `llmcycle check-parity` (parse, build the config, call the stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmcycle.cli.common import ConfigOpt, MaxStepsOpt, ResumeOpt, SetOpt, TrainDeviceOpt, train_overrides, use_device


def quiet_loading() -> None:
    """transformers draws a progress bar per weight file loaded or written: noise next to our own bar."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def finetune(
    data: Path = typer.Option(..., "--data", "-d", help="Data dir with train.jsonl / val.jsonl chat records."),
    model: str = typer.Option(..., "--model", "-m", help="Model to fine-tune: a hub id (gpt2, owner/name) or a "
                              "local model dir (e.g. pretrain's)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dir (adapter dir; a full model dir for --tuning "
                             "full)."),
    tuning: Optional[str] = typer.Option(None, "--tuning", help="lora | dora | qlora | full (default lora)."),
    device: TrainDeviceOpt = None,
    resume: ResumeOpt = False,
    max_steps: MaxStepsOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Supervised fine-tuning on chat records, loss on assistant turns only."""
    from llmcycle.config import load_config
    from llmcycle.train.finetune import FinetuneConfig, run

    use_device(device)
    quiet_loading()
    cfg = load_config(FinetuneConfig, config, train_overrides(sets, max_steps), section="finetune", method=tuning)
    run(cfg, data, model, out, resume=resume)


def merge(
    model: Path = typer.Option(..., "--model", "-m", help="Adapter dir written by `llmcycle finetune`."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dir for the merged full model."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto (the base's) | fp32 | bf16 | fp16."),
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Fold an adapter into its base: a full model dir, parity-checked against base + adapter."""
    from llmcycle.config import load_config
    from llmcycle.merge import MergeConfig, run

    quiet_loading()
    cfg = load_config(MergeConfig, config, sets or [], section="merge", dtype=dtype)
    run(cfg, model, out)


def check_parity(
    a: str = typer.Argument(..., help="Model A: model dir, adapter dir or hub id."),
    b: str = typer.Argument(..., help="Model B."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Max abs logit diff (default by dtype)."),
) -> None:
    """Compare two models' logits, chat template and EOS; exit 2 if they differ."""
    from llmcycle.parity import ParityError, check_parity as compare, format_report

    quiet_loading()
    report = compare(a, b, tolerance=tolerance)
    print(format_report(report))
    if not report["passed"]:
        raise ParityError(f"parity check failed: {report['summary']}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("finetune")(finetune)
    app.command("merge")(merge)
    app.command("check-parity")(check_parity)
