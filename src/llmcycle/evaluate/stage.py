"""The `eval` stage: one model (plus any to compare) measured on the same examples -> EVAL_DIR.

Models are loaded one at a time through the shared engine, so comparing a base, a fine-tuned and a merged model
needs the memory of one.
"""

from __future__ import annotations

import gc
import math
import random
import time
from functools import partial
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

from pydantic import Field

from llmcycle.artifacts import atomic_write_text, open_artifact
from llmcycle.config import StageConfig, to_dict
from llmcycle.errors import ConfigError, DataError
from llmcycle.infer.decoding import knob
from llmcycle.progress import say
from llmcycle.records import check_chat, load_split, read_jsonl, split_path
from llmcycle.safety.sandbox import require_isolation
from llmcycle.evaluate.bench import build
from llmcycle.evaluate.bench.report import write_bench_section
from llmcycle.evaluate.bias import BiasTask, load_pairs
from llmcycle.evaluate.compare import (
    compare_models, comparison_markdown, judged_comparisons, judged_markdown, judged_metrics,
)
from llmcycle.evaluate.generation import GenerationTask, prompts_from
from llmcycle.evaluate.intervals import PerplexityWithIntervals, task_intervals
from llmcycle.evaluate.judges import load_judge
from llmcycle.evaluate.report import write_all
from llmcycle.evaluate.reproduce import record
from llmcycle.evaluate.safety import FLAGGER_NOTE, SafetyTask, load_prompts
from llmcycle.evaluate.tasks import Subject
from llmcycle.infer import Engine, GenerationSettings
from llmcycle.loading import check_exists

PROBES = ("ppl", "generation", "safety", "bias")
Probe = Literal["ppl", "generation", "safety", "bias"]
CODE_TASKS = ("humaneval",)  # benchmarks that execute what the model wrote
INTERVALS_NOTE = ("[lo, hi]: 95% intervals (metrics.json: `<metric>_ci95`); rates and accuracies: Wald with "
                  "lm-eval's standard error, Wilson when n·p·(1-p) < 9; corpus metrics (BLEU, chrF, ROUGE-L, "
                  "perplexity): seeded percentile bootstrap over test conversations, 1,000 resamples")
UNIGRAM_TRAIN_RECORDS = 2000  # enough to estimate token frequencies, bounded for big corpora


class EvalConfig(StageConfig):
    probes: list[Probe] = Field(default_factory=lambda: list(PROBES), min_length=1,
                                description="Which probes to run: ppl, generation, safety, bias.")
    max_examples: int = Field(64, ge=1, description="Test prompts answered for the generation metrics.")
    max_ppl_records: int = Field(200, ge=1, description="Test records scored for perplexity.")
    max_ppl_chars: int = Field(60_000, ge=1, description="Characters of test records scored for perplexity: "
                               "bounds its time when records are long conversations.")
    max_safety_prompts: int | None = Field(None, ge=1, description="Cap on shipped safety prompts (None = all).")
    max_bias_pairs: int | None = Field(None, ge=1, description="Cap on shipped bias pairs (None = all).")
    safety_prompts: str | None = Field(None, description="Your own safety prompts JSONL instead of the shipped set.")
    bias_pairs: str | None = Field(None, description="Your own bias pairs JSONL instead of the shipped set.")
    max_new_tokens: int = knob("max_new_tokens", 48)
    temperature: float = knob("temperature", 0.0, description="0 = greedy (the default: comparable, repeatable).")
    top_k: int = knob("top_k", 0)
    top_p: float = knob("top_p", 1.0)
    repetition_penalty: float = knob("repetition_penalty", 1.0)
    batch_size: int = Field(16, ge=1)
    tasks: list[str] = Field(default_factory=list, description="Benchmarks to run (llmcycle.evaluate.bench), "
                             "e.g. arc_easy, gsm8k; with no data dir only these run.")
    shots: int = Field(0, ge=0, description="Few-shot examples per benchmark question (from its few-shot pool).")
    limit: int | None = Field(None, ge=1, description="Questions per benchmark (the first N, as lm-eval's --limit).")
    bench_root: str | None = Field(None, description="A dir laid out like the benchmark packages, read instead "
                                   "of the installed ones.")
    allow_unsafe_exec: bool = Field(False, description="Run benchmark-generated code (HumanEval) even where the "
                                    "machine cannot isolate it in the OS sandbox (namespaces + rlimits).")
    seed: int = knob("seed", 0)
    device: str = "cpu"
    dtype: str = "auto"
    quantize: Optional[str] = Field(None, description="Weight-only quantization of every evaluated model: bf16, "
                                    "int8, int4 or int4:GROUP (what `chat`/`serve --quantize` run).")
    judge: Optional[str] = Field(None, description="A judge for pairwise comparisons of the main model's replies "
                                 "against each compared model's: a reward model dir, a local model dir or GGUF "
                                 "(LLM judge) or an OpenAI-compatible URL such as `llmcycle serve`'s.")


