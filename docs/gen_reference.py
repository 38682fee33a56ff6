"""The config and CLI reference pages, generated from the code at every `mkdocs build` (an mkdocs hook), so the
pages cannot drift from the typed configs and the Typer app they describe.

    mkdocs build --strict                         # the hook adds reference/config.md and reference/cli.md
    python docs/gen_reference.py OUT_DIR          # writes the two pages to OUT_DIR, to read them as text

The configs are walked from instances, not classes: a run config's defaults for a stage can differ from the stage
class's own (the run's reward model trains on every other rated chat), and the reference shows what a run uses.
"""

from __future__ import annotations

import ast
import importlib
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # document this checkout's code, not whatever llmcycle is installed
    sys.path.insert(0, str(ROOT / "src"))

from pydantic import BaseModel  # noqa: E402

from llmcycle.config import walk_keys as walk  # noqa: E402

CONFIG_PAGE = "reference/config.md"
LAYOUT_MARKER = "<!-- package-layout -->"
CLI_PAGE = "reference/cli.md"

# Configs read by commands outside `llmcycle run`: (title, "module:Class", how the command reads it).
STANDALONE = [
    ("serve", "llmcycle.serve.config:ServeConfig",
     "`llmcycle serve -c FILE`: the file's top level, or its `serve:` section."),
    ("distill", "llmcycle.train.distill:DistillConfig",
     "`llmcycle distill -c FILE`: the file's top level, or its `distill:` section."),
    ("improve", "llmcycle.improve:ImproveConfig",
     "`llmcycle improve -c FILE`: the file's top level, or its `improve:` section."),
    ("sweep space", "llmcycle.sweep:Space",
     "`llmcycle sweep --space FILE` (see [Sweeps and prompt variants](../sweeps.md))."),
    ("prompt variants", "llmcycle.evaluate.variants:VariantsFile",
     "`llmcycle eval --variants FILE` (see [Sweeps and prompt variants](../sweeps.md))."),
]
BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥", "max_length": "length ≤"}


def load_object(spec: str) -> Any:
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def run_config() -> BaseModel:
    from llmcycle.pipeline import RunConfig

    return RunConfig()


def type_name(annotation: Any) -> str:
    """A type as a reader writes it in YAML terms: `int | null`, `"lora" | "full"`, `list[str]`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:  # the values go to the "allowed" column
        return " | ".join(dict.fromkeys(type(a).__name__ for a in args))
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args if a is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def yaml_value(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, bool) else str(value).lower()


def literal_values(annotation: Any) -> list[Any]:
    """The values of a Literal at the top of an annotation, inside a union, or as the items of a list."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [v for a in typing.get_args(annotation) for v in literal_values(a)]


def constraints(field: Any) -> str:
    values = literal_values(field.annotation)
    items = "each item " if typing.get_origin(field.annotation) is list else ""
    alternatives = [a for a in typing.get_args(field.annotation) if a is not type(None)]
    if typing.get_origin(field.annotation) in (typing.Union, types.UnionType) and \
            any(typing.get_origin(a) is not typing.Literal for a in alternatives):
        items = "a list, or "  # Literal | list[str] (LoRA target modules)
    out = [f"{items}one of " + ", ".join(f"`{json.dumps(v)}`" for v in values)] if values else []
    for meta in field.metadata:
        for attr, sign in BOUNDS.items():
            bound = getattr(meta, attr, None)
            if bound is not None:
                out.append(f"{sign} {bound}")
    return ", ".join(out)


def escape(text: str) -> str:
    """Plain text in a table cell: one line, pipes escaped."""
    return " ".join(text.replace("|", "\\|").split())


def code(text: str) -> str:
    """A code span in a table cell (Python-Markdown's tables leave pipes inside code spans alone)."""
    return f"`{' '.join(text.split())}`"


def key_table(model: BaseModel | type[BaseModel], prefix: str = "") -> list[str]:
    rows = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for key, field, value in walk(model, prefix):
        default = "*required*" if field.is_required() and isinstance(model, type) else code(yaml_value(value))
        rows.append(f"| `{key}` | {code(type_name(field.annotation))} | {default} | {escape(constraints(field))} "
                    f"| {escape(field.description or '')} |")
    return rows


