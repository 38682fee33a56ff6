"""The server asks for briefly spinning idle OpenMP threads and eval for sleeping ones: set before torch loads, never
over the user's own choice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch  # noqa: F401 - loaded in this process: the last test's point

from llmcycle.openmp import SPIN_COUNT, SPIN_COUNT_ENV, WAIT_POLICY_ENV, passive_openmp, short_openmp_spin

SRC = str(Path(__file__).resolve().parents[2] / "src")
PROBE = ("import sys; from llmcycle.openmp import short_openmp_spin; "
         "print(short_openmp_spin(), 'torch' in sys.modules)")
SHOW = "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"


def probe(code: str = PROBE, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in (WAIT_POLICY_ENV, SPIN_COUNT_ENV)}
    base["PYTHONPATH"] = SRC + os.pathsep + base.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_a_fresh_server_process_spins_briefly():
    # set while torch is not loaded yet, so libgomp reads it
    assert probe() == f"OMP_WAIT_POLICY=ACTIVE GOMP_SPINCOUNT={SPIN_COUNT} False"


@pytest.mark.parametrize("command, said", [("serve", f"ACTIVE {SPIN_COUNT}"), ("eval", "PASSIVE None")])
def test_the_command_asks_before_its_commands_load_torch(command, said):
    code = f"import os, sys; sys.argv = ['llmcycle', '{command}']; import llmcycle.cli; " + SHOW
    assert probe(code) == f"{said} True"  # set, and torch (which reads it once) was loaded after


def test_other_commands_keep_libgomp_default():
    code = "import os, sys; sys.argv = ['llmcycle', 'train']; import llmcycle.cli; " + SHOW
    assert probe(code) == "None None True"  # training's long products keep libgomp's own spinning


@pytest.mark.parametrize("env, said", [({"OMP_WAIT_POLICY": "PASSIVE"}, "OMP_WAIT_POLICY=PASSIVE"),
                                       ({"GOMP_SPINCOUNT": "5"}, "GOMP_SPINCOUNT=5")])
def test_an_explicit_setting_wins(env, said):
    assert probe(**env) == f"{said} False"


def test_too_late_once_torch_is_loaded(monkeypatch):
    monkeypatch.delenv(WAIT_POLICY_ENV, raising=False)
    monkeypatch.delenv(SPIN_COUNT_ENV, raising=False)
    assert short_openmp_spin().startswith("libgomp default") and passive_openmp().startswith("libgomp default")
    assert WAIT_POLICY_ENV not in os.environ  # nothing claims a policy libgomp never read
