"""What a bench result was measured on, written beside its numbers: the date, the command and the CPU.

Speeds on shared cloud CPUs move with the host (the same serving bench gave llama.cpp 248 and 410 tok/s on one day,
on the same kind of machine), so a result without its machine and date cannot be compared with another. Nothing here imports torch: serve_bench.py
sets OpenMP's environment before torch loads.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

# the instruction sets the CPU paths depend on (bf16 copies, int4/int8 kernels, oneDNN)
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def cpu_name() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def stamp() -> dict:
    """{date (UTC), command, machine} for a result file."""
    flags = set(_cpuinfo().get("flags", "").split())
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": " ".join(["python", *sys.argv]),
            "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "flags": [f for f in FLAGS if f in flags],
                        "python": platform.python_version()}}
