"""Benchmarks: `llmcycle eval --tasks arc_easy,gsm8k,...`. Each name maps to a loader (data from a PyPI package
of the `bench` extra) and a family (multiple choice, generation, bias) that scores it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from llmcycle.errors import ConfigError
from llmcycle.evaluate.bench import bias, generation, mc_tasks, toxicity
from llmcycle.evaluate.bench.bias import BiasTask
from llmcycle.evaluate.bench.common import Prompting, check_shots
from llmcycle.evaluate.bench.generation import GenerationTask
from llmcycle.evaluate.bench.mc import MultipleChoiceTask


@dataclass(frozen=True)
class Spec:
    loader: Callable[..., Any]
    family: str  # "mc" | "gen" | "bias"
    max_new_tokens: int = 0
    stop: tuple[str, ...] = ()
    metric: Any = None
    description: Any = ""


def task_specs() -> dict[str, Spec]:
    """Every benchmark's loader, family and generation settings, by name (also read by the contamination check
    and by bench/eval_bench.py, which gives lm-eval the same stop strings and token budget)."""
    return {
        "arc_easy": Spec(partial(mc_tasks.arc, "arc_easy", "ARC-Easy"), "mc"),
        "arc_challenge": Spec(partial(mc_tasks.arc, "arc_challenge", "ARC-Challenge"), "mc"),
        "hellaswag": Spec(mc_tasks.hellaswag, "mc"),
        "piqa": Spec(mc_tasks.piqa, "mc"),
        "boolq": Spec(mc_tasks.boolq, "mc"),
        "mmlu": Spec(mc_tasks.mmlu, "mc", description=mc_tasks.mmlu_description),
        "gsm8k": Spec(generation.gsm8k, "gen", 256, ("Question:", "\n\n"), generation.gsm8k_metric),
        "humaneval": Spec(generation.humaneval, "gen", 256, ("\nclass", "\ndef", "\n#", "\nif", "\nprint"),
                          generation.humaneval_metric),
        "xsum": Spec(generation.xsum, "gen", 64, ("\n",), generation.rouge_metric("xsum")),
        "truthfulqa": Spec(generation.truthfulqa, "gen", 48, ("\n",), generation.rouge_metric("truthfulqa")),
        "realtoxicity": Spec(toxicity.realtoxicity, "gen", 32, ("\n",), toxicity.toxicity_metric),
        "crows_pairs": Spec(bias.crows_pairs, "bias"),
        "stereoset": Spec(bias.stereoset, "bias"),
        "bbq": Spec(bias.bbq, "bias"),
    }


TASK_NAMES = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "boolq", "mmlu", "gsm8k", "humaneval", "xsum",
              "truthfulqa", "realtoxicity", "crows_pairs", "stereoset", "bbq")


def check_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in TASK_NAMES]
    if unknown:
        raise ConfigError(f"unknown task {unknown[0]!r}; known tasks: {', '.join(TASK_NAMES)}")


def build(names: list[str], shots: int = 0, limit: int | None = None, seed: int = 0, batch_size: int = 8,
          root: str | Path | None = None, max_new_tokens: int | None = None, prompting: Any = None) -> list[Any]:
    """One Task per benchmark name, its data loaded now (so a missing package fails before any model loads)."""
    check_names(names)
    specs, tasks = task_specs(), []
    prompting = prompting or Prompting()
    for name in names:
        spec = specs[name]
        split = spec.loader(root=root)
        if spec.family != "bias":
            check_shots(name, shots, split)
        elif shots:
            raise ConfigError(f"--shots {shots}: task {name!r} is scored zero-shot (it has no few-shot pool)")
        if spec.family == "mc":
            tasks.append(MultipleChoiceTask(name, split, shots, limit, seed, batch_size, spec.description,
                                            prompting))
        elif spec.family == "gen":
            tasks.append(GenerationTask(name, split, shots, limit, seed, batch_size,
                                        max_new_tokens or spec.max_new_tokens, spec.stop, spec.metric,
                                        prompting))
        else:
            tasks.append(BiasTask(name, split, limit, batch_size))
    return tasks
