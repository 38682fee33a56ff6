"""What an eval's numbers depend on, recorded in its manifest so they can be reproduced or explained: package
versions, the machine's torch threads, the dtype each model ran in, the seeds, the generation settings, and hashes of
the data read and the model weights scored (weights by content; a hub id that is not on disk by name)."""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from llmcycle import __version__
from llmcycle.artifacts import sha256_file
from llmcycle.loading import resolve

PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "safetensors", "peft", "sacrebleu")
WEIGHTS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")
DATA_FILES = ("train.jsonl", "val.jsonl", "test.jsonl")


def versions() -> dict[str, str]:
    out = {"llmcycle": __version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def weights_hash(path: str | Path) -> dict[str, str] | str:
    """sha256 of each weights file of a model dir (or of a single file); the name itself for a hub id."""
    root = Path(resolve(str(path)))  # a named GGUF base: the dir it was imported into
    if root.is_file():
        return {root.name: sha256_file(root)}
    if not root.is_dir():
        return f"hub id {path} (not hashed)"
    files = sorted({f for pattern in WEIGHTS for f in root.glob(pattern)})
    return {f.name: sha256_file(f) for f in files}


def data_hash(data_dir: str | Path | None) -> dict[str, str]:
    if data_dir is None:
        return {}
    return {name: sha256_file(Path(data_dir) / name) for name in DATA_FILES if (Path(data_dir) / name).is_file()}


def record(settings: Any, seed: int, models: Mapping[str, str], dtypes: Mapping[str, str],
           data_dir: str | Path | None, tasks: Sequence[str]) -> dict[str, Any]:
    """The manifest's `reproducibility` section."""
    return {"packages": versions(), "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(), "dtypes": dict(dtypes), "seed": seed,
            "generation": asdict(settings) if is_dataclass(settings) else settings, "tasks": list(tasks),
            "data": data_hash(data_dir), "models": {name: weights_hash(path) for name, path in models.items()}}
