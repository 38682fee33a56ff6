"""`bench/gpu_check.py --smoke`: the GPU check's code paths run on CPU at toy shapes, so the script cannot rot."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_smoke_runs_every_section_and_writes_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    load_script().main(["--smoke", "--out", str(out)])
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert set(sections) == {"pretrain", "lora", "qlora", "decode"}
    assert not any("error" in s for s in sections.values()), sections
    assert sections["pretrain"]["tokens_per_s"] > 0 and 0 < sections["pretrain"]["mfu"]
    lora = sections["lora"]
    assert 0 < lora["trainable_params"] < lora["total_params"] and lora["tokens_per_s"] > 0
    assert "skipped" in sections["qlora"] or sections["qlora"]["tokens_per_s"] > 0
    assert sections["decode"]["batch_1"]["tokens"] == 4 and sections["decode"]["batch_4"]["tokens"] == 16


def test_a_failing_section_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    module = load_script()

    def broken(shapes, clock):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setitem(module.SECTIONS, "lora", broken)
    out = tmp_path / "gpu_check.json"
    module.main(["--smoke", "--out", str(out), "--only", "lora", "qlora"])
    sections = json.loads(out.read_text())["sections"]
    assert sections["lora"]["error"].startswith("RuntimeError: out of memory")
    assert "skipped" in sections["qlora"]
