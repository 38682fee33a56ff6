"""`llmcycle data` through the real CLI: config file + overrides, and every bad input of the stage as one line,
exit code 2, no traceback and nothing written where --out points."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from llmcycle.data import DataConfig


def assert_user_error(result, out, *fragments):
    code, stdout, stderr = result
    assert code == 2, (code, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr + stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()
    assert not out.parent.exists()  # not even the parent folder was created


@pytest.fixture
def out(tmp_path):
    return tmp_path / "not-yet" / "data"


def test_missing_path(cli, out, tmp_path):
    missing = tmp_path / "nowhere"
    assert_user_error(cli(["data", "--source", "cornell", "--path", missing, "--out", out]), out, str(missing),
                      "no such file or folder")


def test_source_needing_a_path_without_one(cli, out):
    assert_user_error(cli(["data", "--source", "jsonl", "--out", out]), out, "needs --path")


def test_folder_without_cornell_files(cli, out, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "readme.txt").write_text("hi")
    assert_user_error(cli(["data", "--source", "cornell", "--path", folder, "--out", out]), out,
                      "missing movie_lines.txt, movie_conversations.txt")


def test_zip_without_cornell_files_and_a_file_that_is_no_zip(cli, out, tmp_path):
    import zipfile

    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("notes.txt", "nothing here")
    assert_user_error(cli(["data", "--source", "cornell", "--path", archive, "--out", out]), out, "missing")
    plain = tmp_path / "lines.txt"
    plain.write_text("x")
    assert_user_error(cli(["data", "--source", "cornell", "--path", plain, "--out", out]), out, "not a folder or zip")


def test_conversations_naming_unknown_line_ids_when_none_resolve(cli, out, tmp_path, h):
    corpus = h.write_cornell(tmp_path / "corpus", movies=0, missing_ids=2)
    assert_user_error(cli(["data", "--source", "cornell", "--path", corpus, "--out", out]), out,
                      "none of 2 conversations resolve", "movie_conversations.txt:1", "'L1'")


def test_malformed_cornell_line_names_file_and_line(cli, out, tmp_path, h):
    corpus = h.write_cornell(tmp_path / "corpus", movies=2)  # 32 lines, the broken one is line 33
    lines = corpus / "movie_lines.txt"
    lines.write_bytes(lines.read_bytes() + b"L999 +++$+++ broken\n")
    result = cli(["data", "--source", "cornell", "--path", corpus, "--out", out])
    assert_user_error(result, out, "movie_lines.txt:33", "expected 5 fields")


def test_text_file_that_is_not_utf8(cli, out, tmp_path):
    bad = tmp_path / "latin.txt"
    bad.write_bytes("caf\u00e9 au lait".encode("latin-1"))
    assert_user_error(cli(["data", "--source", "text", "--path", bad, "--out", out]), out, "not UTF-8 text")


def test_malformed_jsonl_line_names_file_and_line(cli, out, tmp_path, h):
    path = h.write_jsonl(tmp_path / "chat.jsonl", [{"prompt": "hi", "response": "hello"}, "{not json", {"x": 1}])
    assert_user_error(cli(["data", "--source", "jsonl", "--path", path, "--out", out]), out, f"{path}:2",
                      "malformed JSON")


def test_invalid_chat_record_names_file_line_and_field(cli, out, tmp_path, h):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]}]
    path = h.write_jsonl(tmp_path / "chat.jsonl", rows)
    assert_user_error(cli(["data", "--source", "jsonl", "--path", path, "--out", out]), out, f"{path}:1",
                      "messages[1].role")


def test_empty_result_after_filtering(cli, out, tmp_path, h):
    path = h.write_jsonl(tmp_path / "chat.jsonl", [{"prompt": "you kike", "response": "no"}])
    assert_user_error(cli(["data", "--source", "jsonl", "--path", path, "--out", out]), out,
                      "no records left after filtering", "toxicity 1")


def test_unknown_source_and_bad_fractions(cli, out):
    assert_user_error(cli(["data", "--source", "reddit", "--out", out]), out, "source")
    assert_user_error(cli(["data", "--val-frac", "0.6", "--test-frac", "0.5", "--out", out]), out,
                      "val_frac + test_frac")
    assert_user_error(cli(["data", "--set", "near_dedup=sometimes", "--out", out]), out, "near_dedup")


def test_run_config_section_overrides_and_flags(cli, tmp_path, h):
    path = h.write_jsonl(tmp_path / "rows.jsonl",
                         [{"prompt": f"question {i} " + h.sentence(random.Random(i)), "response": "ok"}
                          for i in range(20)])
    config = tmp_path / "run.yaml"
    config.write_text(f"data:\n  source: jsonl\n  path: {path}\n  seed: 3\n  val_frac: 0.3\ntokenizer:\n  x: 1\n")
    out = tmp_path / "data"
    code, stdout, stderr = cli(["data", "-c", config, "--set", "data.toxicity=false", "--set", "near_dedup=off",
                                "--seed", "4", "--out", out])
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    manifest = json.loads((out / "manifest.json").read_text())
    cfg = DataConfig(**manifest["config"])
    assert (cfg.source, cfg.seed, cfg.val_frac, cfg.toxicity, cfg.near_dedup) == ("jsonl", 4, 0.3, False, "off")
    assert h.step(h.card(out), "toxicity")["enabled"] is False


def test_real_process_exit_code_and_single_line(tmp_path, h):
    path = h.write_jsonl(tmp_path / "bad.jsonl", ["[1, 2]"])
    out = tmp_path / "data"
    env = {**os.environ, "LLMCYCLE_QUIET": "1"}
    proc = subprocess.run([sys.executable, "-m", "llmcycle", "data", "--source", "jsonl", "--path", str(path),
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}:1: expected a JSON object, got list"
    assert not out.exists()
