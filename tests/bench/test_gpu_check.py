"""`bench/gpu_check.py --smoke`: the GPU check's code paths run on CPU at toy shapes, so the script cannot rot."""

from __future__ import annotations

import json


def test_smoke_runs_every_section_and_writes_json(bench_script, tmp_path):
    out = tmp_path / "gpu_check.json"
    bench_script("gpu_check").main(["--smoke", "--out", str(out)])
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert set(sections) == {"pretrain", "lora", "qlora", "decode"}
    assert not any("error" in s for s in sections.values()), sections
    assert sections["pretrain"]["tokens_per_s"] > 0 and 0 < sections["pretrain"]["mfu"]
    lora = sections["lora"]
    assert 0 < lora["trainable_params"] < lora["total_params"] and lora["tokens_per_s"] > 0
    assert "skipped" in sections["qlora"] or sections["qlora"]["tokens_per_s"] > 0
    assert sections["decode"]["batch_1"]["tokens"] == 4 and sections["decode"]["batch_4"]["tokens"] == 16


def test_a_failing_section_is_recorded_and_the_others_still_run(bench_script, tmp_path, monkeypatch):
    module = bench_script("gpu_check")

    def broken(shapes, clock):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setitem(module.SECTIONS, "lora", broken)
    out = tmp_path / "gpu_check.json"
    module.main(["--smoke", "--out", str(out), "--only", "lora", "qlora"])
    sections = json.loads(out.read_text())["sections"]
    assert sections["lora"]["error"].startswith("RuntimeError: out of memory")
    assert "skipped" in sections["qlora"]
