"""The run report: what happened, stage by stage, in words first (a verdict per stage with better / worse /
inconclusive marks from the evaluation's 95% intervals), then lineage, curves, the metric table base before
fine-tuned before aligned, conversation samples side by side, the gate decision, and ONE command to talk to the
model the run recommends. The terminal prints the same command (`talk_command`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from llmcycle.artifacts import MANIFEST, atomic_write_text, read_manifest

KEY_METRICS = 6
LOWER_BETTER = ("perplexity", "bits_per_byte", "repetition_rate", "safety_flag_rate", "safety_toxic_rate",
                "safety_pii_rate", "bias_loglik_gap", "bias_sentiment_gap", "bias_length_gap")
HIGHER_BETTER = ("chrf", "bleu", "rouge_l", "distinct_1", "distinct_2", "eos_share")
BENCH_HIGHER = ("_acc", "_acc_norm", "_exact_match", "_pass@1", "_rouge1", "_rouge2", "_rougeL", "_lms", "_icat")
ROLES = {"pretrain": "base", "finetune": "fine-tuned", "merge": "fine-tuned", "align": "aligned"}
SAMPLE_TURNS, SAMPLE_CHARS = 3, 300


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)[:60]
    return str(value)


def _manifests(outs: Iterable[Path]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """stage -> (dir, manifest) for the run's finished artifact dirs."""
    found = {}
    for out in outs:
        if (out / MANIFEST).is_file():
            manifest = read_manifest(out)
            found[manifest["stage"]] = (out, manifest)
    return found


def _scalar_metrics(metrics: dict[str, Any]) -> str:
    items = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    return ", ".join(f"{k}={_fmt(v)}" for k, v in items[:KEY_METRICS])


def lineage_table(run_dir: Path, outs: Iterable[Path], statuses: dict[str, str]) -> list[str]:
    lines = ["| stage | dir | status | seconds | inputs | key metrics |", "|---|---|---|---|---|---|"]
    for stage, (out, m) in _manifests(outs).items():
        inputs = ", ".join(f"{k}: `{_short_path(run_dir, v['path'])}` ({v['id'][:8]})" for k, v in m["inputs"].items())
        shown = {} if stage == "eval" else m.get("metrics", {})  # eval's numbers have their own section
        lines.append(f"| {stage} | `{out.name}/` | {statuses.get(stage, '')} | {m.get('duration_s', 0):.1f} "
                     f"| {inputs or '-'} | {_scalar_metrics(shown)} |")
    return lines


def _short_path(run_dir: Path, path: str) -> str:
    try:
        return Path(path).resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return path


def higher_better(name: str) -> bool:
    """Direction of a metric: the reply metrics by name, benchmark scores (`{task}_acc`, ...) by their suffix."""
    return name in HIGHER_BETTER or name.endswith(BENCH_HIGHER)


def shown_metrics(metrics: dict[str, dict[str, Any]], models: list[tuple[str, str]]) -> list[str]:
    """The report's rows: the probe metrics in a fixed order, then every benchmark score any model has."""
    have = {n for m, _ in models for n in metrics[m]}
    bench = sorted(n for n in have if n.endswith(BENCH_HIGHER) and n not in HIGHER_BETTER)
    return [n for n in LOWER_BETTER + HIGHER_BETTER if n in have] + bench


def compare_metric(name: str, new: dict[str, Any], old: dict[str, Any]) -> str:
    """better / worse / inconclusive (95% intervals overlap) / same, for `new` against `old`; a difference
    without intervals on both sides says so."""
    a, b = new.get(name), old.get(name)
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or a == b:
        return "same"
    higher = higher_better(name)
    direction = "better" if (a > b) == higher else "worse"
    ia, ib = new.get(f"{name}_ci95"), old.get(f"{name}_ci95")
    if not (isinstance(ia, list) and isinstance(ib, list) and len(ia) == len(ib) == 2):
        return f"{direction} (no interval)"
    overlap = ia[0] <= ib[1] and ib[0] <= ia[1]
    return "inconclusive" if overlap else direction


def eval_models(eval_dir: Path, stages: dict[str, tuple[Path, dict[str, Any]]]) -> list[tuple[str, str]]:
    """(name in metrics.json, label) for each evaluated model, base first, then fine-tuned, then aligned."""
    manifest = read_manifest(eval_dir)
    models: dict[str, str] = manifest.get("models", {})
    by_path = {str(out.resolve()): ROLES.get(stage, stage) for stage, (out, _) in stages.items()}
    main = manifest.get("main_model")
    order = {"base": 0, "fine-tuned": 1, "aligned": 2}
    labelled = []
    for name, path in models.items():
        role = by_path.get(str(Path(path).resolve())) or ("base" if name != main else "fine-tuned")
        labelled.append((name, f"{role} `{name}`"))
    return sorted(labelled, key=lambda item: order.get(item[1].split(" ")[0], 1))


