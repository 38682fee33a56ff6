"""The eval stage end to end on tiny models through the real engine, and its bad-input errors via the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmcycle.artifacts import read_manifest
from llmcycle.cli import main
from llmcycle.evaluate import EvalConfig, run
from llmcycle.evaluate.stage import model_names
from llmcycle.loading import load_tokenizer_for

SMALL = dict(max_examples=4, max_ppl_records=6, max_new_tokens=6, max_safety_prompts=3, max_bias_pairs=2,
             batch_size=4)


def test_eval_compares_models_side_by_side(make_tiny_model, uniform_model_dir, chat_data_dir, tmp_path):
    out = tmp_path / "eval"
    model = make_tiny_model("llama")
    run(EvalConfig(**SMALL), model, chat_data_dir, out, compare=[str(uniform_model_dir)])
    metrics = json.loads((out / "metrics.json").read_text())
    names = list(metrics)
    assert len(names) == 2 and names[0] == model.name
    vocab = json.loads((uniform_model_dir / "config.json").read_text())["vocab_size"]
    assert metrics[names[1]]["perplexity"] == pytest.approx(vocab, rel=1e-4)
    for values in metrics.values():
        assert {"perplexity", "bits_per_byte", "unigram_bits_per_byte", "bleu", "chrf", "rouge_l", "distinct_2",
                "repetition_rate", "eos_share", "safety_flag_rate", "bias_loglik_gap"} <= set(values)
        for key in ("perplexity", "bits_per_byte", "chrf", "bleu", "rouge_l", "eos_share", "safety_flag_rate",
                    "bias_loglik_gap"):
            lo, hi = values[f"{key}_ci95"]
            assert lo - 1e-6 <= values[key] <= hi + 1e-6, key
    report = (out / "report.md").read_text()
    assert names[0] in report and names[1] in report and "bits per byte" in report
    comparison = read_manifest(out, "eval")["comparisons"][names[1]]
    assert {"chrf", "rouge_l"} <= set(comparison) and comparison["chrf"]["n"] == 4
    assert comparison["chrf"]["lo"] <= comparison["chrf"]["delta"] <= comparison["chrf"]["hi"]
    assert f"Paired comparisons against {names[0]}" in report
    assert "95% intervals" in report and f"{metrics[names[1]]['perplexity_ci95'][0]:.4g}" in report
    assert {"perplexity.png", "generation.png", "diversity.png", "probes.png"} <= {p.name for p in out.glob("*.png")}
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    generation = [s for s in samples if s["probe"] == "generation"]
    assert len(generation) == 4 and set(generation[0]["replies"]) == set(names) and generation[0]["reference"]
    assert sum(s["probe"] == "safety" for s in samples) == 3 and sum(s["probe"] == "bias" for s in samples) == 2
    manifest = read_manifest(out, "eval")
    assert manifest["main_model"] == names[0] and set(manifest["inputs"]) == {"model", "data", "compare_1"}


def test_probes_can_be_selected(make_tiny_model, chat_data_dir, tmp_path):
    out = tmp_path / "eval"
    run(EvalConfig(probes=["ppl"], max_ppl_records=3), make_tiny_model("llama"), chat_data_dir, out)
    (values,) = json.loads((out / "metrics.json").read_text()).values()
    assert "perplexity" in values and "bleu" not in values and "safety_flag_rate" not in values
    assert not (out / "generation.png").exists()


def cli(*args, capsys=None):
    """`llmcycle eval ARGS`: in-process through the CLI's main when `capsys` is given, else as a subprocess."""
    argv = ["eval", *map(str, args)]
    if capsys is None:
        proc = subprocess.run([sys.executable, "-m", "llmcycle", *argv], capture_output=True, text=True)
        return proc.returncode, proc.stdout, proc.stderr
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_bad_inputs_are_one_line_errors(make_tiny_model, chat_data_dir, tmp_path, capsys):
    model, out = make_tiny_model("llama"), tmp_path / "eval"
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    tokenizer_only = tmp_path / "tokenizer_only"
    load_tokenizer_for(model).save_pretrained(tokenizer_only)
    no_test = tmp_path / "data"
    no_test.mkdir()
    (no_test / "train.jsonl").write_text("")
    bad_test = tmp_path / "bad_data"
    bad_test.mkdir()
    (bad_test / "test.jsonl").write_text('{"text": "fine"}\n{"messages": [{"role": "bot", "content": "x"}]}\n')
    cases = [
        (("--model", not_a_model, "--data", chat_data_dir, "--out", out), "has no tokenizer files"),
        (("--model", tokenizer_only, "--data", chat_data_dir, "--out", out), "model does not load"),
        (("--model", tmp_path / "missing", "--data", chat_data_dir, "--out", out), "no such model dir"),
        (("--model", model, "--data", no_test, "--out", out), "no test split"),
        (("--model", model, "--data", bad_test, "--out", out), "test.jsonl:2: messages[0].role"),
        (("--model", model, "--data", chat_data_dir, "--out", out, "--set", "probes=[]"), "probes"),
        (("--model", model, "--data", chat_data_dir, "--out", out, "--set", "probes=[ppl,vibes]"), "probes.1"),
        (("--model", model, "--data", chat_data_dir, "--out", out, "--set", "max_examples=0"), "max_examples"),
        (("--model", model, "--data", chat_data_dir, "--out", out, "--compare", tmp_path / "nope"), "nope"),
        (("--model", model, "--data", chat_data_dir, "--out", out, "--quantize", "int3"), "int3"),
    ]
    for i, (args, message) in enumerate(cases):
        code, _, err = cli(*args, capsys=None if i == 1 else capsys)
        assert code == 2 and err.startswith("error:") and message in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "eval.partial").exists()


