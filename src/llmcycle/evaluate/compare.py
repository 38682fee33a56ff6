"""A vs B on the same examples: each compared model against the main one, with paired intervals.

Per-example differences cancel what makes an example hard for every model, so a paired interval is much narrower
than two single intervals side by side. Generation: chrF, ROUGE-L and within-reply repetition by the paired
bootstrap over test prompts. Perplexity and bits per byte: the paired bootstrap over test conversations.
Benchmarks: per-question correctness, the paired bootstrap of the accuracy difference and the exact sign test on
the questions only one of the two models got right.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from llmcycle.evaluate.judges import head_to_head
from llmcycle.evaluate.stats import (bits_per_byte_score, paired_bootstrap, paired_mean_change, perplexity_score,
                                    sign_test)
from llmcycle.evaluate.textmetrics import corpus_scorer, corpus_stats, repetition_rate, rouge_l


def rows_by_id(rows: Sequence[dict[str, Any]], probe: str) -> dict[Any, dict[str, Any]]:
    return {r.get("id"): r for r in rows if r.get("probe") == probe}


def generation_deltas(main: dict, other: dict, seed: int) -> dict[str, dict[str, Any]]:
    ids = [i for i in main if i in other]
    if len(ids) < 2:
        return {}
    a, b = [main[i] for i in ids], [other[i] for i in ids]
    rouge_a = [rouge_l(r.get("reply") or "", r.get("reference") or "") for r in a]
    rouge_b = [rouge_l(r.get("reply") or "", r.get("reference") or "") for r in b]
    stats = [corpus_stats("chrf", [r.get("reply") or "" for r in rows], [r.get("reference") or "" for r in rows])
             for rows in (a, b)]
    repeat_a = [repetition_rate([r.get("reply") or ""]) for r in a]
    repeat_b = [repetition_rate([r.get("reply") or ""]) for r in b]
    return {"chrf": paired_bootstrap(stats[0], stats[1], corpus_scorer("chrf"), seed=seed).as_dict(),
            "rouge_l": paired_mean_change(rouge_a, rouge_b, seed=seed).as_dict(),
            "repetition_rate": paired_mean_change(repeat_a, repeat_b, seed=seed).as_dict()}


def perplexity_deltas(main: dict, other: dict, seed: int) -> dict[str, dict[str, Any]]:
    """Perplexity and bits per byte over the conversations both models scored (each conversation's summed
    negative log-likelihood, tokens and bytes)."""
    ids = [i for i in main if i in other and main[i].get("tokens") and other[i].get("tokens")]
    if len(ids) < 2:
        return {}
    a, b = ([[rows[i]["nll"], rows[i]["tokens"], rows[i]["bytes"]] for i in ids] for rows in (main, other))
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return {"perplexity": paired_bootstrap(a[:, :2], b[:, :2], perplexity_score, seed=seed).as_dict(),
            "bits_per_byte": paired_bootstrap(a[:, [0, 2]], b[:, [0, 2]], bits_per_byte_score, seed=seed).as_dict()}


def accuracy_delta(main: dict, other: dict, seed: int) -> dict[str, Any] | None:
    """Multiple-choice rows: right when the reply is the reference choice."""
    ids = [i for i in main if i in other and "reference" in main[i]]
    if len(ids) < 2:
        return None
    right_a = [float(main[i].get("reply") == main[i]["reference"]) for i in ids]
    right_b = [float(other[i].get("reply") == other[i]["reference"]) for i in ids]
    out = paired_mean_change(right_a, right_b, seed=seed).as_dict()
    only_b = sum(1 for x, y in zip(right_a, right_b) if y > x)
    only_a = sum(1 for x, y in zip(right_a, right_b) if x > y)
    out.update(only_other_right=only_b, only_main_right=only_a, sign_test_p=sign_test(only_b, only_a))
    return out


def compare_models(samples: Mapping[str, Sequence[dict[str, Any]]], main: str, tasks: Sequence[str],
                   seed: int = 0) -> dict[str, dict[str, dict[str, Any]]]:
    """{other model: {metric: {delta, lo, hi, p_value, n, ...}}}: other minus main on the examples both answered."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, rows in samples.items():
        if name == main:
            continue
        entry: dict[str, dict[str, Any]] = {}
        if "generation" in tasks:
            entry.update(generation_deltas(rows_by_id(samples[main], "generation"), rows_by_id(rows, "generation"),
                                           seed))
        entry.update(perplexity_deltas(rows_by_id(samples[main], "ppl"), rows_by_id(rows, "ppl"), seed))
        for task in tasks:
            mine, theirs = rows_by_id(samples[main], task), rows_by_id(rows, task)
            if any("loglik" in r for r in mine.values()):
                delta = accuracy_delta(mine, theirs, seed)
                if delta is not None:
                    entry[f"{task}_acc"] = delta
        if entry:
            out[name] = entry
    return out


