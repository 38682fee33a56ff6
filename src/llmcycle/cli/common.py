"""Options every stage command shares."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML config: a stage config, or a run config whose section is used."),
]
SetOpt = Annotated[
    Optional[List[str]],
    typer.Option("--set", "-s", help="Override a config field: --set key=value (repeatable, dotted keys)."),
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint (a finished run trains "
                                                          "longer when --max-steps is larger).")]
MaxStepsOpt = Annotated[Optional[int], typer.Option("--max-steps", help="Optimizer steps (train.max_steps).")]


def train_overrides(sets: Optional[List[str]], max_steps: Optional[int]) -> list[str]:
    """`--set` overrides plus `--max-steps` as `train.max_steps`, for every training command."""
    return list(sets or []) + ([f"train.max_steps={max_steps}"] if max_steps is not None else [])
