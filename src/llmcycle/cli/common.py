"""Options every command shares, spelled once so that one concept has one name and one short flag everywhere:
the model used or trained is `--model/-m`, the output `--out/-o`, the data dir `--data/-d`, the config
`--config/-c`, overrides `--set/-s`, the device `--device` (`tests/test_cli_dialect.py` holds every command to it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from llmcycle.config import shipped_configs
from llmcycle.errors import ConfigError

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML config: a stage config, or a run config whose section is used."),
]
SetOpt = Annotated[
    Optional[List[str]],
    typer.Option("--set", "-s", help="Override a config field: --set key=value (repeatable, dotted keys; "
                 "`llmcycle config show STAGE` lists the keys)."),
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint (a finished run trains "
                                                          "longer when --max-steps is larger).")]
MaxStepsOpt = Annotated[Optional[int], typer.Option("--max-steps", help="Optimizer steps (train.max_steps).")]
TrainDeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: the GPU "
                                                       "when there is one, else cpu).")]
def run_config_help(what: str) -> str:
    """A run config option's help naming every shipped config, so none goes unmentioned."""
    return f"{what}: a YAML file or a shipped config ({', '.join(shipped_configs())})."


def train_overrides(sets: Optional[List[str]], max_steps: Optional[int]) -> list[str]:
    """`--set` overrides plus `--max-steps` as `train.max_steps`, for every training command."""
    return list(sets or []) + ([f"train.max_steps={max_steps}"] if max_steps is not None else [])


def use_device(device: Optional[str]) -> None:
    """Training places itself (accelerate: the GPU when there is one). `--device cpu` hides the GPUs and
    `--device cuda:N` shows only GPU N, before torch looks at them; `cuda` keeps the default."""
    if device is None or device in ("cuda", "auto"):
        return
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif device.startswith("cuda:") and device[5:].isdigit():
        os.environ["CUDA_VISIBLE_DEVICES"] = device[5:]
    else:
        raise ConfigError(f"--device {device!r}: use cpu, cuda or cuda:N")