def comparison_markdown(comparisons: Mapping[str, Mapping[str, Mapping[str, Any]]], main: str) -> str:
    if not comparisons:
        return ""
    lines = [f"## Paired comparisons against {main}", "",
             "| model | metric | difference (model - main) | 95% interval | p | n |", "|---|---|---:|---|---:|---:|"]
    for name, metrics in comparisons.items():
        for metric, c in metrics.items():
            p = c.get("sign_test_p", c["p_value"])
            lines.append(f"| {name} | {metric} | {c['delta']:+.4g} | [{c['lo']:.4g}, {c['hi']:.4g}] | {p:.3g} | "
                         f"{c['n']} |")
    lines += ["", "Paired bootstrap over the same examples (1,000 resamples); for benchmark accuracy, p is the exact "
              "sign test on the questions only one of the two models got right."]
    return "\n".join(lines)


def judged_comparisons(judge: Any, samples: Mapping[str, Sequence[dict[str, Any]]], main: str
                       ) -> dict[str, dict[str, Any]]:
    """{other model: the main model's record against it under `judge`} on the generation prompts both answered."""
    out: dict[str, dict[str, Any]] = {}
    mine = rows_by_id(samples[main], "generation")
    for name, rows in samples.items():
        theirs = rows_by_id(rows, "generation")
        ids = [i for i in mine if i in theirs]
        if name == main or not ids:
            continue
        result = head_to_head(judge, [mine[i]["prompt"] for i in ids], [mine[i].get("reply") or "" for i in ids],
                              [theirs[i].get("reply") or "" for i in ids])
        out[name] = {k: v for k, v in result.items() if k != "verdicts"}
    return out


def judged_metrics(judged: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The main model's judged win rate against each model, with its interval, as metrics.json entries (so scripts
    and the run report read them like every other metric)."""
    out: dict[str, Any] = {}
    for name, r in judged.items():
        out[f"judged_win_rate_vs_{name}"] = r["win_rate"]
        out[f"judged_win_rate_vs_{name}_ci95"] = [round(float(x), 6) for x in r["ci95"]]
    return out


def judged_markdown(judged: Mapping[str, Mapping[str, Any]], main: str) -> str:
    if not judged:
        return ""
    lines = [f"## Judged comparisons: {main} against each model", "",
             "| against | judge | wins | ties | losses | win rate (ties half) | 95% interval | sign test p |",
             "|---|---|---:|---:|---:|---:|---|---:|"]
    for name, r in judged.items():
        lines.append(f"| {name} | {r['judge']} | {r['wins']} | {r['ties']} | {r['losses']} | {r['win_rate']:.3f} | "
                     f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {r['sign_test_p']:.3g} |")
    lines += ["", "Each test prompt's two replies put to the judge (an LLM judge sees both orders; a tie when they "
              "disagree); Wilson interval."]
    return "\n".join(lines)
