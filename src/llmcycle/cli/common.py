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
