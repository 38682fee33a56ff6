"""CLI commands `tokenizer` and `pretrain`: parse options, build the typed config, call the stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmcycle.cli.common import ConfigOpt, MaxStepsOpt, ResumeOpt, SetOpt, TrainDeviceOpt, train_overrides, use_device


def tokenizer(
    data: Annotated[Path, typer.Option("--data", "-d", help="Data dir (its train split is used).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Tokenizer dir to write.")],
    vocab_size: Annotated[Optional[int], typer.Option("--vocab-size", help="BPE vocabulary size.")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Train a byte-level BPE tokenizer with chat template on DATA's train split."""
    from llmcycle.config import load_config
    from llmcycle.tokenizer import TokenizerConfig, run

    cfg = load_config(TokenizerConfig, config, sets or [], section="tokenizer", vocab_size=vocab_size)
    print(run(cfg, data, out))


def pretrain(
    data: Annotated[Path, typer.Option("--data", "-d", help="Data dir (train split; val split if present).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Base model dir to write.")],
    tokenizer_dir: Annotated[Optional[Path], typer.Option("--tokenizer", help="Tokenizer dir.")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Model preset: tiny, default, small, ...")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Continue pretraining this model (default: "
                                                 "a fresh one from --preset).")] = None,
    device: TrainDeviceOpt = None,
    resume: ResumeOpt = False,
    max_steps: MaxStepsOpt = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Pretrain a causal LM on DATA (from a preset, or from --init-from) and write a Hugging Face model dir."""
    from llmcycle.config import load_config
    from llmcycle.train.pretrain import PretrainConfig, run

    use_device(device)
    overrides = train_overrides(sets, max_steps)
    cfg = load_config(PretrainConfig, config, overrides, section="pretrain", preset=preset, init_from=model)
    result = run(cfg, data, tokenizer_dir, out, resume=resume)
    from llmcycle.train.loop import distributed_state

    if distributed_state().is_main_process:
        print(result)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("tokenizer")(tokenizer)
    app.command("pretrain")(pretrain)
