"""The spine: config loading/overrides, artifact atomicity and manifests, JSONL errors, CLI error handling."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmcycle.artifacts import is_up_to_date, open_artifact, read_manifest
from llmcycle.config import StageConfig, load_config
from llmcycle.errors import ArtifactError, ConfigError, DataError
from llmcycle.records import check_chat, read_jsonl


class Inner(StageConfig):
    lr: float = 1e-3
    name: str = "x"


class Outer(StageConfig):
    steps: int = 10
    inner: Inner = Inner()


def test_yaml_section_sets_and_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("outer:\n  steps: 5\n  inner: {lr: 0.5}\nother: {a: 1}\n")
    cfg = load_config(Outer, path, ["outer.inner.name=y", "steps=7"], section="outer")
    assert (cfg.steps, cfg.inner.lr, cfg.inner.name) == (7, 0.5, "y")
    cfg = load_config(Outer, path, section="outer", steps=9)
    assert cfg.steps == 9


def test_unknown_key_and_wrong_type_name_the_key_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("inner: {lr: fast, bogus: 1}\n")
    with pytest.raises(ConfigError) as err:
        load_config(Outer, path)
    assert "inner.lr" in str(err.value) and "inner.bogus: unknown key" in str(err.value)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(Outer, None, ["steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_artifact_is_atomic_and_has_manifest(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(RuntimeError):
        with open_artifact(out, "demo", {"a": 1}) as art:
            (art.dir / "x.txt").write_text("half")
            raise RuntimeError("boom")
    assert not out.exists() and not (tmp_path / "art.partial").exists()
    with open_artifact(out, "demo", {"a": 1}) as art:
        (art.dir / "x.txt").write_text("done")
        art.metrics["n"] = 3
    manifest = read_manifest(out, "demo")
    assert manifest["outputs"].keys() == {"x.txt"} and manifest["metrics"] == {"n": 3}
    assert is_up_to_date(out, "demo", {"a": 1}, {}) and not is_up_to_date(out, "demo", {"a": 2}, {})
    with pytest.raises(ArtifactError, match="expected other"):
        read_manifest(out, "other")


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n{oops\n')
    with pytest.raises(DataError, match=r"d.jsonl:3: malformed JSON"):
        list(read_jsonl(path))
    with pytest.raises(DataError, match="two user turns"):
        check_chat({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, "f:1")


def test_cli_user_error_is_one_line_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "llmcycle", "nonexistent-command"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "llmcycle", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "lifecycle" in proc.stdout
