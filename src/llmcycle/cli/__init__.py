"""The `llmcycle` command: a thin Typer layer. Each stage module registers its commands; all work is in
plain functions elsewhere. User errors are printed once, as one line, with exit code 2."""

from __future__ import annotations

import os
import sys

import typer

try:  # typer >= 0.20 vendors its own click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click import ClickException

from llmcycle import __version__
from llmcycle.cli.aliases import rewrite
from llmcycle.errors import UserError
from llmcycle.openmp import passive_openmp, short_openmp_spin

app = typer.Typer(
    name="llmcycle",
    help="Take a language model through its lifecycle: data -> tokenizer -> pretrain -> finetune -> merge -> "
    "eval -> chat.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"llmcycle {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """llmcycle: dataset -> tokenizer -> pretraining -> fine-tuning -> evaluation -> chat."""


def _register_all() -> None:
    from llmcycle.cli import (align, configcmd, data, evaluate, export, finetune, infer, pipeline, prune, serve,
                              sweep, synth, train)

    for module in (data, synth, train, finetune, prune, infer, evaluate, export, serve, pipeline, align, sweep,
                   configcmd):
        module.register(app)


if sys.argv[1:2] in (["serve"], ["eval"]):
    # libgomp reads its wait policy once, when torch loads, and registering the commands loads torch: these
    # commands' OpenMP waiting must be asked for before that
    (short_openmp_spin if sys.argv[1] == "serve" else passive_openmp)()
_register_all()


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(args=rewrite(list(sys.argv[1:] if argv is None else argv)), prog_name="llmcycle", standalone_mode=False)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