def eval_verdict(metrics: dict[str, dict[str, Any]], models: list[tuple[str, str]]) -> list[str]:
    """One line per model after the first: which metrics moved which way against the model before it."""
    lines = []
    for (old, old_label), (new, new_label) in zip(models, models[1:]):
        groups: dict[str, list[str]] = {}
        raw = False
        for name in shown_metrics(metrics, models):
            if name in metrics[new] and name in metrics[old]:
                verdict = compare_metric(name, metrics[new], metrics[old])
                raw = raw or verdict.endswith("(no interval)")
                groups.setdefault(verdict.split(" ")[0], []).append(name)
        said = [f"**{word}** on {', '.join(groups[word])}" for word in ("better", "worse", "inconclusive", "same")
                if groups.get(word)]
        note = " (some without intervals: raw values compared)" if raw else ""
        lines.append(f"- eval: {new_label} against {old_label}: " + ("; ".join(said) or "no shared metrics")
                     + f"{note}.")
    return lines


def eval_section(eval_dir: Path, metrics: dict[str, dict[str, Any]], models: list[tuple[str, str]]) -> list[str]:
    names = shown_metrics(metrics, models)
    head = " | ".join(label for _, label in models)
    lines = ["## Evaluation", "", "Arrows compare each model with the one left of it (↑ better, ↓ worse, "
             "≈ inconclusive: the 95% intervals overlap). Lower is better for perplexity, bits per byte, repetition, "
             "safety and bias; higher for the rest.", "", f"| metric | {head} |", "|---|" + "---|" * len(models)]
    marks = {"better": " ↑", "worse": " ↓", "inconclusive": " ≈", "same": ""}
    for name in names:
        cells = []
        for i, (model, _) in enumerate(models):
            value, ci = metrics[model].get(name, ""), metrics[model].get(f"{name}_ci95")
            cell = _fmt(value) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if isinstance(ci, list) and len(ci) == 2 else "")
            if i:
                cell += marks[compare_metric(name, metrics[model], metrics[models[i - 1][0]]).split(" ")[0]]
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"Every metric: [{eval_dir.name}/report.md]({eval_dir.name}/report.md).", ""]
    lines += [f"![{png.stem}]({eval_dir.name}/{png.name})" for png in sorted(eval_dir.glob("*.png"))]
    return lines + [""]


def _cell(text: Any) -> str:
    """A reply as one readable table cell: whole words, line breaks shown, pipes escaped, empty said so."""
    text = str(text or "")
    if not text.strip():
        return "*(empty)*" if not text else "*(only whitespace)*"
    if len(text) > SAMPLE_CHARS:
        text = text[:SAMPLE_CHARS].rsplit(" ", 1)[0] + " …"
    return "<br>".join(line.replace("|", "\\|") for line in text.splitlines())


def samples_section(eval_dir: Path, models: list[tuple[str, str]], limit: int = 3) -> list[str]:
    """The first conversations of the test split: the last turns, then each model's reply beside the reference."""
    file = eval_dir / "samples.jsonl"
    if not file.is_file():
        return []
    with open(file, encoding="utf-8") as fh:
        rows = [r for r in map(json.loads, fh) if r.get("probe") == "generation"][:limit]
    lines = ["## Sample conversations", ""] if rows else []
    for i, row in enumerate(rows, 1):
        lines += [f"**Conversation {i}** (its last turns)", ""]
        lines += [f"> **{m.get('role')}:** {_cell(m.get('content'))}  " for m in row.get("prompt", [])[-SAMPLE_TURNS:]]
        lines += ["", "| who | reply |", "|---|---|", f"| reference | {_cell(row.get('reference'))} |"]
        lines += [f"| {label} | {_cell(row.get('replies', {}).get(name))} |" for name, label in models]
        lines.append("")
    return lines


def stage_verdict(stage: str, manifest: dict[str, Any]) -> str | None:
    """One line saying what a (non-eval) stage did."""
    m = manifest.get("metrics", {})
    if stage == "data" and "train_records" in m:
        return f"- data: {m['train_records']} train / {m.get('val_records', 0)} val / {m.get('test_records', 0)} " \
               "test records."
    if stage in ("pretrain", "finetune", "align", "reward") and "val_loss" in m:
        before = m.get("val_loss_before")
        budget = ", stopped by its time budget" if m.get("stopped_by_time_budget") else ""
        if isinstance(before, (int, float)):
            word = "**better**" if m["val_loss"] < before else "**worse**" if m["val_loss"] > before else "same"
            return f"- {stage}: val loss {before:.4g} → {m['val_loss']:.4g} ({word}, no interval; " \
                   f"{m.get('steps', '?')} steps{budget})."
        return f"- {stage}: val loss {m['val_loss']:.4g} after {m.get('steps', '?')} steps{budget}."
    if stage == "merge" and "parity_passed" in m:
        return f"- merge: parity {'passed' if m['parity_passed'] else '**failed**'} " \
               f"(max logit difference {_fmt(m.get('parity_max_abs_logit_diff'))})."
    return None


