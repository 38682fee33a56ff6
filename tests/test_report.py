"""The run report says what happened: verdicts with direction marks from intervals, base before fine-tuned,
readable samples, the gate decision in words, and one chat command naming the model the run recommends (the
promoted candidate, or the current model when the gates rejected it) with the run's config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmcycle.report import compare_metric, final_lines, recommended_model, write_report


def artifact(run: Path, name: str, stage: str, inputs: dict[str, Path] | None = None, **extra) -> Path:
    out = run / name
    out.mkdir(parents=True)
    manifest = {"stage": stage, "inputs": {k: {"path": str(v), "id": "0" * 16} for k, v in (inputs or {}).items()},
                "metrics": extra.pop("metrics", {}), "duration_s": 1.0, **extra}
    (out / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    if stage in ("finetune", "merge", "align"):
        (out / "config.json").write_text("{}", encoding="utf-8")
    return out


def closed_loop_run(tmp_path: Path, promoted: bool) -> tuple[Path, list[Path]]:
    run = tmp_path / "run"
    merged = artifact(run, "merged", "merge", metrics={"parity_passed": True, "parity_max_abs_logit_diff": 1e-7})
    eval_dir = artifact(run, "eval", "eval", models={"merged": str(merged), "gpt2": "gpt2"}, main_model="merged")
    metrics = {"merged": {"perplexity": 20.0, "perplexity_ci95": [18.0, 22.0], "chrf": 10.0,
                          "chrf_ci95": [8.0, 12.0]},
               "gpt2": {"perplexity": 30.0, "perplexity_ci95": [27.0, 33.0], "chrf": 11.0, "chrf_ci95": [9.0, 13.0]}}
    (eval_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    prompt = [{"role": "user", "content": "hello | there\nfriend"}]
    (eval_dir / "samples.jsonl").write_text(json.dumps(
        {"probe": "generation", "id": 0, "prompt": prompt, "reference": "hi!",
         "replies": {"merged": "hey " * 200, "gpt2": "\n\n"}}) + "\n", encoding="utf-8")
    aligned = artifact(run, "aligned", "align")
    gates = artifact(run, "gates", "gates", {"current": merged, "candidate": aligned})
    rows = [{"gate": "win_rate", "candidate": 0.7, "current": 0.3, "limit": ">= 0.5", "passed": promoted}]
    (gates / "gates.json").write_text(json.dumps({"gates": rows, "promoted": promoted}), encoding="utf-8")
    (gates / "report.md").write_text("# improve\n\n| gate |\n", encoding="utf-8")
    return run, [merged, eval_dir, aligned, gates]


@pytest.mark.parametrize("promoted, model, word", [(True, "aligned", "promoted"), (False, "merged", "rejected")])
def test_report_recommends_the_promoted_or_the_current_model(tmp_path, promoted, model, word):
    run, outs = closed_loop_run(tmp_path, promoted)
    assert recommended_model(outs) == run / model
    text = write_report(run, outs, {}, "configs/default.yaml").read_text(encoding="utf-8")
    command = f"llmcycle chat --model {run / model} -c configs/default.yaml"
    assert text.count("llmcycle chat") == 1 and command in text
    assert f"the aligned model was **{word}**" in text and f"Decision: **{word}**" in text
    terminal = final_lines(outs, "configs/default.yaml")
    assert terminal[-1] == f"chat:   {command}" and any(word in line for line in terminal)


def test_report_orders_models_marks_directions_and_shows_readable_samples(tmp_path):
    run, outs = closed_loop_run(tmp_path, True)
    text = write_report(run, outs, {}).read_text(encoding="utf-8")
    assert "| metric | base `gpt2` | fine-tuned `merged` |" in text  # base before fine-tuned
    assert "| perplexity | 30 [27, 33] | 20 [18, 22] ↑ |" in text  # intervals apart: better
    assert "| chrf | 11 [9, 13] | 10 [8, 12] ≈ |" in text  # intervals overlap: inconclusive
    assert "**better** on perplexity; **inconclusive** on chrf" in text
    assert "> **user:** hello \\| there<br>friend" in text and "| base `gpt2` | *(only whitespace)* |" in text
    long_reply = next(line for line in text.splitlines() if line.startswith("| fine-tuned"))
    assert long_reply.endswith("hey … |") and len(long_reply) < 400  # cut at a word, not mid-JSON


def test_a_paired_change_decides_where_the_eval_has_one(tmp_path):
    run, outs = closed_loop_run(tmp_path, True)
    eval_dir = run / "eval"
    manifest = json.loads((eval_dir / "manifest.json").read_text(encoding="utf-8"))
    # the eval's comparisons are other minus main: gpt2's chrF 1.0 higher than merged's on every prompt
    manifest["comparisons"] = {"gpt2": {"chrf": {"delta": 1.0, "lo": 0.6, "hi": 1.4, "p_value": 0.001, "n": 48}}}
    (eval_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    text = write_report(run, outs, {}).read_text(encoding="utf-8")
    assert "| chrf | 11 [9, 13] | 10 [8, 12] ↓ |" in text  # the intervals overlap, the paired change does not
    assert "**better** on perplexity; **worse** on chrf" in text
    assert compare_metric("chrf", {"chrf": 10.0}, {"chrf": 11.0}, (-1.4, 0.2)) == "inconclusive"


def test_compare_metric_without_intervals_says_so():
    assert compare_metric("perplexity", {"perplexity": 5.0}, {"perplexity": 6.0}) == "better (no interval)"
    assert compare_metric("chrf", {"chrf": 5.0}, {"chrf": 6.0}) == "worse (no interval)"
    assert compare_metric("chrf", {"chrf": 5.0}, {"chrf": 5.0}) == "same"


def test_a_training_stage_line_says_when_its_time_budget_stopped_it():
    from llmcycle.report import stage_verdict

    budgeted = {"metrics": {"val_loss": 4.169, "steps": 374, "stopped_by_time_budget": True}}
    assert stage_verdict("pretrain", budgeted) == \
        "- pretrain: val loss 4.169 (no interval) after 374 steps, stopped by its time budget."
    budgeted["metrics"]["stopped_by_run_deadline"] = True
    assert stage_verdict("pretrain", budgeted).endswith("after 374 steps, stopped in time for the rest of the run.")
    stepped = {"metrics": {"val_loss": 4.843, "val_loss_before": 4.886, "steps": 160}}  # recorded before intervals
    assert stage_verdict("finetune", stepped) == \
        "- finetune: val loss 4.886 → 4.843 (**better**, no interval; 160 steps)."


def loss_rows(mean: float, spread: float, batches: int = 20, tokens: float = 500.0, seed: int = 0) -> list:
    noise = np.random.default_rng(seed).normal(0, spread, size=batches)
    return [[(mean + e) * tokens, tokens] for e in noise]


def test_training_lines_carry_intervals_from_what_the_stage_recorded():
    from llmcycle.report import stage_verdict

    before = loss_rows(4.886, 0.3)
    after = [[loss - 0.04 * tokens, tokens] for loss, tokens in before]  # a consistent fall on every batch
    finetune = {"metrics": {"val_loss_before": 4.886, "val_loss": 4.846, "steps": 130,
                            "val_loss_before_batches": before, "val_loss_batches": after}}
    line = stage_verdict("finetune", finetune)
    assert "(**better**: change -0.04 [-0.04, -0.04] on the same 20 validation batches; 130 steps)" in line
    assert line.startswith("- finetune: val loss 4.886 [") and "no interval" not in line
    noisy = [[loss + (0.5 if i % 2 else -0.5) * tokens, tokens] for i, (loss, tokens) in enumerate(after)]
    assert "within the noise" in stage_verdict("finetune", {"metrics": {**finetune["metrics"],
                                                                         "val_loss_batches": noisy}})
    pretrain = stage_verdict("pretrain", {"metrics": {"val_loss": 4.155, "val_perplexity": 63.76, "steps": 355,
                                                      "val_loss_batches": loss_rows(4.155, 0.2)}})
    lo, hi = (float(x) for x in pretrain.split("(perplexity 63.76 [")[1].split("]")[0].split(", "))
    assert lo < 63.76 < hi
    reward = stage_verdict("reward", {"metrics": {"val_loss": 0.52, "val_pairwise_accuracy": 0.7265625,
                                                  "val_pairwise_accuracy_before": 0.3515625, "val_pairs": 128}})
    assert "held-out pairwise accuracy 0.3516 [0.2685, 0.4346] → 0.7266 [0.649, 0.8041] on 128 pairs" in reward
    align = stage_verdict("align", {"metrics": {"val_loss": 0.70, "margin_before": 0.0, "margin_after": -0.0617,
                                                "margin_se_after": 0.1185, "pairs_after": 16,
                                                "pair_accuracy_after": 0.4375}})
    assert "validation margin 0 → -0.0617 [-0.294, 0.1706] (within the noise) on 16 pairs" in align
    assert "pair accuracy 0.4375 [0.231, 0.6682]" in align


def test_lineage_shows_measured_numbers_only_with_their_intervals():
    from llmcycle.report import key_metrics

    shown = key_metrics({"train_loss": 4.99, "steps": 128, "val_loss": 4.82, "val_loss_batches": loss_rows(4.82, 0.2),
                         "verdict": "inconclusive", "win_rate": 0.48, "win_rate_ci95": [0.39, 0.58], "mfu": 0.7})
    assert shown.startswith("steps=128, val_loss=4.82 [") and "win_rate=0.48 [0.39, 0.58]" in shown
    assert "train_loss" not in shown and "mfu" not in shown and "verdict=inconclusive" in shown


def test_a_reject_names_what_failed_and_what_was_only_inconclusive(tmp_path):
    from llmcycle.report import gate_decision

    gates = tmp_path / "gates"
    gates.mkdir()
    rows = [{"gate": "win_rate", "status": "inconclusive", "passed": False},
            {"gate": "perplexity", "status": "pass", "passed": True},
            {"gate": "bias_loglik_gap", "status": "fail", "passed": False}]
    (gates / "gates.json").write_text(json.dumps({"gates": rows, "decision": "rejected"}), encoding="utf-8")
    assert gate_decision(gates) == ("rejected", ["bias_loglik_gap", "win_rate inconclusive"])
