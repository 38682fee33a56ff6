"""The run report: what happened, stage by stage, in words first (a verdict per stage with better / worse /
inconclusive marks from the evaluation's 95% intervals), then lineage, curves, the metric table base before
fine-tuned before aligned, conversation samples side by side, the gate decision, and ONE command to talk to the
model the run recommends. The terminal prints the same command (`talk_command`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from llmcycle.artifacts import MANIFEST, atomic_write_text, read_manifest
from llmcycle.evaluate.stats import Interval
from llmcycle.evaluate.training import loss_change, stage_intervals

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


def key_metrics(metrics: dict[str, Any]) -> str:
    """A stage's key metrics for the lineage table: words and counts as they are, measured numbers with their 95%
    interval (recorded beside them as `<metric>_ci95`, or from what the stage recorded for one); a measured number
    without an interval is left to the manifest rather than shown bare."""
    intervals: dict[str, Interval] = stage_intervals(metrics)
    for key, ci in metrics.items():
        name = key[: -len("_ci95")]
        if key.endswith("_ci95") and isinstance(ci, list) and len(ci) == 2 and isinstance(metrics.get(name), float):
            intervals[name] = Interval(metrics[name], float(ci[0]), float(ci[1]), 0, "recorded")
    items = []
    for key, value in metrics.items():
        if isinstance(value, bool) or key.endswith("_ci95"):
            continue
        if isinstance(value, (str, int)):
            items.append(f"{key}={_fmt(value)}")
        elif isinstance(value, float) and key in intervals:
            items.append(f"{key}={with_interval(value, intervals[key])}")
    return ", ".join(items[:KEY_METRICS])


def lineage_table(run_dir: Path, outs: Iterable[Path], statuses: dict[str, str]) -> list[str]:
    lines = ["| stage | dir | status | seconds | inputs | key metrics |", "|---|---|---|---|---|---|"]
    for stage, (out, m) in _manifests(outs).items():
        inputs = ", ".join(f"{k}: `{_short_path(run_dir, v['path'])}` ({v['id'][:8]})" for k, v in m["inputs"].items())
        shown = {} if stage == "eval" else m.get("metrics", {})  # eval's numbers have their own section
        lines.append(f"| {stage} | `{out.name}/` | {statuses.get(stage, '')} | {m.get('duration_s', 0):.1f} "
                     f"| {inputs or '-'} | {key_metrics(shown)} |")
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


def compare_metric(name: str, new: dict[str, Any], old: dict[str, Any],
                   paired: Optional[Sequence[float]] = None) -> str:
    """better / worse / inconclusive / same, for `new` against `old`. With `paired` (the 95% interval of new - old
    on the same examples) the change decides: inconclusive when it holds 0. Otherwise the two models' own intervals
    do, inconclusive when they overlap (a weaker test: overlapping intervals can still differ); a difference
    without intervals on both sides says so."""
    a, b = new.get(name), old.get(name)
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or a == b:
        return "same"
    higher = higher_better(name)
    direction = "better" if (a > b) == higher else "worse"
    if paired is not None:
        return "inconclusive" if paired[0] <= 0 <= paired[1] else direction
    ia, ib = new.get(f"{name}_ci95"), old.get(f"{name}_ci95")
    if not (isinstance(ia, list) and isinstance(ib, list) and len(ia) == len(ib) == 2):
        return f"{direction} (no interval)"
    overlap = ia[0] <= ib[1] and ib[0] <= ia[1]
    return "inconclusive" if overlap else direction


Paired = dict[tuple[str, str], dict[str, tuple[float, float]]]


def paired_changes(eval_dir: Path) -> Paired:
    """{(old, new): {metric: new - old's paired 95% interval}} from the eval's comparisons, which hold each other
    model minus the main one on the same examples (the sign flips when the main model is the old one)."""
    manifest = read_manifest(eval_dir)
    main, out = manifest.get("main_model"), {}
    for other, metrics in (manifest.get("comparisons") or {}).items():
        for metric, c in metrics.items():
            if isinstance(c.get("lo"), (int, float)) and isinstance(c.get("hi"), (int, float)):
                out.setdefault((main, other), {})[metric] = (c["lo"], c["hi"])
                out.setdefault((other, main), {})[metric] = (-c["hi"], -c["lo"])
    return out


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


def eval_verdict(metrics: dict[str, dict[str, Any]], models: list[tuple[str, str]],
                 paired: Optional[Paired] = None) -> list[str]:
    """One line per model after the first: which metrics moved which way against the model before it."""
    lines = []
    for (old, old_label), (new, new_label) in zip(models, models[1:]):
        groups: dict[str, list[str]] = {}
        raw = False
        changes = (paired or {}).get((old, new), {})
        for name in shown_metrics(metrics, models):
            if name in metrics[new] and name in metrics[old]:
                verdict = compare_metric(name, metrics[new], metrics[old], changes.get(name))
                raw = raw or verdict.endswith("(no interval)")
                groups.setdefault(verdict.split(" ")[0], []).append(name)
        said = [f"**{word}** on {', '.join(groups[word])}" for word in ("better", "worse", "inconclusive", "same")
                if groups.get(word)]
        note = " (some without intervals: raw values compared)" if raw else ""
        lines.append(f"- eval: {new_label} against {old_label}: " + ("; ".join(said) or "no shared metrics")
                     + f"{note}.")
    return lines


def eval_section(eval_dir: Path, metrics: dict[str, dict[str, Any]], models: list[tuple[str, str]],
                 paired: Optional[Paired] = None) -> list[str]:
    names = shown_metrics(metrics, models)
    head = " | ".join(label for _, label in models)
    lines = ["## Evaluation", "", "Arrows compare each model with the one left of it (↑ better, ↓ worse, "
             "≈ inconclusive). Where the eval paired the two models on the same examples (perplexity, bits per byte, "
             "chrF, ROUGE-L, repetition, benchmark accuracy) the 95% interval of the change decides; "
             "elsewhere the models' own 95% intervals, inconclusive when they overlap. Lower is better for "
             "perplexity, bits per byte, repetition, safety and bias; higher for the rest.", "",
             f"| metric | {head} |", "|---|" + "---|" * len(models)]
    marks = {"better": " ↑", "worse": " ↓", "inconclusive": " ≈", "same": ""}
    for name in names:
        cells = []
        for i, (model, _) in enumerate(models):
            value, ci = metrics[model].get(name, ""), metrics[model].get(f"{name}_ci95")
            cell = _fmt(value) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if isinstance(ci, list) and len(ci) == 2 else "")
            if i:
                change = (paired or {}).get((models[i - 1][0], model), {}).get(name)
                cell += marks[compare_metric(name, metrics[model], metrics[models[i - 1][0]], change).split(" ")[0]]
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
        return f"- {stage}: {training_line(m)}{held_out_line(m)}."
    if stage == "merge" and "parity_passed" in m:
        return f"- merge: parity {'passed' if m['parity_passed'] else '**failed**'} " \
               f"(max logit difference {_fmt(m.get('parity_max_abs_logit_diff'))})."
    return None


def with_interval(value: Any, interval: Interval | None) -> str:
    """`value [lo, hi]`, or `value (no interval)` for a number whose stage did not record what one needs."""
    if interval is None or not (math.isfinite(interval.lo) and math.isfinite(interval.hi)):
        return f"{_fmt(value)} (no interval)"
    return f"{_fmt(value)} [{_fmt(interval.lo)}, {_fmt(interval.hi)}]"


def training_line(m: dict[str, Any]) -> str:
    """A training stage's val loss with its interval over validation batches; a loss before -> after in words
    from the paired interval of its change on the same batches."""
    intervals = stage_intervals(m)
    budget = ", stopped by its time budget" if m.get("stopped_by_time_budget") else ""
    budget = ", stopped in time for the rest of the run" if m.get("stopped_by_run_deadline") else budget
    steps = f"{m.get('steps', '?')} steps{budget}"
    after = with_interval(m["val_loss"], intervals.get("val_loss"))
    before = m.get("val_loss_before")
    if not isinstance(before, (int, float)):
        ppl = m.get("val_perplexity")
        shown = f" (perplexity {with_interval(ppl, intervals.get('val_perplexity'))})" if ppl is not None else ""
        return f"val loss {after}{shown} after {steps}"
    change = loss_change(m)
    if change is None:
        word = "**better**" if m["val_loss"] < before else "**worse**" if m["val_loss"] > before else "same"
        return f"val loss {before:.4g} → {m['val_loss']:.4g} ({word}, no interval; {steps})"
    word = "**better**" if change.hi < 0 else "**worse**" if change.lo > 0 else "within the noise"
    return (f"val loss {with_interval(before, intervals.get('val_loss_before'))} → {after} ({word}: change "
            f"{change.value:+.4g} [{change.lo:+.4g}, {change.hi:+.4g}] on the same {change.n} validation batches; "
            f"{steps})")


def held_out_line(m: dict[str, Any]) -> str:
    """A reward model's held-out pairwise accuracy, a preference policy's validation margin and pair accuracy,
    each with its interval ('' for other stages)."""
    intervals = stage_intervals(m)
    if "val_pairwise_accuracy" in m:
        before = m.get("val_pairwise_accuracy_before")
        shown = f"{with_interval(before, intervals.get('val_pairwise_accuracy_before'))} → " if before is not None \
            else ""
        return (f"; held-out pairwise accuracy {shown}"
                f"{with_interval(m['val_pairwise_accuracy'], intervals.get('val_pairwise_accuracy'))} on "
                f"{m.get('val_pairs', '?')} pairs")
    if "margin_after" in m:
        margin = intervals.get("margin_after")
        word = "" if margin is None else " (**rose**)" if margin.lo > m.get("margin_before", 0.0) else \
            " (**fell**)" if margin.hi < m.get("margin_before", 0.0) else " (within the noise)"
        accuracy = m.get("pair_accuracy_after")
        pairs = f", pair accuracy {with_interval(accuracy, intervals.get('pair_accuracy_after'))}" \
            if accuracy is not None else ""
        return (f"; validation margin {_fmt(m.get('margin_before', 0.0))} → "
                f"{with_interval(m['margin_after'], margin)}{word} on {m.get('pairs_after', '?')} pairs{pairs}")
    return ""


def gate_decision(gates_dir: Path) -> tuple[str, list[str]]:
    """'promoted' | 'rejected' | 'inconclusive', and the gates that did not pass: failed ones by name, the others
    with their status ('win_rate inconclusive'), so a reject names what failed and not what was only too close."""
    record = json.loads((gates_dir / "gates.json").read_text(encoding="utf-8"))
    gates = [g for g in record.get("gates", []) if not g.get("passed")]
    failed = [g["gate"] for g in gates if g.get("status", "fail") == "fail"]
    failed += [f"{g['gate']} {g['status']}" for g in gates if g.get("status", "fail") != "fail"]
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
    """(eval dir, metrics, ordered models, paired changes) of the run's eval stage, or None."""
    if "eval" not in stages or not (stages["eval"][0] / "metrics.json").is_file():
        return None
    eval_dir = stages["eval"][0]
    metrics = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
    return eval_dir, metrics, eval_models(eval_dir, stages), paired_changes(eval_dir)


def run_verdicts(outs: list[Path]) -> list[str]:
    """One line per stage saying what it did; eval and gates in words (better / worse / promoted ...)."""
    stages = _manifests(outs)
    verdicts: list[str] = []
    for stage, (out, manifest) in stages.items():  # in the run's order
        if stage == "eval":
            evaluated = _eval_data(stages)
            verdicts += eval_verdict(*evaluated[1:]) if evaluated is not None else []
        elif stage == "gates":
            decision, failed = gate_decision(out)
            verdicts.append(f"- gates: the aligned model was **{decision}**" + _failed(failed) + win_line(out) + ".")
        elif (line := stage_verdict(stage, manifest)) is not None:
            verdicts.append(line)
    return verdicts


def win_line(gates_dir: Path) -> str:
    """'; win rate 0.48 [0.39, 0.58] on 64 prompts under <judge>' from gates.json ('' when it holds none)."""
    record = json.loads((gates_dir / "gates.json").read_text(encoding="utf-8"))
    win = next((g for g in record.get("gates", []) if g.get("gate") == "win_rate" and "ci95" in g), None)
    if win is None:
        return ""
    lo, hi = win["ci95"]
    return f"; win rate {_fmt(win['candidate'])} [{_fmt(lo)}, {_fmt(hi)}] on {win.get('n', '?')} prompts under " \
           f"{win.get('judge', 'the judge')}"


def _failed(failed: list[str]) -> str:
    return f" (not passed: {', '.join(failed)})" if failed else " (every gate passed)"


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