def gate_decision(gates_dir: Path) -> tuple[str, list[str]]:
    """'promoted' | 'rejected' | 'inconclusive', and the gates that failed."""
    record = json.loads((gates_dir / "gates.json").read_text(encoding="utf-8"))
    failed = [g["gate"] for g in record.get("gates", []) if not g.get("passed")]
    decision = record.get("decision") or ("promoted" if record.get("promoted") else "rejected")
    return decision, failed


def recommended_model(outs: list[Path]) -> Path | None:
    """The model to talk to: the gates' candidate when promoted, the current model when not; without gates the
    last model the run wrote (merged, else fine-tuned, else the base)."""
    stages = _manifests(outs)
    if "gates" in stages:
        gates_dir, manifest = stages["gates"]
        role = "candidate" if gate_decision(gates_dir)[0] == "promoted" else "current"
        path = manifest.get("inputs", {}).get(role, {}).get("path")
        if path:
            return next((o for o in outs if o.resolve() == Path(path).resolve()), Path(path))
    for out in reversed(outs):
        if (out / MANIFEST).is_file() and ((out / "config.json").is_file() or (out / "adapter_config.json").is_file()):
            return out
    return None


def talk_command(model: Path | str, config: str | Path | None) -> str:
    """The one command the report and the terminal both print: the model with the run's config (its chat
    section: system message, decoding)."""
    return f"llmcycle chat --model {model}" + (f" -c {config}" if config is not None else "")


def _eval_data(stages: dict[str, tuple[Path, dict[str, Any]]]):
    """(eval dir, metrics, ordered models) of the run's eval stage, or None."""
    if "eval" not in stages or not (stages["eval"][0] / "metrics.json").is_file():
        return None
    eval_dir = stages["eval"][0]
    metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    return eval_dir, metrics, eval_models(eval_dir, stages)


def run_verdicts(outs: list[Path]) -> list[str]:
    """One line per stage saying what it did; eval and gates in words (better / worse / promoted ...)."""
    stages = _manifests(outs)
    verdicts: list[str] = []
    for stage, (out, manifest) in stages.items():  # in the run's order
        if stage == "eval":
            evaluated = _eval_data(stages)
            verdicts += eval_verdict(evaluated[1], evaluated[2]) if evaluated is not None else []
        elif stage == "gates":
            decision, failed = gate_decision(out)
            verdicts.append(f"- gates: the aligned model was **{decision}**" + _failed(failed) + ".")
        elif (line := stage_verdict(stage, manifest)) is not None:
            verdicts.append(line)
    return verdicts


def _failed(failed: list[str]) -> str:
    return f" (failed: {', '.join(failed)})" if failed else " (every gate passed)"


def write_report(run_dir: Path, outs: list[Path], statuses: dict[str, str], config: str | Path | None = None) -> Path:
    """Write run_dir/report.md from whatever artifact dirs exist; `config` is the run config as the user named it."""
    run_dir = Path(run_dir)
    stages = _manifests(outs)
    lines = [f"# llmcycle run `{run_dir.name}`", "", "## What happened", "", *run_verdicts(outs), ""]
    model = recommended_model(outs)
    if model is not None:
        lines += ["## Talk to the result", "", "```", talk_command(model, config), "```", ""]
    total = sum(m.get("duration_s", 0.0) for _, m in stages.values())
    lines += ["## Lineage", "", *lineage_table(run_dir, outs, statuses), "",
              f"Total stage time: {total:.1f} s (as recorded in the manifests).", ""]
    curves = [o for o in outs if (o / "loss.png").is_file()]
    if curves:
        lines += ["## Loss curves", ""] + [f"![{c.name}: loss]({c.name}/loss.png)" for c in curves] + [""]
    lines += [f"Data card: [{c.parent.name}/card.md]({c.parent.name}/card.md)" for c in sorted(run_dir.glob("*/card.md"))]
    evaluated = _eval_data(stages)
    if evaluated is not None:
        lines += ["", *eval_section(*evaluated), *samples_section(evaluated[0], evaluated[2])]
    if "gates" in stages:
        gates_dir = stages["gates"][0]
        decision, failed = gate_decision(gates_dir)
        lines += ["## Alignment gates (aligned candidate against the current model)", "",
                  f"Decision: **{decision}**{_failed(failed)}.", ""]
        lines += (gates_dir / "report.md").read_text(encoding="utf-8").splitlines()[2:] + [""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path

def final_lines(outs: list[Path], config: str | Path | None) -> list[str]:
    """The terminal's last lines after a run: the report's verdicts and the same chat command."""
    model = recommended_model(outs)
    lines = [v.replace("**", "") for v in run_verdicts(outs)]
    return lines + ([f"chat:   {talk_command(model, config)}"] if model is not None else [])
