"""`improve`: align -> gates -> promote (atomic pointer) or reject naming the failed gate; each attempt an artifact."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.align.conftest import small_align


def improve_config():
    from llmcycle.improve import ImproveConfig

    return ImproveConfig(
        align=small_align("dpo", train={"max_steps": 12}),
        judge={"train": {"max_steps": 30, "batch_size": 8, "lr": 3e-3, "warmup_steps": 0, "eval_every": 30,
                         "save_every": 30}, "max_seq_len": 64},
        gates={"max_prompts": 16, "max_ppl_records": 16, "max_safety_prompts": 4, "max_bias_pairs": 4,
               "max_new_tokens": 8, "max_bias_increase": 1.0,
               # 12 DPO steps on a tiny model narrow its 8-token replies: the loop's plumbing is under test here
               "max_stock_share": 1.0, "min_distinct_ratio": 0.0})


@pytest.fixture(scope="module")
def first_attempt(pref_data_dir, make_tiny_model, tmp_path_factory):
    from llmcycle.improve import run

    from llmcycle.serve.config import ServeConfig
    from tests.serve.conftest import start_server

    root = tmp_path_factory.mktemp("improve")
    pointer = root / "serve.txt"
    current = make_tiny_model("llama")
    pointer.write_text(str(current))
    live = start_server(ServeConfig(watch=str(pointer), feedback_db=str(root / "fb.db"), watch_interval=0.05))
    try:
        before = live.state.host.current.path
        result = run(improve_config(), root / "attempts", pointer=pointer, data=pref_data_dir)
        deadline = time.monotonic() + 60
        while result["promoted"] and live.state.host.current.path == before and time.monotonic() < deadline:
            live.thread.join(0.02)  # the watcher polls the pointer's mtime
        result["served_after"] = live.state.host.current.path
        result["answers_after"] = live.client().chat.completions.create(
            model="", messages=[{"role": "user", "content": "hi"}], max_tokens=4).choices[0].message.content
    finally:
        live.stop()
    return result, pointer, current, root


def test_a_good_candidate_is_promoted(first_attempt):
    result, pointer, current, _ = first_attempt
    gates = json.loads((result["attempt"] / "gates.json").read_text())
    assert result["promoted"], gates
    assert pointer.read_text() == str((result["attempt"] / "model").resolve())
    # a live `llmcycle serve --watch` swapped to the promoted model and answers with it
    assert Path(result["served_after"]).resolve() == (result["attempt"] / "model").resolve()
    assert isinstance(result["answers_after"], str)
    manifest = json.loads((result["attempt"] / "manifest.json").read_text())
    assert manifest["stage"] == "improve" and manifest["metrics"]["win_rate_candidate"] >= 0.5
    assert (result["attempt"] / "judge" / "manifest.json").is_file()


def test_a_planted_bad_candidate_is_rejected_and_the_pointer_kept(first_attempt, pref_data_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmcycle.improve import run

    result, pointer, _, root = first_attempt
    served = pointer.read_text()
    bad = tmp_path / "bad"
    model = AutoModelForCausalLM.from_pretrained(served)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(bad)
    AutoTokenizer.from_pretrained(served).save_pretrained(bad)
    second = run(improve_config(), root / "attempts", pointer=pointer, data=pref_data_dir,
                 judge=str(result["attempt"] / "judge"), candidate=str(bad))
    assert not second["promoted"]
    assert "perplexity" in second["failed"]
    assert second["attempt"].name == "attempt-002"
    assert pointer.read_text() == served
    assert "**fail**" in (second["attempt"] / "report.md").read_text()


def test_two_concurrent_runs_promote_at_most_once(first_attempt, pref_data_dir, tmp_path):
    import shutil
    import threading

    from llmcycle.improve import run

    result, pointer, _, root = first_attempt
    served = pointer.read_text()
    candidates = [tmp_path / "c1", tmp_path / "c2"]
    for c in candidates:
        shutil.copytree(served, c)
    before = sorted(p.name for p in (root / "attempts").glob("attempt-*"))
    results: list = [None, None]

    def attempt(i: int) -> None:
        results[i] = run(improve_config(), root / "attempts", pointer=pointer, data=pref_data_dir,
                         judge=str(result["attempt"] / "judge"), candidate=str(candidates[i]))

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    promoted = [r for r in results if r["promoted"]]
    assert len(promoted) <= 1
    named = pointer.read_text()
    assert named == (str(candidates[results.index(promoted[0])].resolve()) if promoted else served)
    assert (Path(named) / "config.json").is_file()  # a complete model, the one that was gated
    after = sorted(p.name for p in (root / "attempts").glob("attempt-*"))
    assert set(before) <= set(after) and len(after) == len(before) + 2  # no attempt dir lost or reused
    assert not [a for a in after if a.endswith(".partial")]
    assert {r["attempt"].name for r in results} == set(after) - set(before)
