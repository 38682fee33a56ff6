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
        decontaminate: bool = typer.Option(False, "--decontaminate", help="Drop train records that hold an eval "
                                           "item (benchmarks, probe prompts, the test split); counted in the card."),
        config: ConfigOpt = None,
        sets: SetOpt = None,
    ) -> None:
        """Collect and prepare a dataset: clean, scrub PII, filter toxicity, dedup, split leak-free."""
        from llmcycle.config import load_config
        from llmcycle.data import DataConfig, run

        cfg = load_config(
            DataConfig, config, sets or [], section="data", source=source, val_frac=val_frac,
            test_frac=test_frac, seed=seed, limit=limit, path=str(path) if path is not None else None,
            decontaminate="drop" if decontaminate else None,
        )
        print(run(cfg, out))

    app.command("decontaminate")(decontaminate_command)


def decontaminate_command(
    data: Path = typer.Option(..., "--data", "-d", help="Data dir (its train split, also checked against its "
                              "test split) or a JSONL file of chat, preference or text records."),
    benchmarks: Optional[str] = typer.Option(None, "--benchmarks", help="Benchmarks to check against, comma "
                                             "separated (default: every installed one)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the findings as JSON here (per eval set, "
                                       "and every flagged record with the items it holds)."),
    clean: Optional[Path] = typer.Option(None, "--clean", help="Write the records not flagged here (JSONL)."),
) -> None:
    """Which training records hold an eval item: benchmark questions, probe prompts, test conversations (13-gram
    overlap, near copies and exact matches after normalisation)."""
    from llmcycle.artifacts import atomic_write_json
    from llmcycle.data.decontaminate import drop_contaminated
    from llmcycle.data.shipped_index import check_path
    from llmcycle.records import write_jsonl

    names = [b.strip() for b in benchmarks.split(",") if b.strip()] if benchmarks is not None else None
    records, report, skipped = check_path(data, names)
    summary = {**report.summary(), "benchmarks_skipped": list(skipped),
               "flagged": {str(row): items for row, items in sorted(report.flagged.items())}}
    print(f"{len(report.flagged)} of {len(records)} records hold an eval item")
    for name, entry in report.per_set.items():
        if entry["contaminated_items"]:
            print(f"  {name}: {entry['contaminated_items']} of {entry['items']} items in {entry['train_records']} "
                  f"records, e.g. {', '.join(map(str, entry['examples'][:3]))}")
    for note in skipped:
        print(f"  skipped {note}")
    if out is not None:
        atomic_write_json(out, summary)
    if clean is not None:
        kept, dropped = drop_contaminated(records, report)
        write_jsonl(clean, kept)
        print(f"{clean}: {len(kept)} records ({dropped} dropped)")
