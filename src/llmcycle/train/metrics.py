"""Where training numbers go: metrics.jsonl (machines), TensorBoard (people with a browser), loss.png (reports).

Only the main process writes. The history is kept in memory and in checkpoints, so a resumed run rewrites
metrics.jsonl to exactly the lines of the run it continues, without the lines the killed run wrote after its last
checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from llmcycle.artifacts import atomic_write_text
from llmcycle.plots import line_plot


# The loss plot's axis, by objective name (`objectives.py`): a DPO loss is not a cross-entropy.
LOSS_LABELS = {"cross_entropy": "cross-entropy loss", "dpo": "DPO loss", "kto": "KTO loss",
               "orpo": "ORPO loss (cross-entropy + odds-ratio term)", "bradley_terry": "Bradley-Terry loss",
               "distillation": "distillation loss", "grpo": "GRPO loss"}


class MetricsLog:
    def __init__(self, work_dir: Path, enabled: bool, history: list[dict[str, Any]] | None = None):
        self.work_dir = Path(work_dir)
        self.enabled = enabled
        self.history: list[dict[str, Any]] = list(history or [])
        self.writer = None
        if enabled:
            text = "".join(json.dumps(rec) + "\n" for rec in self.history)
            atomic_write_text(self.work_dir / "metrics.jsonl", text)
            self.writer = _tensorboard(self.work_dir / "tensorboard")

    def log(self, record: dict[str, Any]) -> None:
        record = {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in record.items()}
        self.history.append(record)
        if not self.enabled:
            return
        with open(self.work_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            split = record.get("split", "train")
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{split}/{key}", value, record["step"])

    def plot(self, title: str, ylabel: str = "cross-entropy loss") -> Path | None:
        """loss.png: train loss and val loss against the optimizer step, the axis named by the objective."""
        if not self.enabled:
            return None

        train = [(r["step"], r["loss"]) for r in self.history if r.get("split") == "train" and "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in self.history if r.get("split") == "val"]
        series = {"train": tuple(zip(*train)) if train else ((), ()), "val": tuple(zip(*val)) if val else ((), ())}
        return line_plot(self.work_dir / "loss.png", series, title, "optimizer step", ylabel)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
        return None
    return SummaryWriter(log_dir=str(path))
