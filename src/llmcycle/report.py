"""The run report: lineage, timings, curves, eval table and samples, read from the artifact dirs' manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from llmcycle.artifacts import MANIFEST, atomic_write_text, read_manifest

KEY_METRICS = 6


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)[:60]
    return str(value)


def _scalar_metrics(metrics: dict[str, Any]) -> str:
    """The first few scalar metrics; per-model metrics (eval) are shown as model.metric."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items() if k in ("perplexity", "bits_per_byte")})
        else:
            flat[key] = value
    items = [(k, v) for k, v in flat.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    return ", ".join(f"{k}={_fmt(v)}" for k, v in items[:KEY_METRICS])


def lineage_table(run_dir: Path, outs: Iterable[Path], statuses: dict[str, str]) -> list[str]:
    lines = ["| stage | dir | status | seconds | inputs | key metrics |", "|---|---|---|---|---|---|"]
    for out in outs:
        if not (out / MANIFEST).is_file():
            continue
        m = read_manifest(out)
        inputs = ", ".join(f"{k}: `{_short_path(run_dir, v['path'])}` ({v['id'][:8]})" for k, v in m["inputs"].items())
        lines.append(
            f"| {m['stage']} | `{out.name}/` | {statuses.get(m['stage'], '')} | {m.get('duration_s', 0):.1f} "
            f"| {inputs or '-'} | {_scalar_metrics(m.get('metrics', {}))} |"
        )
    return lines


def _short_path(run_dir: Path, path: str) -> str:
    try:
        return Path(path).resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return path


def eval_section(eval_dir: Path) -> list[str]:
    metrics_file = eval_dir / "metrics.json"
    if not metrics_file.is_file():
        return []
    metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
    models = list(metrics)
    names = sorted({k for m in metrics.values() for k, v in m.items() if isinstance(v, (int, float))})
    lines = ["## Evaluation", "", "| metric | " + " | ".join(f"`{Path(m).name or m}`" for m in models) + " |",
             "|---|" + "---|" * len(models)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(_fmt(metrics[m].get(name, "")) for m in models) + " |")
    lines.append("")
    lines += [f"![{png.stem}]({eval_dir.name}/{png.name})" for png in sorted(eval_dir.glob("*.png"))]
    return lines + [""]


def samples_section(eval_dir: Path, limit: int = 3) -> list[str]:
    file = eval_dir / "samples.jsonl"
    if not file.is_file():
        return []
    lines = ["## Sample conversations", ""]
    with open(file, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= limit:
                break
            lines += ["```", json.dumps(json.loads(line), indent=2, ensure_ascii=False)[:1500], "```", ""]
    return lines


def write_report(run_dir: Path, outs: list[Path], statuses: dict[str, str]) -> Path:
    """Write run_dir/report.md from whatever artifact dirs exist."""
    run_dir = Path(run_dir)
    total = sum(read_manifest(o).get("duration_s", 0.0) for o in outs if (o / MANIFEST).is_file())
    lines = [f"# llmcycle run `{run_dir.name}`", "", "## Lineage", ""]
    lines += lineage_table(run_dir, outs, statuses)
    lines += ["", f"Total stage time: {total:.1f} s (as recorded in the manifests).", ""]
    curves = [o / "loss.png" for o in outs if (o / "loss.png").is_file()]
    if curves:
        lines += ["## Loss curves", ""] + [f"![{c.parent.name}]({c.parent.name}/loss.png)" for c in curves] + [""]
    for extra in sorted(run_dir.glob("*/card.md")):
        lines += [f"Data card: [{extra.parent.name}/card.md]({extra.parent.name}/card.md)", ""]
    eval_dirs = [o for o in outs if (o / "metrics.json").is_file() and (o / MANIFEST).is_file()
                 and read_manifest(o).get("stage") == "eval"]
    for eval_dir in eval_dirs:
        lines += eval_section(eval_dir) + samples_section(eval_dir)
    for gates_dir in [o for o in outs if (o / "gates.json").is_file()]:  # the closed loop's before/after
        lines += ["## Alignment gates (SFT model before, aligned model after)", ""]
        lines += (gates_dir / "report.md").read_text(encoding="utf-8").splitlines()[2:] + [""]
    chat_model = _chat_model(outs)
    if chat_model is not None:
        lines += ["## Talk to it", "", "```", f"llmcycle chat --model {chat_model}", "```", ""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def _chat_model(outs: list[Path]) -> Path | None:
    """The last model-holding artifact of the run: merged, else the fine-tuned, else the base."""
    for out in reversed(outs):
        if (out / "config.json").is_file() or (out / "adapter_config.json").is_file():
            return out
    return None
