"""What an installed wheel holds: the shipped configs (so `llmcycle run -c default` works anywhere) and a torch floor
that covers what the code uses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_the_configs_and_resolves_bare_names(tmp_path):
    import shutil

    source, wheels = tmp_path / "source", tmp_path / "wheels"  # a clean copy: no stale build/ of the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "dist", "*.egg-info", "__pycache__",
                                                                 ".venv", "runs", "tests", "bench"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("llmcycle-*.whl"))
    shipped = {Path(n).name for n in zipfile.ZipFile(wheel).namelist() if n.startswith("llmcycle/configs/")}
    assert shipped == {p.name for p in (ROOT / "configs").glob("*.yaml")} and "default.yaml" in shipped
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"llmcycle/resources/sweep_space.yaml", "llmcycle/resources/prompt_variants.yaml"} <= names  # examples
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import llmcycle, llmcycle.config as c; print(llmcycle.__file__); "
            "print(c.read_yaml('default')['name'], c.read_yaml('configs/tiny.yaml')['name'])")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0].startswith(str(site))  # the installed copy, not the source checkout
    assert out[1].split() == ["default", "tiny"]


def test_torch_floor_covers_enable_gqa():
    """The fast path calls scaled_dot_product_attention(enable_gqa=...), which torch has since 2.5."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'"torch>=(\d+)\.(\d+)', pyproject)
    assert floor and (int(floor.group(1)), int(floor.group(2))) >= (2, 5)
    assert "enable_gqa" in (ROOT / "src/llmcycle/infer/fast_llama.py").read_text()


def declared_floors() -> dict[str, tuple[int, ...]]:
    """{package: floor} of the six whose floors are the tested versions, and Python's."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    floors = {name: re.search(rf'"{name}>=([\d.]+)', pyproject).group(1)
              for name in ("torch", "transformers", "peft", "trl", "accelerate")}
    floors["python"] = re.search(r'requires-python = ">=([\d.]+)"', pyproject).group(1)
    return {name: tuple(int(p) for p in value.split(".")) for name, value in floors.items()}


def test_the_tested_environment_meets_every_declared_floor_and_the_docs_say_so():
    """The floors are what the suite runs on: an environment below one would mean an untested promise."""
    from importlib.metadata import version

    floors = declared_floors()
    assert sys.version_info[:2] >= floors.pop("python")
    for name, floor in floors.items():
        installed = tuple(int(p) for p in re.findall(r"\d+", version(name))[:len(floor)])
        assert installed >= floor, f"{name} {version(name)} is below the declared floor {floor}"
    table = (ROOT / "docs" / "index.md").read_text().split("## Supported versions", 1)[1]
    for name, floor in declared_floors().items():
        shown = "Python" if name == "python" else name
        assert f"| {shown} | {'.'.join(map(str, floor))}" in table, name
