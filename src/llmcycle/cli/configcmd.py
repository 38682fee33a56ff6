"""`llmcycle config show STAGE`: every key a stage's config takes, with its type, default and description, so
that `--set` and YAML files can be written without reading the source."""

from __future__ import annotations

import importlib
import json
import types
import typing
from typing import Any

import typer
from pydantic import BaseModel

from llmcycle.config import walk_keys
from llmcycle.errors import ConfigError
from llmcycle.registry import NAMES

# configs read by commands outside `llmcycle run`
STANDALONE = {"serve": "llmcycle.serve.config:ServeConfig", "distill": "llmcycle.train.distill:DistillConfig",
              "improve": "llmcycle.improve:ImproveConfig"}
CHOICES = ("run", *NAMES, "chat", *STANDALONE)

config_app = typer.Typer(help="Inspect the typed configs.", no_args_is_help=True)


@config_app.command("show")
def show(stage: str = typer.Argument(..., help=f"One of: {', '.join(CHOICES)}.")) -> None:
    """Print STAGE's config keys: dotted key, type, default (a run's default, where a run differs) and what it
    does. `--set KEY=VALUE` and a config file's section take these keys."""
    for line in key_lines(config_for(stage)):
        print(line)


def config_for(stage: str) -> BaseModel | type[BaseModel]:
    """The run config, a run's section (with the run's defaults) or a standalone command's config class."""
    from llmcycle.pipeline import RunConfig

    if stage == "run":
        return RunConfig()
    if stage in STANDALONE:
        module, name = STANDALONE[stage].split(":")
        return getattr(importlib.import_module(module), name)
    if stage not in CHOICES:
        raise ConfigError(f"config show {stage!r}: unknown stage (one of {', '.join(CHOICES)})")
    return getattr(RunConfig(), stage)


def key_lines(model: BaseModel | type[BaseModel]) -> list[str]:
    rows = [(key, type_text(field.annotation), default_text(field, value, model), field.description or "")
            for key, field, value in walk_keys(model)]
    width = max(len(r[0]) for r in rows)
    kind = max(len(r[1]) for r in rows)
    return [f"{key:<{width}}  {typ:<{kind}}  = {default}" + (f"  # {text}" if text else "")
            for key, typ, default, text in rows]


def default_text(field: Any, value: Any, model: Any) -> str:
    if isinstance(model, type) and field.is_required():
        return "(required)"
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return json.dumps(value, ensure_ascii=False, default=str)


def type_text(annotation: Any) -> str:
    """A type as YAML sees it: `int | null`, `"lora" | "full"`, `list[str]`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_text(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_text(a) for a in args if a is not Ellipsis)}]"
    return annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
