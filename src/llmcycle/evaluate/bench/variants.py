"""`llmcycle eval --variants FILE`: the same benchmarks under several prompt variants (system message, chat
template or plain text, an instruction line, k-shot), one model loaded once; a table, a plot, and the best variant
as a chat config (`best.yaml`, or written into a run config's `chat:` section with --apply-to).

    tasks: [arc_easy, boolq]
    limit: 50
    variants:
      plain: {}
      five_shot: {shots: 5}
      chat_expert: {chat: true, system: "You are a careful expert. Answer briefly."}
      instructed: {instruction: "Answer the question."}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field

from llmcycle.config import read_yaml, validate
from llmcycle.errors import ConfigError

LOWER_IS_BETTER = {"realtoxicity_toxic_rate"}


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: Optional[str] = None
    chat: bool = False
    instruction: str = ""
    shots: int = Field(0, ge=0)


class VariantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[str] = Field(min_length=1)
    limit: Optional[int] = Field(None, ge=1)
    seed: int = 0
    batch_size: int = Field(8, ge=1)
    variants: dict[str, Variant] = Field(min_length=1)


def load_variants(path: str | Path) -> VariantsFile:
    from llmcycle.evaluate.bench import check_names

    spec = validate(VariantsFile, read_yaml(path), str(path))
    check_names(spec.tasks)
    for name, v in spec.variants.items():
        if v.system and not v.chat:
            raise ConfigError(f"{path}: variants.{name}: a system message needs chat: true")
    return spec


def score(metrics: dict[str, float], tasks: list[str]) -> float:
    """Mean headline metric over the tasks (a lower-is-better one counts as 1 - value)."""
    from llmcycle.evaluate.bench.report import headline

    values = [(1 - metrics[headline(t)]) if headline(t) in LOWER_IS_BETTER else metrics[headline(t)] for t in tasks]
    return sum(values) / len(values)


def run(path: str | Path, model: str | Path, out: str | Path, apply_to: str | Path | None = None,
        bench_root: str | Path | None = None) -> Path:
    from llmcycle.artifacts import open_artifact
    from llmcycle.evaluate.bench import build
    from llmcycle.evaluate.bench.common import Prompting
    from llmcycle.evaluate.tasks import Subject
    from llmcycle.infer import Engine
    from llmcycle.loading import check_exists

    spec = load_variants(path)
    check_exists(str(model))
    plans = {name: build(spec.tasks, v.shots, spec.limit, spec.seed, spec.batch_size, bench_root,
                         prompting=Prompting(v.instruction, v.chat, v.system)) for name, v in spec.variants.items()}
    with open_artifact(out, "eval", spec.model_dump(mode="json"), {"model": str(model)}) as art:
        subject = Subject(Path(str(model)).name, str(model), Engine.load(model))
        metrics: dict[str, dict[str, float]] = {}
        for name, tasks in plans.items():
            metrics[name] = {}
            for task in tasks:
                metrics[name].update(task.evaluate(subject).metrics)
            metrics[name]["score"] = score(metrics[name], spec.tasks)
        best = max(metrics, key=lambda n: metrics[n]["score"])
        best_cfg = {"chat": {"system": spec.variants[best].system}, "eval": {"shots": spec.variants[best].shots}}
        write_outputs(art.dir, metrics, spec, best, best_cfg)
        art.metrics = metrics
        art.extra = {"best_variant": best, "charts": ["variants.png"]}
    if apply_to is not None:
        apply_best(apply_to, best_cfg)
    return Path(out)


def write_outputs(out: Path, metrics: dict[str, dict[str, float]], spec: VariantsFile, best: str,
                  best_cfg: dict[str, Any]) -> None:
    from llmcycle.artifacts import atomic_write_json, atomic_write_text
    from llmcycle.evaluate.bench.report import headline
    from llmcycle.evaluate.report import fmt
    from llmcycle.plots import bar_chart

    keys = [headline(t) for t in spec.tasks] + ["score"]
    lines = ["# Prompt variants", "", "| variant | chat | system | shots | " + " | ".join(keys) + " |",
             "|---|---|---|---|" + "---|" * len(keys)]
    for name, values in metrics.items():
        v = spec.variants[name]
        lines.append(f"| {name}{' (best)' if name == best else ''} | {'yes' if v.chat else 'no'} | "
                     f"{v.system or ''} | {v.shots} | " + " | ".join(fmt(values.get(k)) for k in keys) + " |")
    lines += ["", "score: mean headline metric (1 - rate for toxicity).", "", "![variants](variants.png)", ""]
    bar_chart(out / "variants.png", {n: {k: m[k] for k in keys} for n, m in metrics.items()}, "Prompt variants",
              "score")
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "report.md", "\n".join(lines))
    atomic_write_text(out / "best.yaml", yaml.safe_dump(best_cfg, sort_keys=False))


def apply_best(config: str | Path, best_cfg: dict[str, Any]) -> None:
    """Set the best variant's system message in a run config's `chat:` section (the rest of the file kept)."""
    from llmcycle.artifacts import atomic_write_text

    data = read_yaml(config) if Path(config).is_file() else {}
    data.setdefault("chat", {})["system"] = best_cfg["chat"]["system"]
    atomic_write_text(Path(config), yaml.safe_dump(data, sort_keys=False))
