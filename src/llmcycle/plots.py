"""PNG charts for cards, loss curves and eval reports (matplotlib, headless)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def line_plot(
    path: Path,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    logy: bool = False,
) -> Path:
    """One line per named (xs, ys) series."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (xs, ys) in series.items():
        if len(xs):
            ax.plot(xs, ys, label=name, marker="o" if len(xs) < 20 else None, markersize=3)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return _save(fig, path)


def histograms(path: Path, groups: Mapping[str, Sequence[float]], title: str, xlabel: str, bins: int = 40) -> Path:
    """Overlaid histograms, one per named group (e.g. per split)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in groups.items():
        if len(values):
            ax.hist(values, bins=bins, alpha=0.5, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.legend()
    return _save(fig, path)


def bar_chart(path: Path, groups: Mapping[str, Mapping[str, float]], title: str, ylabel: str,
              intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None) -> Path:
    """Grouped bars: groups[model][metric] -> value; intervals[model][metric] -> (lo, hi) drawn as error bars."""
    names = list(groups)
    metrics = sorted({m for g in groups.values() for m in g})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(metrics) * max(1, len(names))), 4))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(metrics))]
        values = [groups[name].get(m, 0.0) for m in metrics]
        spans = [(intervals or {}).get(name, {}).get(m) for m in metrics]
        yerr = [[max(0.0, v - s[0]) if s else 0.0 for v, s in zip(values, spans)],
                [max(0.0, s[1] - v) if s else 0.0 for v, s in zip(values, spans)]]
        ax.bar(xs, values, width=width, label=name, yerr=yerr if any(spans) else None, capsize=3)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics, rotation=20, ha="right")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend()
    return _save(fig, path)
