"""The server and eval make idle OpenMP threads sleep: set before torch loads, never over the user's own choice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch  # noqa: F401 - loaded in this process: the last test's point

from llmcycle.openmp import WAIT_POLICY_ENV, passive_openmp

SRC = str(Path(__file__).resolve().parents[2] / "src")
PROBE = ("import sys; from llmcycle.openmp import passive_openmp; "
         "print(passive_openmp(), 'torch' in sys.modules)")


def probe(code: str = PROBE, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != WAIT_POLICY_ENV}
    base["PYTHONPATH"] = SRC + os.pathsep + base.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_fresh_server_process_sleeps_its_idle_threads():
    assert probe() == "PASSIVE False"  # set while torch is not loaded yet, so libgomp reads it


@pytest.mark.parametrize("command", ["serve", "eval"])
def test_the_command_asks_before_its_commands_load_torch(command):
    code = (f"import os, sys; sys.argv = ['llmcycle', '{command}']; import llmcycle.cli; "
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    assert probe(code) == "PASSIVE True"  # set, and torch (which reads it once) was loaded after


def test_other_commands_keep_libgomp_default():
    code = ("import os, sys; sys.argv = ['llmcycle', 'train']; import llmcycle.cli; "
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    assert probe(code) == "None True"  # training's long products keep spinning workers


def test_an_explicit_policy_wins():
    assert probe(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE False"


def test_too_late_once_torch_is_loaded(monkeypatch):
    monkeypatch.delenv(WAIT_POLICY_ENV, raising=False)
    assert passive_openmp().startswith("unset")
    assert WAIT_POLICY_ENV not in os.environ  # nothing claims a policy libgomp never read
