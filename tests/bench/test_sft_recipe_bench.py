"""`bench/sft_recipe_bench.py`: each recipe fine-tunes, merges and is evaluated against the base it started from."""

from __future__ import annotations

import json
from pathlib import Path

CONFIG = """
finetune:
  method: lora
  max_seq_len: 64
  lora: {r: 4, alpha: 8, dropout: 0.0}
  train: {max_steps: 2, batch_size: 2, lr: 1.0e-3, warmup_steps: 0, eval_every: 2, eval_batches: 1, save_every: 2,
          log_every: 1}
eval: {probes: [ppl, generation], max_examples: 4, max_ppl_records: 4, max_new_tokens: 4, batch_size: 4,
       temperature: 0.7, top_p: 0.9}
"""


def test_recipes_are_paired_against_their_base(bench_script, make_tiny_model, chat_data_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "data").symlink_to(chat_data_dir)
    (run / "base").symlink_to(make_tiny_model("llama"))
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "bench.json"
    bench_script("sft_recipe_bench").main(["--config", str(config), "--run", f"{run}:3", "--recipe", "lora:",
                        "--recipe", "full:method=full,train.lr=3e-4", "--work", str(tmp_path / "work"),
                        "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["recipe"], r["seed"]) for r in rows] == [("lora", 3), ("full", 3)]
    assert (tmp_path / "work" / "lora_s3" / "merged").is_dir()  # an adapter is merged before eval
    assert not (tmp_path / "work" / "full_s3" / "merged").exists()  # a full fine-tune is evaluated as it is
    for row in rows:
        assert row["steps"] == 2 and row["finetune_wall_s"] > 0
        for key in ("chrf_diff", "rouge_l_diff"):
            diff = row[key]
            assert diff["lo"] <= diff["delta"] <= diff["hi"] and diff["n"] == 4
        base, sft = row["chrf"]
        assert abs((sft - base) - row["chrf_diff"]["delta"]) < 1e-6  # SFT minus base, not the eval's base minus SFT


def test_recipe_and_run_arguments_parse(bench_script):
    bench = bench_script("sft_recipe_bench")
    assert bench.parse_recipe("full:method=full,train.lr=3e-4") == ("full", ["method=full", "train.lr=3e-4"])
    assert bench.parse_recipe("lora:") == ("lora", [])
    assert bench.parse_run("runs/seed1:1") == (Path("runs/seed1"), 1)
    assert bench.parse_run("runs/default") == (Path("runs/default"), 0)
