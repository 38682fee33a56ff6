"""Old option spellings, kept working (hidden from help) for one release after the CLI took one name per concept.

They are rewritten in the argument list before the command parses it, so each command declares only the current
names and its help shows only those; a one-line note on stderr names the new spelling.
"""

from __future__ import annotations

import sys
from typing import Optional, TextIO

# command -> {old spelling: current spelling}
ALIASES: dict[str, dict[str, str]] = {
    "data": {"-p": "--path"},
    "finetune": {"--base": "--model", "--method": "--tuning"},
    "reward": {"--base": "--model"},
    "align": {"--base": "--model"},
    "distill": {"--student": "--model"},
    "pretrain": {"--init-from": "--model"},
    "merge": {"--adapter": "--model"},
    "generate": {"--output": "--out"},
    "serve": {"-p": "--port"},
}


def rewrite(argv: list[str], err: Optional[TextIO] = None) -> list[str]:
    """argv with the command's old spellings replaced (`--base X` and `--base=X` alike)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    table = ALIASES.get(command or "", {})
    if not table:
        return argv
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        new = table.get(name)
        if new is None:
            out.append(arg)
            continue
        print(f"note: {command} {name} is now {new} (the old spelling goes away in the next release)", file=err or sys.stderr)
        out.append(f"{new}{eq}{value}")
    return out
