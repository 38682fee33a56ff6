"""CLI commands `tokenizer` and `pretrain`: parse options, build the typed config, call the stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from llmcycle.cli.common import ConfigOpt, SetOpt


def tokenizer(
    data: Annotated[Path, typer.Option("--data", help="Data dir (its train split is used).")],
    out: Annotated[Path, typer.Option("--out", help="Tokenizer dir to write.")],
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
    data: Annotated[Path, typer.Option("--data", help="Data dir (train split; val split if present).")],
    out: Annotated[Path, typer.Option("--out", help="Base model dir to write.")],
    tokenizer_dir: Annotated[Optional[Path], typer.Option("--tokenizer", help="Tokenizer dir.")] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Model preset: tiny, default, small, ...")] = None,
    init_from: Annotated[Optional[str], typer.Option("--init-from", help="Continue pretraining this model.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint.")] = False,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Optimizer steps.")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Pretrain a causal LM on DATA (from a preset, or from --init-from) and write a Hugging Face model dir."""
    from llmcycle.config import load_config
    from llmcycle.train.pretrain import PretrainConfig, run

    overrides = list(sets or []) + ([f"train.max_steps={max_steps}"] if max_steps is not None else [])
    cfg = load_config(PretrainConfig, config, overrides, section="pretrain", preset=preset, init_from=init_from)
    result = run(cfg, data, tokenizer_dir, out, resume=resume)
    from llmcycle.train.loop import distributed_state

    if distributed_state().is_main_process:
        print(result)


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("tokenizer")(tokenizer)
    app.command("pretrain")(pretrain)
