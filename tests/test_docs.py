"""The documentation stays true: the generated config reference names every key of every config, the CLI reference
every command, and the "your model + your data" quickstart's commands, taken from the page itself, run."""

from __future__ import annotations

import importlib.util
import io
import json
import shlex
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def load_generator():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def leaf_keys(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf key of a config class, walked independently of the generator (nested models flattened)."""
    keys = []
    for name, field in cls.model_fields.items():
        nested = [a for a in (typing.get_args(field.annotation) or (field.annotation,))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested and typing.get_origin(field.annotation) not in (dict, list):
            keys += leaf_keys(nested[0], f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_config_reference_names_every_key_of_every_config():
    gen = load_generator()
    page = gen.config_reference()
    from llmcycle.pipeline import RunConfig

    expected = leaf_keys(RunConfig)
    for _, spec, _ in gen.STANDALONE:
        expected += leaf_keys(gen.load_object(spec))
    missing = [k for k in expected if f"| `{k}` |" not in page]
    assert len(expected) > 250 and not missing, missing


def test_cli_reference_names_every_command_and_option():
    import typer.main

    from llmcycle.cli import app

    page = load_generator().cli_reference()
    group = typer.main.get_command(app)
    ctx = group.make_context("llmcycle", [], resilient_parsing=True)
    for name in group.list_commands(ctx):
        assert f"\n## {name}\n" in page
        for param in group.get_command(ctx, name).params:
            if getattr(param, "param_type_name", "") == "option":
                assert f"`{param.opts[0]}`" in page, (name, param.opts)


def test_shipped_examples_parse_with_their_own_parsers(tmp_path):
    from llmcycle.config import load_config
    from llmcycle.evaluate.variants import load_variants
    from llmcycle.pipeline import RunConfig
    from llmcycle.sweep import load_space

    resources = ROOT / "src" / "llmcycle" / "resources"
    space = load_space(resources / "sweep_space.yaml", load_config(RunConfig, "tiny"))
    assert space.stage == "finetune" and len(space.params) >= 3
    variants = load_variants(resources / "prompt_variants.yaml", data=tmp_path)
    assert len(variants.variants) >= 3 and variants.tasks and variants.probes
    page = (DOCS / "sweeps.md").read_text(encoding="utf-8")
    for file in ("sweep_space.yaml", "prompt_variants.yaml"):  # the page shows the files as shipped
        body = (resources / file).read_text(encoding="utf-8")
        assert body.strip() in page, f"docs/sweeps.md does not show {file} as shipped"


def quickstart_commands() -> list[str]:
    """The fenced block after the quickstart marker in docs/quickstart/my-model.md, one command per line."""
    text = (DOCS / "quickstart" / "my-model.md").read_text(encoding="utf-8")
    block = text.split("<!-- quickstart-commands", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


ALPACA = [
    {"instruction": f"Say something about the number {i}.", "input": "" if i % 2 else f"context {i * 7}",
     "output": f"The number {i} comes after {i - 1} and before {i + 1}; {'even' if i % 2 == 0 else 'odd'}."}
    for i in range(1, 41)
]


def test_my_model_quickstart_runs_as_written(cli, make_tiny_model, tmp_path, monkeypatch):
    commands = quickstart_commands()
    assert len(commands) <= 5 and commands[-1].startswith("llmcycle chat")
    monkeypatch.chdir(tmp_path)
    Path("my.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ALPACA), encoding="utf-8")
    model = make_tiny_model("llama")
    for line in commands:
        argv = shlex.split(line.replace("MODEL_DIR", str(model)))
        assert argv[0] == "llmcycle"
        if argv[1] == "finetune":
            argv += ["--max-steps", "4"]  # the page's defaults train 100 steps; a test needs only a few
        if argv[1] == "chat":
            monkeypatch.setattr("sys.stdin", io.StringIO("Say something about the number 3.\n"))
            argv += ["--max-new-tokens", "8"]
        code, out, err = cli(argv[1:])
        assert code == 0, (line, err)
    assert Path("my-merged", "config.json").is_file()
    assert out.strip(), "chat printed no reply"
