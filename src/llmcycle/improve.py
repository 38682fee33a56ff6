"""`llmcycle improve`: feedback (or any preference data) -> preference dataset -> align the served model -> gates on
held-out data -> promote (atomic pointer update, which a `llmcycle serve --watch POINTER` swaps to) or reject.

An attempt is a preset run of registered stages (data -> reward -> align -> merge, through `llmcycle.pipeline`)
followed by the gates stage's measurements (`llmcycle.gates`). Every attempt is an artifact dir (`attempt-NNN/`,
with manifest) holding its dataset, its judge, its candidate and `gates.json` + `report.md`, so the lineage report
shows the loop. The judge is a reward model trained on a split disjoint from the one the candidate was aligned on.

Concurrent runs are safe: attempt numbers are reserved under the attempts folder's lock (a run in progress keeps
its number), a finished candidate is made read-only, and promotion is a compare-and-swap on the pointer: it
happens only if the pointer still names the model the candidate was gated against, so a stale candidate never
overwrites a newer promotion.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

from pydantic import Field

from llmcycle.artifacts import ArtifactRun, open_artifact, partial_dir, publish
from llmcycle.config import StageConfig, to_dict
from llmcycle.data.config import DataConfig
from llmcycle.errors import ArtifactError, ConfigError
from llmcycle.gates import GateConfig, gate_candidate
from llmcycle.merge import MergeConfig
from llmcycle.pipeline import Step, run_preset
from llmcycle.progress import say
from llmcycle.train.align import AlignConfig
from llmcycle.train.reward import RewardConfig


class ImproveConfig(StageConfig):
    align: AlignConfig = Field(default_factory=AlignConfig)
    judge: RewardConfig = Field(default_factory=RewardConfig, description="How the judge is trained (val split).")
    gates: GateConfig = Field(default_factory=GateConfig)
    val_frac: float = Field(0.2, gt=0, lt=1, description="Feedback: share for the judge's split.")
    test_frac: float = Field(0.2, gt=0, lt=1, description="Feedback: share held out for the gates.")
    seed: int = 0


def current_model(model: Optional[str], pointer: Optional[Path]) -> str:
    """--model, else the model dir the serve pointer names."""
    if model:
        return str(model)
    if pointer is None or not Path(pointer).is_file():
        raise ConfigError("improve: give --model DIR (the served model) or --pointer FILE that names it")
    named = Path(pointer).read_text(encoding="utf-8").strip()
    if not named:
        raise ConfigError(f"{pointer}: the serve pointer file is empty")
    return named


ATTEMPT = re.compile(r"attempt-(\d+)(\.partial)?$")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock (flock) on `path`, held for the block: concurrent `improve` runs take turns here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def next_attempt(root: Path) -> Path:
    """Reserve the next attempt number: under the folder's lock, one past every attempt-NNN and attempt-NNN.partial
    (a run still in progress), its work dir made at once so no other run can take or delete it."""
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / ".improve.lock"):
        taken = [int(m.group(1)) for m in map(ATTEMPT.match, os.listdir(root)) if m]
        attempt = root / f"attempt-{max(taken, default=0) + 1:03d}"
        partial_dir(attempt).mkdir()
    return attempt


def preset(cfg: ImproveConfig, current: str, work: Path, feedback: Optional[Path] = None,
           data: Optional[Path] = None, judge: Optional[str] = None, candidate: Optional[str] = None) -> list[Step]:
    """The attempt's stages: data (from feedback), reward (the judge, on the val split), align (on train), merge
    (an adapter candidate, so the next round can align the served model again); each left out when given (a given
    candidate is gated as it is)."""
    if data is None and feedback is None:
        raise ConfigError("improve: give --feedback DB (the server's feedback store) or --data DIR (preference data)")
    steps = []
    data_dir = Path(data) if data is not None else work / "data"
    if data is None:
        steps.append(Step("data", DataConfig(source="feedback", path=str(feedback), val_frac=cfg.val_frac,
                                             test_frac=cfg.test_frac, seed=cfg.seed), {}, data_dir))
    if judge is None:
        judge_cfg = cfg.judge.model_copy(update={"train_split": "val", "val_split": "test"})
        steps.append(Step("reward", judge_cfg, {"data": str(data_dir), "base": current}, work / "judge"))
    if candidate is None:
        steps.append(Step("align", cfg.align, {"data": str(data_dir), "base": current}, work / "candidate"))
        if cfg.align.tuning != "full":
            steps.append(Step("merge", MergeConfig(), {"adapter": str(work / "candidate")}, work / "model"))
    return steps


def run(cfg: ImproveConfig, out: str | Path, model: Optional[str] = None, pointer: Optional[Path] = None,
        feedback: Optional[Path] = None, data: Optional[Path] = None, judge: Optional[str] = None,
        candidate: Optional[str] = None) -> dict[str, Any]:
    """One attempt under OUT; returns {"attempt", "promoted", "failed", "candidate"}. `candidate` gates an
    already-trained model instead of aligning one; `judge` uses a given reward model instead of training one."""
    current = current_model(model, pointer)
    gated_against = read_pointer_text(pointer)
    attempt = next_attempt(Path(out))
    inputs = {"current": current, **{k: str(v) for k, v in (("feedback", feedback), ("data", data),
                                                              ("judge", judge), ("candidate", candidate)) if v}}
    with open_artifact(attempt, "improve", to_dict(cfg), inputs, resume=True) as art:  # resume: keep the reservation
        steps = preset(cfg, current, art.dir, feedback, data, judge, candidate)
        made = {r.stage: str(r.out) for r in run_preset(steps)}
        data_dir = Path(data) if data is not None else art.dir / "data"
        judge = judge or made["reward"]
        cand_dir = made.get("merge") or candidate or made["align"]
        final_candidate = _shown(cand_dir, art)
        gates, failed, win = gate_candidate(cfg.gates, current, cand_dir, data_dir, judge, art, final_candidate,
                                            made.get("align"))
        art.extra = {"candidate": final_candidate, "judge": _shown(judge, art)}
    if Path(final_candidate).resolve().is_relative_to(attempt.resolve()):
        freeze(Path(final_candidate))
    promoted = not failed and (pointer is None or promote(Path(pointer), final_candidate, gated_against))
    verdict = ("promoted" if promoted else f"not promoted (gates not passed: {', '.join(failed)})" if failed
               else "passed its gates, not promoted (the pointer moved meanwhile)")
    say(f"improve: {attempt.name} {verdict}; win rate {win:.2f}; report {attempt / 'report.md'}")
    return {"attempt": attempt, "promoted": bool(promoted), "failed": failed, "candidate": final_candidate}


def _shown(path: str | Path, art: ArtifactRun) -> str:
    """A path inside the attempt's work dir as it reads once the attempt is in place."""
    return str(Path(path)).replace(str(art.dir), str(art.out))


