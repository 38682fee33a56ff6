"""CLI: `llmcycle synth --teacher MODEL|URL --out DIR --topic T ...` (parse, build the config, call the stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from llmcycle.cli.common import ConfigOpt, SetOpt


def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Data dir to write (train/val/test.jsonl and a card).")],
    teacher: Annotated[Optional[str], typer.Option(
        "--teacher", help="Model dir, .gguf, named GGUF base, or OpenAI-compatible URL (llmcycle serve too).")] = None,
    topics: Annotated[Optional[List[str]], typer.Option("--topic", help="A subject to write prompts about "
                                                                        "(repeatable).")] = None,
    seed_prompts: Annotated[Optional[List[str]], typer.Option(
        "--seed-prompt", help="An example prompt shown to the teacher (repeatable).")] = None,
    records: Annotated[Optional[int], typer.Option("--records", help="Conversations to aim for.")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Write instruction/chat data with a teacher model: diverse prompts, its answers, the data stage's filters."""
    from llmcycle.cli.finetune import quiet_loading
    from llmcycle.config import load_config
    from llmcycle.synth import SynthConfig, run

    quiet_loading()
    cfg = load_config(SynthConfig, config, sets or [], section="synth", teacher=teacher, topics=topics or None,
                      seed_prompts=seed_prompts or None, records=records)
    print(run(cfg, out))


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""
    app.command("synth")(synth)
