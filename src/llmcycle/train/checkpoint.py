"""Training checkpoints: `checkpoints/step-NNNNNN/` holding exactly what an exact resume needs.

Only parameters with requires_grad are saved (the whole model for full training, the adapter for LoRA). A
checkpoint is written to a hidden temp folder and renamed into place, so a crash never leaves a half checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save_file

from llmcycle.artifacts import partial_dir
from llmcycle.errors import TrainingError, first_line
from llmcycle.progress import say
from llmcycle.train.setup import distributed_state

STEP_DIR = re.compile(r"^step-(\d{6,})$")
TRAINABLE = "trainable.safetensors"


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / "state.json").is_file()]


def continue_finished_run(out: Path, work: Path) -> bool:
    """`--resume` on a finished run (say with a larger `max_steps`): copy OUT, its checkpoints included, to the work
    dir so the loop continues from OUT's last checkpoint. OUT itself stays as it is until the longer run succeeds.
    True when there was a finished run to continue."""
    if checkpoint_dirs(work / "checkpoints") or not checkpoint_dirs(out / "checkpoints"):
        return False
    tmp = work.with_name(f".{work.name}.copy-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(out, tmp, ignore=shutil.ignore_patterns("manifest.json"))
    shutil.rmtree(work, ignore_errors=True)
    os.replace(tmp, work)
    return True


def resume_point(out: Path, stage: str) -> None:
    """Where `--resume` continues: OUT.partial's checkpoints after a crash, else a finished OUT's (train longer).
    The main process prepares OUT.partial; the others wait for it."""
    out, state = Path(out), distributed_state()
    if state.is_main_process and continue_finished_run(out, partial_dir(out)):
        say(f"{stage}: continuing the finished run in {out} from its last checkpoint")
    state.wait_for_everyone()
    if not checkpoint_dirs(partial_dir(out) / "checkpoints"):
        raise TrainingError(f"{out}: no checkpoint to resume from in {out / 'checkpoints'} or "
                            f"{partial_dir(out) / 'checkpoints'} (run without --resume to start afresh)")


def latest_checkpoint(root: Path) -> Path:
    dirs = checkpoint_dirs(root)
    if not dirs:
        raise TrainingError(f"{root}: no checkpoint to resume from (run without --resume to start afresh)")
    return dirs[-1]


def trainable_state(model) -> dict[str, Any]:
    """CPU copies of the parameters being trained, keyed by their names in the (unwrapped) model."""
    return {name: p.detach().to("cpu").clone().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: Path, step: int, params: dict[str, Any], optimizer_state: dict, scheduler_state: dict,
                    loop_state: dict[str, Any], keep: int) -> Path:
    """Write step-NNNNNN atomically, then drop all but the newest `keep` checkpoints."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(params, str(tmp / TRAINABLE))
    torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save(scheduler_state, tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(loop_state, indent=1, default=float) + "\n", encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoint_dirs(root)[: -max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict[str, Any]:
    """Restore parameters, optimizer, scheduler and RNG in place; returns the loop state saved with them."""
    try:
        params = load_file(str(path / TRAINABLE))
        named = dict(model.named_parameters())
        missing = [n for n, p in named.items() if p.requires_grad and n not in params]
        unknown = [n for n in params if n not in named]
        if missing or unknown:
            raise TrainingError(f"{path}: checkpoint does not match the model (missing {missing[:3]}, "
                                f"unexpected {unknown[:3]})")
        with torch.no_grad():
            for name, value in params.items():
                named[name].copy_(value.to(named[name].device, named[name].dtype))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        set_rng_state(torch.load(path / "rng.pt", weights_only=True))
        return json.loads((path / "state.json").read_text(encoding="utf-8"))
    except TrainingError:
        raise
    except Exception as exc:  # a truncated or foreign checkpoint
        raise TrainingError(f"{path}: checkpoint does not load ({type(exc).__name__}: {first_line(exc)})") from None