def doc_of(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return " ".join((cls.__doc__ or "").split())


def config_reference() -> str:
    """The config reference page: the run config section by section, then the other commands' configs."""
    cfg = run_config()
    lines = ["# Config reference", "",
             "Generated from the typed configs when the site is built: every key, its type, default, allowed "
             "range and description. A run config (`llmcycle run -c FILE`) holds one section per stage; a stage "
             "command (`llmcycle finetune -c FILE`, ...) reads its own section of a run config, or a file holding "
             "only that section's keys. `--set key=value` overrides any key (dotted keys, YAML values; inside a "
             "stage command the section name may be left out). Unknown keys and wrong types are errors that name "
             "the key, with the closest keys that exist; `llmcycle config show STAGE` prints a section's keys in the "
             "terminal.", "", "## Run config (`llmcycle run`)", "", doc_of(cfg), ""]
    sections = {n: section_of(cfg, n) for n in type(cfg).model_fields}
    top = [n for n, section in sections.items() if section is None]
    lines += ["### Top level", "", *key_table_subset(cfg, top), ""]
    for name, section in sections.items():
        if section is not None:
            note = "Off unless set. " if getattr(cfg, name) is None else ""
            lines += [f"### `{name}:`", "", note + doc_of(section), "", *key_table(section, f"{name}."), ""]
    lines += ["## Configs of other commands", ""]
    for title, spec, how in STANDALONE:
        cls = load_object(spec)
        lines += [f"### {title}", "", how, "", doc_of(cls), "", *key_table(cls), ""]
    return "\n".join(lines)


def section_of(cfg: BaseModel, name: str) -> BaseModel | type[BaseModel] | None:
    """The config model behind a key of the run config: its value, or its class when it is optional and unset."""
    value = getattr(cfg, name)
    if isinstance(value, BaseModel):
        return value
    options = typing.get_args(type(cfg).model_fields[name].annotation)
    return next((t for t in options if isinstance(t, type) and issubclass(t, BaseModel)), None)


def key_table_subset(cfg: BaseModel, names: list[str]) -> list[str]:
    rows = key_table(cfg)
    return rows[:2] + [r for r in rows[2:] if r.split("`")[1] in names]


def param_type(param: Any, ctx: Any) -> str:
    """The value type as `--help` shows it (typer's own click, or click's ParamType)."""
    if getattr(param, "is_flag", False):
        return "flag"
    shown = param.display_type(ctx) if callable(getattr(param, "display_type", None)) else None
    if shown is None:
        shown = getattr(getattr(param, "type", None), "name", "text")
    shown = str(shown).strip("<>")
    bounds = [f"{s} {b}" for s, b in (("≥", getattr(param, "min", None)), ("≤", getattr(param, "max", None)))
              if b is not None]
    return shown.replace(" range", "") + (f" ({', '.join(bounds)})" if bounds else "")


def param_row(param: Any, ctx: Any) -> str:
    names = " / ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
    if getattr(param, "param_type_name", "option") == "argument":
        names = f"`{param.name.upper()}` (argument)"
    default = param.default
    if param.required:
        shown = "*required*"
    elif default is None or default == () or default is False and getattr(param, "is_flag", False):
        shown = ""
    else:
        shown = code(str(default))
    repeat = " Repeatable." if getattr(param, "multiple", False) and "repeatable" not in (param.help or "") else ""
    return f"| {names} | {escape(param_type(param, ctx))} | {shown} | {escape(param.help or '')}{repeat} |"


def cli_reference() -> str:
    """The CLI reference page: every command of `llmcycle`, its help and every visible option."""
    import typer.main

    from llmcycle.cli import app

    group = typer.main.get_command(app)
    ctx = group.make_context("llmcycle", [], resilient_parsing=True)
    lines = ["# CLI reference", "", "Generated from the `llmcycle` command when the site is built. Every command "
             "also answers `-h` / `--help`. Options left empty take their value from the config (`-c`) or the "
             "config's default: see the [config reference](config.md).", "",
             " ".join((group.help or "").split()), ""]
    names = [n for n in group.list_commands(ctx) if not group.get_command(ctx, n).hidden]
    lines += ["| command | what it does |", "|---|---|"]
    lines += [f"| [`{n}`](#{n}) | {escape(first_sentence(group.get_command(ctx, n).help))} |" for n in names]
    for name in names:
        cmd = group.get_command(ctx, name)
        sub = cmd.make_context(name, [], parent=ctx, resilient_parsing=True)
        usage = " ".join(cmd.collect_usage_pieces(sub))
        lines += ["", f"## {name}", "", " ".join((cmd.help or "").split()), "", "```",
                  f"llmcycle {name} {usage}", "```", "", "| option | type | default | description |",
                  "|---|---|---|---|"]
        lines += [param_row(p, sub) for p in cmd.params if not getattr(p, "hidden", False)]
    return "\n".join(lines) + "\n"


def first_sentence(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text.split(". ")[0].rstrip(".") + "." if text else ""


def package_layout() -> str:
    """A table of every module of the package with the first line of its docstring, read from the source files
    (nothing imported), so the layout stays true while modules move."""
    package = ROOT / "src" / "llmcycle"
    rows = ["| module | what it holds |", "|---|---|"]
    for file in sorted(package.rglob("*.py")):
        if file.name == "__main__.py":
            continue
        doc = ast.get_docstring(ast.parse(file.read_text(encoding="utf-8"))) or ""
        parts = file.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if file.name == "__init__.py" else parts)
        rows.append(f"| `{name}` | {escape(doc.split(chr(10) + chr(10))[0])} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs hook: fill the package layout table into the Python API page."""
    return markdown.replace(LAYOUT_MARKER, package_layout()) if LAYOUT_MARKER in markdown else markdown


def on_config(config: Any) -> Any:
    """mkdocs hook: pages another part of the project writes (architecture.md) stay in the nav only once they
    exist, so the strict build passes before and after."""
    docs = Path(config["docs_dir"])
    config["nav"] = prune_nav(config["nav"], lambda page: page in GENERATED or (docs / page).is_file())
    return config


def prune_nav(nav: list, exists: Any) -> list:
    out = []
    for item in nav:
        (title, target), = item.items() if isinstance(item, dict) else ((None, item),)
        if isinstance(target, list):
            out.append({title: prune_nav(target, exists)})
        elif exists(target):
            out.append(item)
    return out


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: add the generated pages to the site."""
    from mkdocs.structure.files import File

    for page, make in GENERATED.items():
        files.append(File.generated(config, page, content=make()))
    return files


GENERATED = {CONFIG_PAGE: config_reference, CLI_PAGE: cli_reference}

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    for page, make in GENERATED.items():
        (out / Path(page).name).write_text(make(), encoding="utf-8")
        print(out / Path(page).name)