def read_pointer_text(pointer: Optional[Path]) -> Optional[str]:
    """What the pointer names now (None: no pointer file): promotion later checks it has not moved."""
    if pointer is None or not Path(pointer).is_file():
        return None
    return Path(pointer).read_text(encoding="utf-8").strip()


def promote(pointer: Path, model_dir: str, expected: Optional[str] = None) -> bool:
    """Point the server at `model_dir`, only if the pointer still names `expected` (the model the candidate was
    gated against): a compare-and-swap under the pointer's lock. The new pointer is written to a temp file,
    fsynced, renamed over the old one, and the folder fsynced, so a crash leaves the old pointer or the new one."""
    if not Path(model_dir, "manifest.json").is_file() and not Path(model_dir, "config.json").is_file() \
            and not Path(model_dir, "adapter_config.json").is_file():
        raise ArtifactError(f"{model_dir}: not a model dir, refusing to point the server at it")
    with locked(pointer.with_name(pointer.name + ".lock")):
        now = read_pointer_text(pointer)
        if now != expected:
            say(f"improve: not promoting {model_dir}: {pointer} now names {now} (it was gated against {expected})")
            return False
        write_durably(pointer, str(Path(model_dir).resolve()))
    say(f"improve: {pointer} -> {model_dir}")
    return True


def write_durably(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def freeze(model_dir: Path) -> None:
    """A written candidate is immutable: its files lose their write bits (what was gated is what is served)."""
    for file in model_dir.rglob("*"):
        if file.is_file() and not file.is_symlink():
            file.chmod(file.stat().st_mode & ~0o222)


def gates_of(attempt: str | Path) -> dict[str, Any]:
    return json.loads((Path(attempt) / "gates.json").read_text())