def settings_for(cfg: EvalConfig) -> Any:

    return GenerationSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                              top_p=cfg.top_p, repetition_penalty=cfg.repetition_penalty, seed=cfg.seed)


def sample(rows: Sequence[Any], limit: int | None, seed: int) -> list[Any]:
    """At most `limit` rows, a seeded random choice kept in file order (the same rows for every model)."""
    if limit is None or len(rows) <= limit:
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


def record_chars(record: dict[str, Any]) -> int:
    if isinstance(record.get("messages"), list):
        return sum(len(str(m.get("content", ""))) for m in record["messages"] if isinstance(m, dict))
    return len(str(record.get("text", "")))


def within_chars(records: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The leading records whose text fits `budget` characters (at least one): a cap that does not depend on any
    model's tokenizer, so every compared model scores the same records."""
    kept, used = [], 0
    for record in records:
        used += record_chars(record)
        if kept and used > budget:
            break
        kept.append(record)
    return kept


def read_test_split(data_dir: str | Path) -> list[dict[str, Any]]:
    """The test records, each checked up front so a bad one is reported by file and line, not mid-evaluation."""
    path = split_path(data_dir, "test")
    records = []
    for lineno, record in read_jsonl(path):
        where = f"{path}:{lineno}"
        if "messages" in record:
            check_chat(record, where)
        elif not isinstance(record.get("text"), str):
            raise DataError(f"{where}: record has neither 'messages' nor 'text'")
        records.append(record)
    if not records:
        raise DataError(f"{path}: the test split is empty")
    return records


def build_tasks(cfg: EvalConfig, data_dir: str | Path | None, notes: list[str]) -> list[Any]:
    """The selected probes and benchmarks, each holding the exact examples every model will see."""
    if any(t in CODE_TASKS for t in cfg.tasks):
        require_isolation(cfg.allow_unsafe_exec)  # before any model runs: refuse now, not after generating
    bench = build(cfg.tasks, cfg.shots, cfg.limit, cfg.seed, cfg.batch_size, cfg.bench_root) if cfg.tasks else []
    for task in bench:
        if task.name in CODE_TASKS:
            task.metric = partial(task.metric, allow_unsafe=cfg.allow_unsafe_exec)
    if cfg.tasks:
        notes.append(f"benchmarks: {', '.join(cfg.tasks)}; {cfg.shots}-shot, "
                     f"{'all' if cfg.limit is None else f'the first {cfg.limit}'} questions each")
    return bench if data_dir is None else probe_tasks(cfg, data_dir, notes) + bench


def probe_tasks(cfg: EvalConfig, data_dir: str | Path | None, notes: list[str]) -> list[Any]:
    """The selected probes on DATA_DIR's test split and the shipped prompts (safety and bias need no data dir)."""
    needs_data = [p for p in cfg.probes if p in ("ppl", "generation")]
    if data_dir is None and needs_data:
        raise ConfigError(f"probe {needs_data[0]!r} needs a data dir with a test split (--data)")
    test = read_test_split(data_dir) if data_dir is not None else []
    tasks: list[Any] = []
    if "ppl" in cfg.probes:
        train = []
        if (Path(data_dir) / "train.jsonl").is_file():
            train = sample(load_split(data_dir, "train"), UNIGRAM_TRAIN_RECORDS, cfg.seed)
        records = within_chars(sample(test, cfg.max_ppl_records, cfg.seed), cfg.max_ppl_chars)
        tasks.append(PerplexityWithIntervals(records, train, cfg.batch_size, cfg.seed))
        notes.append(f"perplexity: {len(records)} of {len(test)} test records (max_ppl_records, max_ppl_chars); "
                     "assistant replies with their end-of-turn token, and text records, are scored; unigram "
                     f"baseline fitted on {len(train)} train records")
    settings = settings_for(cfg) if {"generation", "safety", "bias"} & set(cfg.probes) else None
    decoding = "greedy" if cfg.temperature == 0 else f"temperature {cfg.temperature}, top_p {cfg.top_p}"
    if "generation" in cfg.probes:
        prompts = sample(prompts_from(test), cfg.max_examples, cfg.seed)
        if prompts:
            tasks.append(GenerationTask(prompts, settings, cfg.batch_size))
            notes.append(f"generation: {len(prompts)} test conversations cut before their last assistant turn, "
                         f"which is the reference; {decoding} decoding, at most {cfg.max_new_tokens} new tokens")
        else:
            notes.append("generation metrics skipped: the test split has no chat record with an assistant turn")
    if "safety" in cfg.probes:
        prompts = sample(load_prompts(cfg.safety_prompts), cfg.max_safety_prompts, cfg.seed)
        tasks.append(SafetyTask(prompts, settings, cfg.batch_size))
        notes.append(f"safety: {len(prompts)} adversarial prompts")
    if "bias" in cfg.probes:
        pairs = sample(load_pairs(cfg.bias_pairs), cfg.max_bias_pairs, cfg.seed)
        tasks.append(BiasTask(pairs, settings, cfg.batch_size))
        notes.append(f"bias: {len(pairs)} counterfactual pairs; signed gaps are side a minus side b")
    return tasks


def model_names(paths: Sequence[str]) -> list[str]:
    """Short, unique display names: the dir name, widened with its parent (then a number) on clashes."""
    names = [Path(p).name or str(p) for p in paths]
    clashing = {n for n in names if names.count(n) > 1}
    for i, path in enumerate(paths):
        if names[i] in clashing:
            parent = Path(path).resolve().parent.name
            names[i] = f"{parent}/{names[i]}" if parent else names[i]
    clashing = {n for n in names if names.count(n) > 1}
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in clashing:
            seen[name] = seen.get(name, 0) + 1
            names[i] = f"{name}#{seen[name]}"
    return names


def evaluate_model(name: str, path: str, tasks: Sequence[Any], cfg: EvalConfig, timings: dict[str, float],
                   dtypes: dict[str, str]) -> tuple[dict[str, float], list]:
    """Load one model through the engine and run every task on it; seconds per step go into `timings`."""
    import torch


    say(f"eval: {name} ({path})")
    start = time.perf_counter()
    engine = Engine.load(path, device=cfg.device, dtype=cfg.dtype, quantize=cfg.quantize)
    timings["load"] = round(time.perf_counter() - start, 3)
    dtypes[name] = str(getattr(engine.model, "dtype", cfg.dtype)).replace("torch.", "") + (
        f" ({cfg.quantize})" if cfg.quantize else "")
    subject = Subject(name, str(path), engine)
    metrics: dict[str, float] = {}
    samples: list[dict[str, Any]] = []
    for task in tasks:
        torch.manual_seed(cfg.seed)
        start = time.perf_counter()
        result = task.evaluate(subject)
        timings[task.name] = round(time.perf_counter() - start, 3)
        metrics.update(result.metrics)
        metrics.update(task_intervals(task.name, result, cfg.seed))
        samples.extend(result.samples)
    del subject, engine
    gc.collect()
    return metrics, samples


def finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN: a metric that could not be computed is null."""
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()}


def write_comparisons(out: Path, samples: dict[str, list], main: str, tasks: list[str], seed: int) -> dict:
    """Each compared model against the main one (paired intervals), appended to report.md."""
    comparisons = compare_models(samples, main, tasks, seed)
    section = comparison_markdown(comparisons, main)
    if section:
        report = out / "report.md"
        atomic_write_text(report, report.read_text(encoding="utf-8") + "\n" + section + "\n")
    return comparisons


def judge_models(judge: Any, samples: dict[str, list], main: str) -> dict:
    """The main model against each compared one under the judge (generation prompts)."""
    say(f"eval: judging replies with {judge.name}")
    return judged_comparisons(judge, samples, main)


def write_judged(out: Path, judged: dict, main: str) -> None:
    """The judged comparisons' section, appended to report.md."""
    section = judged_markdown(judged, main)
    if section:
        report = out / "report.md"
        atomic_write_text(report, report.read_text(encoding="utf-8") + "\n" + section + "\n")


def contamination_note(data_dir: str | Path | None) -> list[str]:
    """The data card's contamination findings, per eval set, so a score can be read next to them."""
    import json

    card = Path(data_dir) / "card.json" if data_dir is not None else None
    if card is None or not card.is_file():
        return []
    section = json.loads(card.read_text(encoding="utf-8")).get("contamination")
    if not section:
        return ["contamination: not checked when this data dir was built (data.decontaminate: off)"]
    found = [f"{name} {v['contaminated_items']} of {v['items']} items ({v['train_records']} train records)"
             for name, v in section["eval_sets"].items() if v["contaminated_items"]]
    return [f"contamination (data card): {section['train_records_flagged']} of {section['train_records_checked']} "
            f"train records hold an eval item, {section['train_records_dropped']} dropped; "
            + ("; ".join(found) if found else "no eval set has a contaminated item")
            + f"; checked: {', '.join(section['eval_sets'])}"]


def run(cfg: EvalConfig, model: str | Path, data_dir: str | Path | None, out: str | Path,
        compare: Sequence[str | Path] = ()) -> Path:
    """The `eval` stage: MODEL (and every COMPARE model) on DATA_DIR's test split and the shipped probes -> OUT."""
    paths = [str(model)] + [str(c) for c in compare]
    for path in paths:
        check_exists(path)
    judge = None
    if cfg.judge:
        if not compare:
            raise ConfigError("eval: a judge compares models: give --compare MODEL as well")
        judge = load_judge(cfg.judge)  # before any model runs: a judge that cannot load fails now
    notes: list[str] = contamination_note(data_dir)
    tasks = build_tasks(cfg, data_dir, notes)
    if any(t.name == "safety" for t in tasks):
        notes.append(FLAGGER_NOTE)
    notes.append(INTERVALS_NOTE)
    names = model_names(paths)
    inputs = {"model": paths[0]}
    if data_dir is not None:
        inputs["data"] = str(data_dir)
    inputs.update({f"compare_{i + 1}": p for i, p in enumerate(paths[1:])})
    with open_artifact(out, "eval", to_dict(cfg), inputs) as art:
        metrics, samples, timings, dtypes = {}, {}, {}, {}
        for name, path in zip(names, paths):
            timings[name] = {}
            values, rows = evaluate_model(name, path, tasks, cfg, timings[name], dtypes)
            metrics[name], samples[name] = finite(values), rows
        judged = judge_models(judge, samples, names[0]) if judge is not None else {}
        metrics[names[0]].update(judged_metrics(judged))
        charts = write_all(art.dir, metrics, dict(zip(names, paths)), samples, notes)
        if cfg.tasks:
            charts += write_bench_section(art.dir, metrics, [t.name for t in tasks])
        comparisons = write_comparisons(art.dir, samples, names[0], [t.name for t in tasks], cfg.seed)
        write_judged(art.dir, judged, names[0])
        art.metrics = metrics
        art.extra = {"models": dict(zip(names, paths)), "main_model": names[0], "charts": charts,
                     "timings": timings, "comparisons": comparisons, "judged": judged,
                     "reproducibility": record(settings_for(cfg), cfg.seed, dict(zip(names, paths)), dtypes, data_dir,
                                               [t.name for t in tasks])}
    say(f"eval: wrote {Path(out) / 'report.md'}")
    return Path(out)