def test_cli_writes_the_eval_dir(make_tiny_model, chat_data_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    code, stdout, err = cli("--model", make_tiny_model("llama"), "--data", chat_data_dir, "--out", out,
                            "--set", "probes=[ppl,generation]", "--set", "max_examples=2", "--set",
                            "max_ppl_records=2", "--set", "max_new_tokens=4", capsys=capsys)
    assert code == 0, err
    assert "perplexity=" in stdout and str(out / "report.md") in stdout
    assert (out / "metrics.json").is_file() and (out / "manifest.json").is_file()


def test_model_names_are_short_and_unique():
    assert model_names(["runs/a/merged", "runs/a/base"]) == ["merged", "base"]
    assert model_names(["runs/a/merged", "runs/b/merged"]) == ["a/merged", "b/merged"]
    assert model_names(["x/m", "x/m"]) == ["x/m#1", "x/m#2"]


def test_text_only_data_gets_perplexity_and_a_note_instead_of_generation(uniform_model_dir, tmp_path):
    from llmcycle.records import write_jsonl

    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", [{"text": "hello there, general text"}] * 3)
    write_jsonl(data / "test.jsonl", [{"text": "some plain text to score"}, {"text": "more text"}])
    out = run(EvalConfig(probes=["ppl", "generation"]), uniform_model_dir, data, tmp_path / "eval")
    (values,) = json.loads((out / "metrics.json").read_text()).values()
    vocab = json.loads((uniform_model_dir / "config.json").read_text())["vocab_size"]
    assert values["perplexity"] == pytest.approx(vocab, rel=1e-4) and values["scored_bytes"] == 24 + 9
    assert "bleu" not in values and "generation metrics skipped" in (out / "report.md").read_text()


def test_eval_scores_the_quantized_weights_it_would_serve(make_tiny_model, chat_data_dir, tmp_path):
    model = make_tiny_model("llama")
    small = dict(SMALL, probes=["ppl"])
    run(EvalConfig(**small), model, chat_data_dir, tmp_path / "fp32")
    run(EvalConfig(**small, quantize="int8"), model, chat_data_dir, tmp_path / "int8")
    fp32, int8 = (json.loads((tmp_path / d / "metrics.json").read_text())[model.name]["perplexity"]
                  for d in ("fp32", "int8"))
    assert fp32 != int8 and int8 == pytest.approx(fp32, rel=0.05)
