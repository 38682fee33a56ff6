"""`llmcycle data`: build a dataset artifact dir from Cornell, chitchat, chat JSONL or plain text."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmcycle.cli.common import ConfigOpt, SetOpt
from llmcycle.data.config import SOURCES


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the app."""

    @app.command("data")
    def data(
        out: Path = typer.Option(..., "--out", "-o", help="Artifact dir to write (train/val/test.jsonl, card)."),
        source: Optional[str] = typer.Option(
            None, "--source", help=f"{' | '.join(SOURCES)} (default: read from --path's shape; chitchat, the "
            "packaged corpus, without --path)."
        ),
        path: Optional[Path] = typer.Option(
            None, "--path", help="Corpus file or folder (Cornell folder or zip, .jsonl, text files)."
        ),
        val_frac: Optional[float] = typer.Option(None, "--val-frac", help="Share of records for val."),
        test_frac: Optional[float] = typer.Option(None, "--test-frac", help="Share of records for test."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the split."),
        limit: Optional[int] = typer.Option(None, "--limit", help="Read only the first N conversations/records."),
        config: ConfigOpt = None,
        sets: SetOpt = None,
    ) -> None:
        """Collect and prepare a dataset: clean, scrub PII, filter toxicity, dedup, split leak-free."""
        from llmcycle.config import load_config
        from llmcycle.data import DataConfig, run

        cfg = load_config(
            DataConfig, config, sets or [], section="data", source=source, val_frac=val_frac,
            test_frac=test_frac, seed=seed, limit=limit, path=str(path) if path is not None else None,
        )
        print(run(cfg, out))
