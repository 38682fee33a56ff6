"""The whole lifecycle on the tiny config: end to end, skip-if-done, partial reruns, resume and bad configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmcycle.config import load_config
from llmcycle.errors import ArtifactError, ConfigError
from llmcycle.pipeline import RunConfig, run

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


def tiny(*sets: str) -> RunConfig:
    return load_config(RunConfig, TINY, list(sets))


def statuses(results) -> dict[str, str]:
    return {r.stage: r.status for r in results}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    return run_dir, statuses(run(tiny(), run_dir))


def test_tiny_pipeline_end_to_end(tiny_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, first = tiny_run
    assert first == {s: "ran" for s in ("data", "tokenizer", "pretrain", "finetune", "merge", "eval")}
    for name in ("data", "tokenizer", "base", "sft", "merged", "eval"):
        assert (run_dir / name / "manifest.json").is_file(), name
    assert (run_dir / "sft" / "adapter_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(run_dir / "merged")
    tok = AutoTokenizer.from_pretrained(run_dir / "merged")
    assert model.config.vocab_size >= len(tok)
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert len(metrics) == 2  # the fine-tuned model and the base it is compared with
    report = (run_dir / "report.md").read_text()
    for needle in ("## Lineage", "pretrain", "finetune", "## Evaluation", "llmcycle chat --model"):
        assert needle in report
    assert (run_dir / "base" / "loss.png").is_file() and "base/loss.png" in report


def test_second_run_skips_every_stage(tiny_run):
    run_dir, _ = tiny_run
    assert set(statuses(run(tiny(), run_dir)).values()) == {"skipped"}


def test_changed_finetune_setting_reruns_only_downstream(tiny_run):
    run_dir, _ = tiny_run
    again = statuses(run(tiny("finetune.lora.r=2"), run_dir))
    assert again == {"data": "skipped", "tokenizer": "skipped", "pretrain": "skipped",
                     "finetune": "ran", "merge": "ran", "eval": "ran"}


def test_input_from_another_run_is_refused(tiny_run, tmp_path):
    import shutil

    run_dir, _ = tiny_run
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    shutil.rmtree(other / "merged")
    shutil.copytree(run_dir / "sft", other / "merged", dirs_exist_ok=True)  # a dir this run did not write there
    with pytest.raises(ArtifactError, match="was not produced by this run|is a 'finetune' artifact"):
        run(tiny("stages=[eval]"), other)


def test_killed_training_stage_resumes(tmp_path, monkeypatch):
    from llmcycle.train import pretrain

    run_dir = tmp_path / "killed"
    real_loop = pretrain.train_loop
    cfg = tiny("stages=[data,tokenizer,pretrain]")

    def killed_after_first_checkpoint(*args, **kwargs):
        def kill(step, record):
            if step == 7:  # the first checkpoint is written at step 6
                raise KeyboardInterrupt

        return real_loop(*args, on_step=kill, **kwargs)

    monkeypatch.setattr(pretrain, "train_loop", killed_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, run_dir)
    assert not (run_dir / "base").exists() and any((run_dir / "base.partial" / "checkpoints").glob("step-*"))
    monkeypatch.setattr(pretrain, "train_loop", real_loop)
    assert statuses(run(cfg, run_dir)) == {"data": "skipped", "tokenizer": "skipped", "pretrain": "resumed"}
    assert (run_dir / "base" / "manifest.json").is_file()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmcycle", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize(
    "sets, needle",
    [(["pretrain.train.max_stepz=3"], "pretrain.train.max_stepz: unknown key"),
     (["finetune.train.lr=fast"], "finetune.train.lr"),
     (["stages=[data,bogus]"], "unknown stage 'bogus'")],
)
def test_bad_config_is_one_line_exit_2(tmp_path, sets, needle):
    args = ["run", "-c", str(TINY), "--out", str(tmp_path / "r")]
    for s in sets:
        args += ["--set", s]
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r" / "data").exists()


def test_not_a_run_folder_and_missing_input(tmp_path):
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    proc = cli("run", "-c", str(TINY), "--out", str(stranger))
    assert proc.returncode == 2 and "not an llmcycle run folder" in proc.stderr
    proc = cli("run", "-c", str(TINY), "--out", str(tmp_path / "fresh"), "--stages", "eval")
    assert proc.returncode == 2 and "run the merge stage first" in proc.stderr
    with pytest.raises(ConfigError):
        load_config(RunConfig, TINY, ["dirs.bogus=x"])


def test_export_stage_writes_a_gguf_that_llamacpp_runs(tiny_run):
    pytest.importorskip("xllamacpp")
    from llmcycle.gguf.llamacpp import LlamaCpp

    run_dir, _ = tiny_run
    stages = "stages=[data,tokenizer,pretrain,finetune,merge,eval,export]"
    again = statuses(run(tiny(stages, "export.quant=q8_0"), run_dir))
    assert again.pop("export") == "ran" and set(again.values()) <= {"skipped", "ran"}
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["stage"] == "export" and manifest["metrics"]["quant"] == "q8_0"
    assert len(LlamaCpp(run_dir / "export" / "model.gguf").greedy("hello", 4)) == 4
