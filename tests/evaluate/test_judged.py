"""`eval --judge` (the main model's replies against each compared model's under a judge) and `judge-check` through
the CLI: a tiny local LLM judge on a rated fixture, and the one-line errors."""

from __future__ import annotations

import json

from llmcycle.artifacts import read_manifest
from llmcycle.evaluate import EvalConfig, run
from llmcycle.evaluate.compare import judged_comparisons
from llmcycle.records import write_jsonl
from tests.evaluate.test_stage import SMALL, cli


class PrefersLonger:
    name = "prefers longer"

    def compare(self, pairs):
        return ["A" if len(p.a[-1]["content"]) > len(p.b[-1]["content"]) else "B"
                if len(p.a[-1]["content"]) < len(p.b[-1]["content"]) else "tie" for p in pairs]


def gen(i, reply):
    return {"probe": "generation", "id": i, "prompt": [{"role": "user", "content": f"q{i}"}], "reply": reply}


def test_judged_comparisons_count_the_main_models_wins_with_an_interval():
    samples = {"main": [gen(i, "a long thoughtful reply") for i in range(20)],
               "other": [gen(i, "short" if i < 15 else "a long thoughtful reply") for i in range(20)]}
    result = judged_comparisons(PrefersLonger(), samples, "main")["other"]
    assert (result["wins"], result["ties"], result["losses"], result["n"]) == (15, 5, 0, 20)
    assert result["win_rate"] == 0.875 and result["ci95"][0] > 0.5 and result["sign_test_p"] < 1e-3


def test_eval_with_a_judge_writes_the_judged_table(make_tiny_model, uniform_model_dir, chat_data_dir, tmp_path):
    out = tmp_path / "eval"
    model = make_tiny_model("llama")
    cfg = EvalConfig(**{**SMALL, "probes": ["generation"], "judge": str(model)})
    run(cfg, model, chat_data_dir, out, compare=[str(uniform_model_dir)])
    judged = read_manifest(out, "eval")["judged"][uniform_model_dir.name]
    assert judged["n"] == 4 and judged["wins"] + judged["ties"] + judged["losses"] == 4
    assert judged["ci95"][0] <= judged["win_rate"] <= judged["ci95"][1]
    main = json.loads((out / "metrics.json").read_text())[model.name]
    key = f"judged_win_rate_vs_{uniform_model_dir.name}"
    assert main[key] == judged["win_rate"] and main[key + "_ci95"] == [round(x, 6) for x in judged["ci95"]]
    assert "Judged comparisons" in (out / "report.md").read_text()
    record = read_manifest(out, "eval")["reproducibility"]
    assert {"torch", "transformers", "llmcycle"} <= set(record["packages"]) and record["torch_threads"] >= 1
    assert record["seed"] == 0 and record["generation"]["max_new_tokens"] == SMALL["max_new_tokens"]
    assert set(record["dtypes"]) == {model.name, uniform_model_dir.name}
    assert set(record["data"]) == {"train.jsonl", "val.jsonl", "test.jsonl"}
    assert all(len(h) == 64 for h in record["models"][model.name].values()) and record["models"][model.name]


def test_eval_judge_errors_are_one_line_and_write_nothing(make_tiny_model, chat_data_dir, tmp_path, capsys):
    model, out = make_tiny_model("llama"), tmp_path / "eval"
    for args, message in [(("--judge", tmp_path / "no-judge", "--compare", model), "no such judge"),
                          (("--judge", model), "--compare")]:
        code, _, err = cli("--model", model, "--data", chat_data_dir, "--out", out, *args, capsys=capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def judge_check_cli(*args, capsys):
    from llmcycle.cli import main

    try:
        main(["judge-check", *map(str, args)])
        code = 0
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_judge_check_command_on_rated_chats(make_tiny_model, tmp_path, capsys):
    rated = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"reply {i}"}],
              "meta": {"ratings": {"witty": i % 10}}} for i in range(30)]
    write_jsonl(tmp_path / "val.jsonl", rated)
    out = tmp_path / "check.json"
    code, stdout, err = judge_check_cli("--judge", make_tiny_model("llama"), "--data", tmp_path, "--limit", 6,
                                        "--out", out, capsys=capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["n"] == 6 and result["ci95"][0] <= result["agreement"] <= result["ci95"][1]
    assert "agrees with people" in stdout and "of 6 pairs" in stdout


def test_judge_check_without_labels_or_judge_is_one_line(make_tiny_model, tmp_path, capsys):
    (tmp_path / "val.jsonl").write_text("")
    cases = [(("--judge", make_tiny_model("llama")), "no human labels"),
             (("--judge", tmp_path / "none", "--data", tmp_path), "")]
    for args, message in cases:
        code, _, err = judge_check_cli(*args, "--out", tmp_path / "x.json", capsys=capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x.json").exists()


def test_the_eval_report_notes_the_data_cards_contamination(tmp_path):
    from llmcycle.evaluate.stage import contamination_note

    section = {"train_records_checked": 90, "train_records_flagged": 2, "train_records_dropped": 0,
               "eval_sets": {"gsm8k": {"items": 1327, "contaminated_items": 2, "train_records": 2},
                             "arc_easy": {"items": 570, "contaminated_items": 0, "train_records": 0}}}
    (tmp_path / "card.json").write_text(json.dumps({"contamination": section}))
    (note,) = contamination_note(tmp_path)
    assert "2 of 90 train records" in note and "gsm8k 2 of 1327 items" in note and "arc_easy" in note
    (tmp_path / "card.json").write_text("{}")
    assert "not checked" in contamination_note(tmp_path)[0]
    assert contamination_note(None) == []
