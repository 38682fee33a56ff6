"""The server makes idle OpenMP threads sleep: set before torch loads, never over the user's own choice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch  # noqa: F401 - loaded in this process: the last test's point

from llmcycle.serve.server import WAIT_POLICY_ENV, passive_openmp

SRC = str(Path(__file__).resolve().parents[2] / "src")
PROBE = ("import sys; from llmcycle.serve.server import passive_openmp; "
         "print(passive_openmp(), 'torch' in sys.modules)")


def probe(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != WAIT_POLICY_ENV}
    base["PYTHONPATH"] = SRC + os.pathsep + base.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_fresh_server_process_sleeps_its_idle_threads():
    assert probe() == "PASSIVE False"  # set while torch is not loaded yet, so libgomp reads it


def test_an_explicit_policy_wins():
    assert probe(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE False"


def test_too_late_once_torch_is_loaded(monkeypatch):
    monkeypatch.delenv(WAIT_POLICY_ENV, raising=False)
    assert passive_openmp().startswith("unset")
    assert WAIT_POLICY_ENV not in os.environ  # nothing claims a policy libgomp never read
