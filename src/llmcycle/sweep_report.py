"""The sweep's table rows and plots: optimisation history (each trial and the best so far) and parameter
importances (Optuna's fANOVA), drawn with our own matplotlib helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmcycle.plots import bar_chart, line_plot


def trial_rows(study: Any) -> list[dict[str, Any]]:
    keys = sorted({k for t in study.trials for k in t.params})
    rows = []
    for t in study.trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        last_step = max(t.intermediate_values) if t.intermediate_values else None
        rows.append({"trial": t.number, "state": t.state.name,
                     "value": None if t.value is None else round(t.value, 5), "last_reported_step": last_step,
                     "seconds": None if seconds is None else round(seconds, 1),
                     **{k: t.params.get(k) for k in keys}})
    return rows or [{"trial": None, "state": "none"}]


def write_plots(study: Any, out: Path) -> list[str]:
    import optuna  # optional: the `sweep` extra

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    charts = []
    if complete:
        xs = [t.number for t in complete]
        ys = [t.value for t in complete]
        best = [min(ys[: i + 1]) for i in range(len(ys))]
        line_plot(out / "history.png", {"trial": (xs, ys), "best so far": (xs, best)}, "Optimisation history",
                  "trial", "objective")
        charts.append("history.png")
    if len(complete) >= 2 and complete[0].params:
        try:
            importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError):
            importances = {}
        if importances:
            bar_chart(out / "importance.png", {"importance": importances}, "Parameter importances", "fANOVA")
            charts.append("importance.png")
    return charts
