"""Run untrusted generated code: a fresh interpreter in an empty temp dir, with a timeout, CPU/memory/file-size
limits, and an audit hook (which the code cannot remove) that refuses network, new processes and any write or
delete outside the temp dir. Anything it refuses, or a timeout, is a failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

GUARD = r'''
import os, sys
_root = os.path.realpath(os.getcwd())
_read_ok = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, _root)} )
_banned = {"socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo", "subprocess.Popen",
           "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "pty.spawn",
           "ctypes.dlopen", "os.kill", "os.chdir"}
_path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.symlink",
                "os.link", "os.truncate", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}
def _inside(path, allowed):
    try:
        path = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else _root)
    except Exception:
        return False
    return any(path == a or path.startswith(a + os.sep) for a in allowed)
def _guard(event, args):
    if event in _banned:
        raise PermissionError("sandbox: " + event)
    if event == "open" and args and args[0] is not None:
        mode = str(args[1] or "r") if len(args) > 1 else "r"
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        writing = any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        if not _inside(args[0], (_root,) if writing else _read_ok):
            raise PermissionError("sandbox: open " + str(args[0]))
    elif event in _path_events and args and not _inside(args[0], (_root,)):
        raise PermissionError("sandbox: " + event + " " + str(args[0]))
sys.addaudithook(_guard)
del _guard
exec(compile(open("program.py").read(), "program.py", "exec"), {"__name__": "__main__"})
'''


@dataclass
class Outcome:
    passed: bool
    reason: str  # "passed" | "failed" | "timeout" | "error: ..."


def _limits(cpu_s: int, memory_mb: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_program(program: str, timeout_s: float = 10.0, memory_mb: int = 1024) -> Outcome:
    """Execute `program` (source text) and report whether it exited cleanly within the limits."""
    with tempfile.TemporaryDirectory(prefix="llmcycle-sandbox-") as tmp:
        Path(tmp, "program.py").write_text(program, encoding="utf-8")
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", GUARD], cwd=tmp, env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True,
                                preexec_fn=lambda: _limits(int(timeout_s) + 1, memory_mb))
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return Outcome(False, "timeout")
        if proc.returncode == 0:
            return Outcome(True, "passed")
        last = (err or b"").decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return Outcome(False, "error: " + last[0][:160])
