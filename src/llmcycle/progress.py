"""One progress-bar helper so every stage looks the same (tqdm; quiet when LLMCYCLE_QUIET=1)."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def quiet() -> bool:
    return os.environ.get("LLMCYCLE_QUIET", "") not in ("", "0")


def bar(iterable: Iterable[T] | None = None, total: int | None = None, desc: str = "", unit: str = "it", **kw) -> tqdm:
    return tqdm(
        iterable, total=total, desc=desc, unit=unit, disable=quiet(), dynamic_ncols=True, file=sys.stderr,
        mininterval=0.5, **kw,
    )


def say(message: str) -> None:
    """A status line for humans, on stderr so stdout stays clean for data."""
    if not quiet():
        print(message, file=sys.stderr, flush=True)
