"""The alignment commands through the real CLI: bad input is one line and exit 2, nothing half-written."""

from __future__ import annotations

import json


def test_align_cli_runs_dpo(cli, pref_data_dir, make_tiny_model, tmp_path):
    out = tmp_path / "aligned"
    code, stdout, err = cli("align", "--data", pref_data_dir, "--model", make_tiny_model("llama"), "--out", out,
                            "--max-steps", "2", "--set", "train.batch_size=4", "--set", "max_seq_len=64")
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["stage"] == "align"


def test_bad_preference_data_is_one_line(cli, make_tiny_model, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text(json.dumps({"prompt": "hi", "chosen": "same", "rejected": "same"}) + "\n")
    out = tmp_path / "aligned"
    code, _, err = cli("align", "--data", data, "--model", make_tiny_model("llama"), "--out", out)
    assert code == 2
    assert err.strip().count("\n") == 0 and "train.jsonl:1" in err and "same reply" in err
    assert not out.exists() and not (tmp_path / "aligned.partial").exists()


def test_empty_feedback_db_is_one_line(cli, tmp_path):
    from llmcycle.feedback.store import FeedbackStore

    FeedbackStore(tmp_path / "fb.db").close()
    code, _, err = cli("data", "--source", "feedback", "--path", tmp_path / "fb.db", "--out", tmp_path / "d")
    assert code == 2 and "holds no ratings or pairwise choices" in err
    assert not (tmp_path / "d").exists()


def test_feedback_becomes_paired_and_unpaired_records(cli, tmp_path):
    from llmcycle.feedback.store import FeedbackStore

    with FeedbackStore(tmp_path / "fb.db") as store:
        for i in range(12):
            convo = [{"role": "user", "content": f"question number {i}"}]
            store.record_response(f"a{i}", "m", convo, f"a helpful answer {i}", {}, "stop")
            store.record_response(f"b{i}", "m", convo, f"a dull answer {i}", {}, "stop")
            store.add_preference(f"a{i}", f"b{i}")
            store.add_rating(f"a{i}", 1)
    out = tmp_path / "d"
    code, _, err = cli("data", "--source", "feedback", "--path", tmp_path / "fb.db", "--out", out)
    assert code == 0, err
    rows = [json.loads(line) for split in ("train", "val", "test") for line in (out / f"{split}.jsonl").open()]
    paired = [r for r in rows if "chosen" in r]
    unpaired = [r for r in rows if "completion" in r]
    assert len(paired) == 12 and len(unpaired) == 12 and all(r["label"] is True for r in unpaired)
    # records of one prompt share a split: nothing of train's prompts in test
    prompts = {s: {json.dumps(json.loads(line)["prompt"]) for line in (out / f"{s}.jsonl").open()}
               for s in ("train", "test")}
    assert not prompts["train"] & prompts["test"]


def test_mismatched_prompts_in_feedback_pair(cli, tmp_path):
    from llmcycle.feedback.store import FeedbackStore

    with FeedbackStore(tmp_path / "fb.db") as store:
        store.record_response("a", "m", [{"role": "user", "content": "one"}], "x", {}, "stop")
        store.record_response("b", "m", [{"role": "user", "content": "two"}], "y", {}, "stop")
        store.add_preference("a", "b")
    code, _, err = cli("data", "--source", "feedback", "--path", tmp_path / "fb.db", "--out", tmp_path / "d")
    assert code == 2 and "different conversations" in err


def test_chitchat_ratings_are_kept_in_meta():
    from llmcycle.data.sources.chitchat import read_chitchat

    records = [e.record for e in read_chitchat(limit=50).examples]
    rated = [r for r in records if "ratings" in r["meta"]]
    assert rated and set(rated[0]["meta"]["ratings"]) == {"witty", "upbeat", "interesting"}
