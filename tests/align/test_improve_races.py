"""Concurrent `improve` runs: attempt numbers reserved atomically, promotion a compare-and-swap on the pointer."""

from __future__ import annotations

import os
import threading

from llmcycle.improve import next_attempt, promote


def test_attempt_numbers_skip_runs_in_progress_and_never_collide(tmp_path):
    (tmp_path / "attempt-001").mkdir()
    (tmp_path / "attempt-004.partial").mkdir()  # a run still in progress keeps its number
    assert next_attempt(tmp_path).name == "attempt-005"
    taken: list = []
    threads = [threading.Thread(target=lambda: taken.append(next_attempt(tmp_path).name)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == [f"attempt-{n:03d}" for n in range(6, 14)]
    assert all((tmp_path / f"{name}.partial").is_dir() for name in taken)  # reserved at once


def test_promotion_is_a_compare_and_swap(tmp_path):
    models = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        models.append(str((tmp_path / name).resolve()))
    pointer = tmp_path / "current.txt"
    pointer.write_text(models[0])
    assert promote(pointer, models[1], expected=models[0])
    assert not promote(pointer, models[2], expected=models[0])  # gated against a, but b is served now
    assert pointer.read_text() == models[1]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".current.txt.")]  # no temp file left
