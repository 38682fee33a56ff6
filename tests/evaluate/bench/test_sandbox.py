"""Generated code runs contained: writes outside its temp dir, network, new processes and endless loops all fail."""

from __future__ import annotations

from llmcycle.evaluate.bench.sandbox import run_program


def test_clean_program_passes_and_a_failing_assert_fails():
    assert run_program("assert sum([1, 2]) == 3\n").passed
    outcome = run_program("assert 1 == 2\n")
    assert not outcome.passed and "AssertionError" in outcome.reason


def test_writes_inside_the_temp_dir_are_allowed():
    assert run_program("open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n").passed


def test_write_outside_the_temp_dir_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    outcome = run_program(f"open({str(target)!r}, 'w').write('pwned')\n")
    assert not outcome.passed and "sandbox" in outcome.reason
    assert not target.exists()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    assert not run_program(f"import os\nos.remove({str(victim)!r})\n").passed
    assert victim.read_text() == "keep me"


def test_network_and_subprocesses_are_refused():
    for program in ("import socket\nsocket.create_connection(('127.0.0.1', 9))\n",
                    "import subprocess\nsubprocess.run(['true'])\n", "import os\nos.system('true')\n"):
        outcome = run_program(program)
        assert not outcome.passed and "sandbox" in outcome.reason, program


def test_an_endless_loop_times_out():
    outcome = run_program("while True:\n    pass\n", timeout_s=1.0)
    assert not outcome.passed and outcome.reason == "timeout"
