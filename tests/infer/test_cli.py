"""`llmcycle chat` through piped stdin and a pseudo-terminal, `llmcycle generate`, and bad input -> exit 2."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from llmcycle.cli import main

GREEDY = ["--temperature", "0", "--max-new-tokens", "6"]


def run_cli(args, capsys):
    """(exit code, stdout, stderr) of the real CLI run in-process."""
    capsys.readouterr()  # drop what fixtures printed
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "LLMCYCLE_QUIET": "1", "TRANSFORMERS_VERBOSITY": "error"}


def test_chat_piped_stdin(make_tiny_model, tmp_path):
    model = make_tiny_model("llama")
    transcript = tmp_path / "t.jsonl"
    script = f"hello there\n/set temperature -2\n/set warmth 3\n/bogus\nhow are you\n/save {transcript}\n/quit\nignored\n"
    proc = subprocess.run([sys.executable, "-m", "llmcycle", "chat", "--model", str(model), "--system", "be kind",
                           *GREEDY], input=script, capture_output=True, text=True, env=env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    replies = proc.stdout.split("\n")
    assert len(replies) == 3 and replies[2] == ""  # one reply per message line, nothing else on stdout
    assert "temperature must be >= 0" in proc.stderr and "unknown knob 'warmth'" in proc.stderr
    assert "unknown command /bogus" in proc.stderr and "Traceback" not in proc.stderr
    record = json.loads(transcript.read_text().splitlines()[0])
    roles = [m["role"] for m in record["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert record["messages"][2]["content"].replace("\n", "\\n").replace("\r", "\\r") == replies[0]


def read_until(fd, marker: bytes, timeout: float = 60.0) -> bytes:
    """Read from a pty until `marker` shows up (or fail after `timeout` seconds)."""
    data, deadline = b"", time.monotonic() + timeout
    while marker not in data:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(left, 0))
        if not ready:
            raise AssertionError(f"timed out waiting for {marker!r}; got {data[-300:]!r}")
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        data += chunk
    return data


def test_chat_on_a_terminal(make_tiny_model):
    model = make_tiny_model("llama")
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "llmcycle", "chat", "--model", str(model), *GREEDY],
                            stdin=slave, stdout=slave, stderr=slave, env={**env(), "TERM": "dumb"}, close_fds=True)
    os.close(slave)
    try:
        assert b"/help" in read_until(master, b"you> ")
        os.write(master, b"hello there\n")
        assert b"bot> " in read_until(master, b"you> ")
        os.write(master, b"/set top_p 2\n")
        assert b"top_p must be in (0, 1]" in read_until(master, b"you> ")
        os.write(master, b"/show\n")
        assert b"temperature" in read_until(master, b"you> ")
        os.write(master, b"/quit\n")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def test_generate_prompt_and_file(make_tiny_model, chat_data_dir, tmp_path, capsys):
    model = str(make_tiny_model("qwen2"))
    code, out, _ = run_cli(["generate", "--model", model, "--prompt", "hello", *GREEDY], capsys)
    assert code == 0 and out.strip() != ""
    source = tmp_path / "in.jsonl"
    source.write_text((chat_data_dir / "test.jsonl").read_text().splitlines()[0] + "\n" + '{"prompt": "we went"}\n')
    target = tmp_path / "out.jsonl"
    code, _, err = run_cli(["generate", "--model", model, "--input", str(source), "--out", str(target), *GREEDY],
                           capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(lines) == 2 and all("reply" in r and r["finish_reason"] in ("eos", "length") for r in lines)
    assert lines[1]["prompt"] == "we went"


@pytest.mark.parametrize("args, message", [
    (["generate", "--model", "/nonexistent/model", "--prompt", "hi"], "no such model dir"),
    (["generate", "--prompt", "hi", "--top-p", "1.5"], "top_p"),
    (["generate", "--prompt", "hi", "--temperature", "-1"], "temperature"),
    (["generate", "--prompt", "   "], "empty prompt"),
    (["generate", "--prompt", "hi", "--quantize", "int3"], "quantize"),
    (["generate", "--prompt", "hi", "--quantize", "int4:128"], "does not divide"),
    (["generate", "--input", "IN", "--out", "OUT"], "bad.jsonl:1"),
    (["chat", "--max-turns", "-1"], "max_turns"),
])
def test_bad_input_exits_2_with_one_line(make_tiny_model, tmp_path, capsys, args, message):
    model = str(make_tiny_model("llama"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": "nope"}\n')
    args = [str(bad) if a == "IN" else str(tmp_path / "o.jsonl") if a == "OUT" else a for a in args]
    if "--model" not in args:
        args = args[:1] + ["--model", model] + args[1:]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err


def test_prompt_longer_than_context(make_tiny_model, capsys):
    model = str(make_tiny_model("llama"))
    code, _, err = run_cli(["generate", "--model", model, "--prompt", "hello there " * 400], capsys)
    assert code == 2 and "context" in err and "Traceback" not in err


def test_run_config_chat_section(make_tiny_model, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"chat:\n  model: {make_tiny_model('llama')}\n  temperature: 0\n  max_new_tokens: 4\n"
                      "  stop: ['zzz']\ntokenizer:\n  vocab_size: 512\n")
    code, out, err = run_cli(["generate", "-c", str(config), "--prompt", "hello"], capsys)
    assert code == 0 and out.strip(), err
    from llmcycle.cli.infer import _config

    cfg = _config(config, ["chat.top_k=5"], temperature=0.5)
    assert (cfg.temperature, cfg.top_k, cfg.max_new_tokens, cfg.stop) == (0.5, 5, 4, ["zzz"])
    config.write_text("chat:\n  warmth: 3\n")
    code, _, err = run_cli(["chat", "-c", str(config)], capsys)
    assert code == 2 and "warmth: unknown key" in err
