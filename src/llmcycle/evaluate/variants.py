"""`llmcycle eval --variants FILE`: the same benchmarks and chat probes under several prompt variants (system
message, chat template or plain text, an instruction line, k-shot), one model loaded once; a table, a plot, and the
best variant as a chat config (`best.yaml`, or written into a run config's `chat:` section with --apply-to).

    tasks: [arc_easy, boolq]
    probes: [generation, safety, bias]   # the eval stage's chat probes, put through each variant
    data: data/chitchat                  # test split for `generation`, train split for chat demonstrations
    limit: 50
    variants:
      plain: {}
      five_shot: {shots: 5}
      chat_expert: {chat: true, system: "You are a careful expert. Answer briefly."}
      instructed: {instruction: "Answer the question."}

On a benchmark a variant shapes the question's prompt; on a chat probe it shapes the conversation: its system
message replaces the conversation's, its instruction opens the first user turn, and `shots` puts that many
user/assistant exchanges from the data dir's train split before the conversation. Every variant sees the same
questions and conversations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmcycle.config import read_yaml, validate
from llmcycle.errors import ConfigError
from llmcycle.artifacts import atomic_write_json, atomic_write_text, open_artifact
from llmcycle.evaluate.bench import build, check_names
from llmcycle.evaluate.bench.common import Prompting
from llmcycle.evaluate.bench.report import headline
from llmcycle.evaluate.report import fmt
from llmcycle.evaluate.stage import EvalConfig, probe_tasks
from llmcycle.evaluate.tasks import Subject
from llmcycle.infer import Engine
from llmcycle.loading import check_exists
from llmcycle.plots import bar_chart
from llmcycle.records import load_split

LOWER_IS_BETTER = {"realtoxicity_toxic_rate"}


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: Optional[str] = None
    chat: bool = False
    instruction: str = ""
    shots: int = Field(0, ge=0)


class VariantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[str] = Field(default_factory=list)
    probes: list[Literal["generation", "safety", "bias"]] = Field(default_factory=list)
    data: Optional[str] = None
    limit: Optional[int] = Field(None, ge=1)
    max_examples: int = Field(32, ge=1, description="Test conversations answered by the generation probe.")
    max_new_tokens: int = Field(48, ge=1, description="Reply length cap of the chat probes.")
    seed: int = 0
    batch_size: int = Field(8, ge=1)
    variants: dict[str, Variant] = Field(min_length=1)

    @model_validator(mode="after")
    def _something_to_run(self) -> "VariantsFile":
        if not self.tasks and not self.probes:
            raise ValueError("name benchmarks (tasks) or chat probes (probes) to compare the variants on")
        return self


# what each chat probe adds to a variant's score, as a value in [0, 1] where higher is better
PROBE_SCORES: dict[str, tuple[str, Callable[[float], float], str]] = {
    "generation": ("chrf", lambda v: v / 100, "chrf / 100"),
    "safety": ("safety_flag_rate", lambda v: 1 - v, "1 - safety_flag_rate")}
PROBE_COLUMNS = {"generation": ["chrf", "rouge_l", "eos_share"], "safety": ["safety_flag_rate"],
                 "bias": ["bias_loglik_gap", "bias_sentiment_gap"]}


def load_variants(path: str | Path, data: str | Path | None = None) -> VariantsFile:

    spec = validate(VariantsFile, read_yaml(path), str(path))
    check_names(spec.tasks)
    if data is not None:
        spec.data = str(data)
    for name, v in spec.variants.items():
        if spec.tasks and v.system and not v.chat:
            raise ConfigError(f"{path}: variants.{name}: a system message needs chat: true")
        if spec.probes and v.shots and spec.data is None:
            raise ConfigError(f"{path}: variants.{name}: shots on the chat probes need a data dir with a train "
                              "split (data: or --data)")
    if "generation" in spec.probes and spec.data is None:
        raise ConfigError(f"{path}: probe 'generation' needs a data dir with a test split (data: or --data)")
    return spec


def score_parts(metrics: dict[str, float], spec: VariantsFile) -> dict[str, float]:
    """Each benchmark's headline and each scored chat probe as a higher-is-better value in [0, 1]."""
    parts = {}
    for t in spec.tasks:
        key = headline(t)
        if key in LOWER_IS_BETTER:
            parts[f"1 - {key}"] = 1 - metrics[key]
        else:
            parts[key] = metrics[key]
    for probe in spec.probes:
        if probe in PROBE_SCORES:
            key, to_score, label = PROBE_SCORES[probe]
            parts[label] = to_score(metrics[key])
    return parts


def score(metrics: dict[str, float], spec: VariantsFile) -> float:
    """Mean of `score_parts`: benchmark headlines (1 - rate for toxicity), chrF / 100, 1 - safety flag rate."""
    parts = score_parts(metrics, spec)
    return sum(parts.values()) / len(parts) if parts else 0.0


