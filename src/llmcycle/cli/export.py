"""CLI: `llmcycle import FILE.gguf --out DIR` and `llmcycle export --model DIR --format gguf --quant Q --out DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmcycle.cli.common import ConfigOpt, SetOpt


def import_(
    file: str = typer.Argument(..., help="A .gguf file, or a named GGUF base (smollm2-135m-instruct)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dir: an ordinary Hugging Face model dir."),
) -> None:
    """Dequantize a GGUF model into a Hugging Face model dir (safetensors, tokenizer, chat template)."""
    from llmcycle.gguf.importer import import_gguf
    from llmcycle.gguf.resolve import NAMED, named_gguf

    path = named_gguf(file) if file in NAMED else Path(file)
    import_gguf(path, out)
    print(out)


def export(
    model: str = typer.Option(..., "--model", "-m", help="Model dir (full, merged or adapter), .gguf or named base."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dir; the file is OUT/model.gguf."),
    format: Optional[str] = typer.Option(None, "--format", help="gguf (the only format)."),
    quant: Optional[str] = typer.Option(None, "--quant", help="f32 | f16 | q8_0 | q4_0 (default f16)."),
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Write a model as a GGUF file for llama.cpp (Llama, Mistral, Qwen2; byte-level BPE tokenizers)."""
    from llmcycle.config import load_config
    from llmcycle.gguf.config import ExportConfig
    from llmcycle.export import export_gguf

    cfg = load_config(ExportConfig, config, sets or [], section="export", format=format, quant=quant)
    print(export_gguf(model, out, cfg.quant))


def register(app: typer.Typer) -> None:
    app.command("import")(import_)
    app.command("export")(export)
