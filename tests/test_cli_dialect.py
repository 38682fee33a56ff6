"""One CLI dialect: every option naming the same concept has the same name and short flag in every command, old
spellings still work (hidden), and help lists every value a user can give."""

from __future__ import annotations

import io
from collections import defaultdict

import typer.main

from llmcycle.cli import app
from llmcycle.cli.aliases import ALIASES, rewrite
from llmcycle.config import shipped_configs
from llmcycle.data.config import SOURCES
from llmcycle.registry import NAMES

# concept -> (long name, short flag); a command naming one of these concepts must spell it so
CONCEPTS = {"model": ("--model", "-m"), "out": ("--out", "-o"), "data": ("--data", "-d"),
            "config": ("--config", "-c"), "set": ("--set", "-s"), "device": ("--device", None)}
OLD_SPELLINGS = {"--base", "--init-from", "--adapter", "--student", "--output", "--method-full"}
TRAINERS = ("pretrain", "finetune", "reward", "align", "distill")


def commands():
    group = typer.main.get_command(app)
    ctx = group.make_context("llmcycle", [], resilient_parsing=True)
    return {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}


def options(cmd):
    return [p for p in cmd.params if getattr(p, "param_type_name", "") == "option" and not p.hidden]


def test_same_concept_same_name_and_short_flag_everywhere():
    shorts = defaultdict(set)  # short flag -> long names it stands for, across commands
    for name, cmd in commands().items():
        for opt in options(cmd):
            longs = [o for o in opt.opts if o.startswith("--")]
            short = [o for o in opt.opts if not o.startswith("--")]
            assert not set(longs) & OLD_SPELLINGS, f"{name}: old spelling {longs} is visible"
            for s in short:
                shorts[s].update(longs)
            for long, want_short in CONCEPTS.values():
                if long in longs and long != "--device":
                    assert want_short in opt.opts, f"{name} {long}: short flag {want_short} missing"
    assert all(len(longs) == 1 for longs in shorts.values()), {s: l for s, l in shorts.items() if len(l) > 1}


def test_trainers_and_eval_take_device_and_model():
    cmds = commands()
    for name in (*TRAINERS, "eval", "chat", "generate", "serve"):
        names = {o for opt in options(cmds[name]) for o in opt.opts}
        assert "--device" in names, name
        assert "--model" in names, name
    tuning = {name: next(o for o in options(cmds[name]) if "--tuning" in o.opts).help for name in ("finetune", "align")}
    assert all("full" in text for text in tuning.values())  # full training is `--tuning full` in both


def test_help_lists_every_source_config_and_stage():
    cmds = commands()
    source_help = next(o for o in options(cmds["data"]) if "--source" in o.opts).help
    assert all(s in source_help for s in SOURCES)
    config_help = next(o for o in options(cmds["run"]) if "--config" in o.opts).help
    assert all(c in config_help for c in shipped_configs())
    stages_help = next(o for o in options(cmds["run"]) if "--stages" in o.opts).help
    assert all(s in stages_help for s in NAMES)


def test_old_spellings_are_rewritten_with_a_note():
    err = io.StringIO()
    argv = rewrite(["finetune", "--base", "gpt2", "--method=full", "--out", "o"], err)
    assert argv == ["finetune", "--model", "gpt2", "--tuning=full", "--out", "o"]
    assert "--base is now --model" in err.getvalue()
    assert rewrite(["eval", "--base", "x"], io.StringIO()) == ["eval", "--base", "x"]  # only where it was an option
    cmds = commands()
    for command, table in ALIASES.items():  # every alias points at an option the command really has
        names = {o for opt in options(cmds[command]) for o in opt.opts}
        assert set(table.values()) <= names, command


def test_old_spelling_still_runs(cli, tmp_path):
    code, _, err = cli("merge", "--adapter", tmp_path / "none", "--out", tmp_path / "m")
    assert code == 2 and "now --model" in err and "none" in err
