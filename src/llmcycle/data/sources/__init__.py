"""Source readers: each turns a corpus into Examples in a deterministic order; nothing after them knows which
source a record came from."""

from __future__ import annotations

from pathlib import Path

from llmcycle.data.config import DataConfig
from llmcycle.data.example import SourceData
from llmcycle.errors import DataError
from llmcycle.data.sources.chitchat import package_path, read_chitchat
from llmcycle.data.sources.cornell import read_cornell
from llmcycle.data.sources.feedback import read_feedback
from llmcycle.data.sources.jsonl import read_jsonl_source
from llmcycle.data.sources.preference import read_preference_source
from llmcycle.data.sources.text import read_text


def source_path(cfg: DataConfig) -> Path | None:
    """The corpus path, checked to exist; None only for the packaged chitchat corpus."""
    if cfg.path is None:
        if cfg.source == "chitchat":
            return None
        raise DataError(f"source {cfg.source} needs --path (a file or folder)")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    return path


def source_inputs(cfg: DataConfig) -> dict[str, Path]:
    """The input files a data artifact depends on, for the manifest and for skip-if-done checks."""
    path = source_path(cfg)
    return {"source": path if path is not None else package_path()}


def read_source(cfg: DataConfig) -> SourceData:
    path = source_path(cfg)
    if cfg.source == "cornell":
        data = read_cornell(path, cfg.cornell_assistant, cfg.join_with, cfg.limit)
    elif cfg.source == "chitchat":
        data = read_chitchat(path, cfg.join_with, cfg.limit)
    elif cfg.source == "jsonl":
        data = read_jsonl_source(path, cfg.limit)
    elif cfg.source == "preference":
        data = read_preference_source(path, cfg.limit)
    elif cfg.source == "feedback":
        data = read_feedback(path, cfg.limit)
    elif cfg.source == "text":
        data = read_text(path, cfg.text_chunk_chars, cfg.limit)
    else:  # pragma: no cover - the config's Literal rules this out
        raise DataError(f"unknown source {cfg.source!r}")
    if cfg.group_by:
        regroup(data, cfg.group_by)
    return data


def regroup(data: SourceData, key: str) -> None:
    """Group splits by a meta field instead of the source's default; records lacking it keep their own group."""
    for example in data.examples:
        value = example.record.get("meta", {}).get(key)
        if value is not None:
            example.group = f"{key}={value}"
