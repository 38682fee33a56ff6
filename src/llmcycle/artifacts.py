"""Artifact dirs: each stage writes exactly one, atomically, with a `manifest.json` that records its lineage.

A stage works in `OUT.partial/` and renames it to `OUT` only when it succeeded, so `OUT` is never half-written.
Resumable (training) stages keep `OUT.partial/` after a failure so `--resume` finds its checkpoints there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from llmcycle import __version__
from llmcycle.errors import ArtifactError

MANIFEST = "manifest.json"
SKIP_IN_HASH = {MANIFEST}
SKIP_DIRS = {"checkpoints", "tensorboard"}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def hash_outputs(root: Path) -> dict[str, str]:
    """sha256 of every file in an artifact dir except the manifest and checkpoint/log folders."""
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or rel.parts[0] in SKIP_DIRS or rel.name in SKIP_IN_HASH:
            continue
        out[rel.as_posix()] = sha256_file(path)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | Path, path: Path) -> None:
    """Rename a finished temp file into place with ordinary permissions (mkstemp makes them 0600)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_manifest(path: str | Path, stage: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """The manifest of an artifact dir; ArtifactError if there is none or it is from another stage."""
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such artifact dir")
    file = root / MANIFEST
    if not file.is_file():
        raise ArtifactError(f"{root}: not an llmcycle artifact dir (no {MANIFEST})")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{file}:{exc.lineno}: manifest is not valid JSON") from None
    wanted = (stage,) if isinstance(stage, str) else stage
    if wanted and manifest.get("stage") not in wanted:
        raise ArtifactError(f"{root}: is a {manifest.get('stage')!r} artifact, expected {' or '.join(wanted)}")
    return manifest


def fingerprint(stage: str, config: Mapping[str, Any], inputs: Mapping[str, str | Path]) -> str:
    """What decides a stage's output: its name, its config and its inputs' own fingerprints (or file hashes)."""
    parts: dict[str, Any] = {"stage": stage, "config": dict(config), "inputs": {}}
    for name, path in sorted(inputs.items()):
        parts["inputs"][name] = input_identity(Path(path))
    return sha256_json(parts)


def input_identity(path: Path) -> str:
    """What an input is: an artifact's output hashes, a file's hash, a dir's listing, or a hub id's name."""
    if (path / MANIFEST).is_file():
        return sha256_json(read_manifest(path).get("outputs", {}))
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():  # a folder we did not write (a corpus, a downloaded model): cheap listing, not contents
        listing = [(p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in sorted(path.rglob("*")) if p.is_file()]
        return sha256_json(listing)
    return str(path)


def is_up_to_date(out: str | Path, stage: str, config: Mapping[str, Any], inputs: Mapping[str, str | Path]) -> bool:
    out = Path(out)
    if not (out / MANIFEST).is_file():
        return False
    try:
        manifest = read_manifest(out, stage)
    except ArtifactError:
        return False
    return manifest.get("fingerprint") == fingerprint(stage, config, inputs)


@dataclass
class ArtifactRun:
    """Handle a stage writes through: `dir` is the work dir; fill `metrics` and `extra` for the manifest."""

    out: Path
    dir: Path
    stage: str
    config: dict[str, Any]
    inputs: dict[str, str]
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)


def partial_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


@contextmanager
def open_artifact(
    out: str | Path,
    stage: str,
    config: Mapping[str, Any],
    inputs: Mapping[str, str | Path] | None = None,
    resumable: bool = False,
    resume: bool = False,
) -> Iterator[ArtifactRun]:
    """Write an artifact dir atomically; on success the manifest is written and the dir renamed into place."""
    out = Path(out)
    refuse_foreign(out)
    inputs = {k: str(v) for k, v in (inputs or {}).items()}
    work = partial_dir(out)
    if work.exists() and not resume:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    run = ArtifactRun(out=out, dir=work, stage=stage, config=dict(config), inputs=inputs)
    try:
        yield run
        manifest = {
            "stage": stage,
            "llmcycle_version": __version__,
            "fingerprint": fingerprint(stage, run.config, inputs),
            "config": run.config,
            "inputs": {k: {"path": v, "id": input_identity(Path(v))} for k, v in inputs.items()},
            "outputs": hash_outputs(work),
            "metrics": run.metrics,
            **run.extra,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.started)),
            "ended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "duration_s": round(time.time() - run.started, 3),
        }
        atomic_write_json(work / MANIFEST, manifest)
        _swap_into_place(work, out)
    except BaseException:
        if not resumable:
            shutil.rmtree(work, ignore_errors=True)
        raise


def refuse_foreign(out: Path) -> None:
    """Never replace a user's own folder: only an empty dir or an earlier artifact dir may be overwritten."""
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ArtifactError(f"{out}: exists and is not an llmcycle artifact dir; refusing to replace it")


def _swap_into_place(work: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