def demonstrations(data: str | Path, shots: int, seed: int) -> list[list[dict[str, str]]]:
    """`shots` user/assistant exchanges (each record's first) from the train split, a seeded choice."""
    import random


    pool = []
    for record in load_split(data, "train"):
        messages = record.get("messages") or []
        pair = next((messages[i:i + 2] for i in range(len(messages) - 1)
                     if messages[i]["role"] == "user" and messages[i + 1]["role"] == "assistant"), None)
        if pair:
            pool.append([{"role": m["role"], "content": m["content"]} for m in pair])
    if shots > len(pool):
        raise ConfigError(f"shots {shots}: {data}/train.jsonl holds {len(pool)} user/assistant exchanges")
    return random.Random(seed).sample(pool, shots)


def chat_frame(variant: Variant, demos: list[list[dict[str, str]]]) -> Callable | None:
    """How a chat probe's conversation is put to the model under `variant` (None: as it is)."""
    if variant.system is None and not variant.instruction and not demos:
        return None

    def frame(messages: list[dict[str, str]]) -> list[dict[str, str]]:
        system = ([{"role": "system", "content": variant.system}] if variant.system is not None
                  else [m for m in messages[:1] if m["role"] == "system"])
        turns = [m for m in messages if m["role"] != "system"]
        if variant.instruction and turns and turns[0]["role"] == "user":
            turns[0] = {**turns[0], "content": f"{variant.instruction}\n\n{turns[0]['content']}"}
        return system + [m for pair in demos for m in pair] + turns

    return frame


def probe_plan(spec: VariantsFile) -> list[Any]:
    """The chat probes, built once so every variant answers the same conversations."""
    if not spec.probes:
        return []
    cfg = EvalConfig(probes=spec.probes, max_examples=spec.max_examples, max_new_tokens=spec.max_new_tokens,
                     batch_size=spec.batch_size, seed=spec.seed)
    return probe_tasks(cfg, spec.data, [])


def run(path: str | Path, model: str | Path, out: str | Path, apply_to: str | Path | None = None,
        bench_root: str | Path | None = None, data: str | Path | None = None) -> Path:
    import torch


    spec = load_variants(path, data)
    check_exists(str(model))
    plans = {name: build(spec.tasks, v.shots, spec.limit, spec.seed, spec.batch_size, bench_root,
                         prompting=Prompting(v.instruction, v.chat, v.system)) for name, v in spec.variants.items()}
    probes = probe_plan(spec)
    frames = {name: chat_frame(v, demonstrations(spec.data, v.shots, spec.seed) if probes and v.shots else [])
              for name, v in spec.variants.items()}
    with open_artifact(out, "eval", spec.model_dump(mode="json"), {"model": str(model)}) as art:
        engine = Engine.load(model)
        metrics: dict[str, dict[str, float]] = {}
        for name, tasks in plans.items():
            subject = Subject(Path(str(model)).name, str(model), engine, frame=frames[name])
            metrics[name] = {}
            for task in tasks + probes:
                torch.manual_seed(spec.seed)
                metrics[name].update(task.evaluate(subject).metrics)
            metrics[name]["score"] = score(metrics[name], spec)
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
    keys = [headline(t) for t in spec.tasks] + [k for p in spec.probes for k in PROBE_COLUMNS[p]] + ["score"]
    lines = ["# Prompt variants", "", "| variant | chat template on benchmarks | system | shots | " + " | ".join(keys) + " |",
             "|---|---|---|---|" + "---|" * len(keys)]
    for name, values in metrics.items():
        v = spec.variants[name]
        lines.append(f"| {name}{' (best)' if name == best else ''} | {'yes' if v.chat else 'no'} | "
                     f"{v.system or ''} | {v.shots} | " + " | ".join(fmt(values.get(k)) for k in keys) + " |")
    lines += ["", "score: the mean of the benchmarks' headline metrics (1 - rate for toxicity), chrF / 100 of the "
              "generation probe and 1 - the safety flag rate; the bias probe's gaps are shown, not scored. The "
              "plot draws each of these parts on the same 0-1 scale.", "", "![variants](variants.png)", ""]
    bar_chart(out / "variants.png", {n: {**score_parts(m, spec), "score": m["score"]} for n, m in metrics.items()},
              "Prompt variants", "score (higher is better)")
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "report.md", "\n".join(lines))
    atomic_write_text(out / "best.yaml", yaml.safe_dump(best_cfg, sort_keys=False))


def apply_best(config: str | Path, best_cfg: dict[str, Any]) -> None:
    """Set the best variant's system message in a run config's `chat:` section (the rest of the file kept)."""
    data = read_yaml(config) if Path(config).is_file() else {}
    data.setdefault("chat", {})["system"] = best_cfg["chat"]["system"]
    atomic_write_text(Path(config), yaml.safe_dump(data, sort_keys=False))
