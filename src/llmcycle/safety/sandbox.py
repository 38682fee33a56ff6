"""Run untrusted generated code (benchmark completions) under operating-system isolation, not Python hooks.

Each program runs in fresh Linux namespaces (`unshare`): its own network namespace (only a loopback that is down,
no route out), its own PID namespace (every process it starts dies with it), its own mount, IPC and UTS
namespaces. Its root is a new tmpfs holding read-only binds of the interpreter and system libraries only (no /etc,
/home, /tmp, /work or /root of the host), a private size-capped tmpfs work dir, a minimal /dev and /proc. It runs
as nobody (uid 65534) with no new privileges when started as root, or as a capability-less root of a user namespace
otherwise, under rlimits on CPU time, address space, file size, processes and open files; its output is read with
a cap. A timeout kills the whole namespace.

Where the machine cannot build this (no `unshare`, namespaces refused), `run_program` raises SandboxUnavailable
unless the caller passed `allow_unsafe=True`, which runs the code with rlimits only.
"""

from __future__ import annotations

import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llmcycle.errors import UserError

NOBODY = 65534
OUTPUT_CAP = 64 << 10  # bytes of stdout and of stderr kept; the rest is read and dropped
WORK_MB = 16  # the work dir's size: a program that fills it gets ENOSPC
FILE_MB = 8  # the largest file a program may write
MAX_PROCS = 32  # a fork bomb meets EAGAIN
MAX_FILES = 64
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")
# Runs as root of the new namespaces, before the program: the new root, then drop to the program's user.
SETUP = r"""set -e
R="$1"; shift
mount -t tmpfs -o size=1m,mode=755 none "$R"
for d in $LLMCYCLE_RO; do
  if [ -L "$d" ]; then mkdir -p "$R$(dirname "$d")"; ln -s "$(readlink "$d")" "$R$d"
  elif [ -d "$d" ]; then mkdir -p "$R$d"; mount --rbind "$d" "$R$d"; mount -o remount,bind,ro,nosuid,nodev "$R$d"
  fi
done
mkdir -p "$R/work" "$R/proc" "$R/dev" "$R/tmp"
mount -t tmpfs -o size=${LLMCYCLE_WORK_MB}m,mode=1777,nosuid,nodev "none" "$R/work"
mount -t tmpfs -o size=1m,mode=1777,nosuid,nodev,noexec none "$R/tmp"
mkdir -p "$R/dev/shm"; mount -t tmpfs -o size=4m,mode=1777,nosuid,nodev,noexec none "$R/dev/shm"
cp "$LLMCYCLE_PROGRAM" "$R/work/program.py"; chmod 644 "$R/work/program.py"
for n in null zero urandom random; do touch "$R/dev/$n"; mount --bind "/dev/$n" "$R/dev/$n"; done
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount -o remount,ro,bind "$R"
cd "$R/work"
exec chroot "$R" /bin/sh -c 'cd /work && exec "$@"' sh "$@"
"""


class SandboxUnavailable(UserError):
    """Generated code would run unisolated: the user must opt in."""


@dataclass
class Outcome:
    passed: bool
    reason: str  # "passed" | "timeout" | "error: ..." (the last line of stderr)
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0


def _ro_paths() -> list[str]:
    """System dirs and wherever the interpreter and its standard library live (a pyenv or venv prefix)."""
    paths = [d for d in SYSTEM_DIRS if os.path.lexists(d)]
    for path in (sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)), sysconfig.get_paths()["stdlib"]):
        if not any(path == p or path.startswith(p + "/") for p in paths):
            paths.append(path)
    return paths


def _command(root: Path, as_root: bool) -> list[str]:
    python = os.path.realpath(sys.executable)
    drop = (["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs",
             "--inh-caps=-all", "--bounding-set=-all"] if as_root else
            ["setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all"])
    user = [] if as_root else ["--user", "--map-root-user"]
    return ["unshare", *user, "--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child",
            "--propagation", "private", "sh", "-c", SETUP, "sandbox", str(root),
            *drop, python, "-I", "-S", "-B", "program.py"]


def _limits(cpu_s: int, memory_mb: int) -> None:
    """rlimits for the whole tree (they pass through unshare, chroot and setpriv to the program)."""
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_MB << 20, FILE_MB << 20))
    resource.setrlimit(resource.RLIMIT_NPROC, (MAX_PROCS, MAX_PROCS))
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_FILES, MAX_FILES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _read_capped(proc: subprocess.Popen, deadline: float) -> tuple[bytes, bytes, bool]:
    """Both pipes read until they close or the deadline passes; at most OUTPUT_CAP bytes of each are kept."""
    kept = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    with selectors.DefaultSelector() as sel:
        for pipe in kept:
            sel.register(pipe, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(kept[proc.stdout]), bytes(kept[proc.stderr]), True
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = kept[key.fileobj]
                buf += chunk[:max(0, OUTPUT_CAP - len(buf))]
    return bytes(kept[proc.stdout]), bytes(kept[proc.stderr]), False


def _run(cmd: list[str], env: dict, cwd: str, timeout_s: float, memory_mb: int) -> Outcome:
    began = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: _limits(int(timeout_s) + 1, memory_mb))
    try:
        out, err, timed_out = _read_capped(proc, began + timeout_s)
        if not timed_out:  # the pipes close a moment before the process can be reaped
            try:
                proc.wait(timeout=max(0.0, began + timeout_s - time.monotonic()) + 1.0)
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # unshare --kill-child takes the whole PID namespace with it
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    seconds = time.monotonic() - began
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    if timed_out:
        return Outcome(False, "timeout", stdout, stderr, seconds)
    if proc.returncode == 0:
        return Outcome(True, "passed", stdout, stderr, seconds)
    last = stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    return Outcome(False, "error: " + last[0][:160], stdout, stderr, seconds)


def _env(home: str) -> dict:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": home, "TMPDIR": home, "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "LC_ALL": "C.UTF-8"}


def run_isolated(program: str, timeout_s: float = 10.0, memory_mb: int = 1024) -> Outcome:
    """`program` run in the namespaces described above; SandboxUnavailable when they cannot be built."""
    if not isolation_available():
        raise SandboxUnavailable(f"cannot isolate generated code on this machine ({isolation_problem()})")
    return _isolated(program, timeout_s, memory_mb)


def _isolated(program: str, timeout_s: float, memory_mb: int) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="llmcycle-sandbox-") as tmp:
        source, root = Path(tmp, "program.py"), Path(tmp, "root")
        source.write_text(program, encoding="utf-8")
        root.mkdir()
        env = {**_env("/work"), "LLMCYCLE_RO": " ".join(_ro_paths()), "LLMCYCLE_WORK_MB": str(WORK_MB),
               "LLMCYCLE_PROGRAM": str(source)}
        return _run(_command(root, os.geteuid() == 0), env, tmp, timeout_s, memory_mb)


def run_unsafe(program: str, timeout_s: float = 10.0, memory_mb: int = 1024) -> Outcome:
    """`program` in a temp dir with rlimits only: no isolation at all (the user asked for it)."""
    with tempfile.TemporaryDirectory(prefix="llmcycle-unsafe-") as tmp:
        Path(tmp, "program.py").write_text(program, encoding="utf-8")
        cmd = [sys.executable, "-I", "-S", "-B", "program.py"]
        return _run(cmd, _env(tmp), tmp, timeout_s, memory_mb)


def run_program(program: str, timeout_s: float = 10.0, memory_mb: int = 1024, allow_unsafe: bool = False) -> Outcome:
    """Execute `program` (source text), isolated; unisolated only when isolation is impossible and
    `allow_unsafe` is set. Anything other than a clean exit within the limits is a failure."""
    if not isolation_available() and allow_unsafe:
        return run_unsafe(program, timeout_s, memory_mb)
    return run_isolated(program, timeout_s, memory_mb)


def require_isolation(allow_unsafe: bool) -> None:
    """Called before a benchmark generates anything: refuse early, in one line, when code would run unisolated."""
    if not isolation_available() and not allow_unsafe:
        raise SandboxUnavailable(f"refusing to run generated code: this machine cannot isolate it "
                                 f"({isolation_problem()}); pass --allow-unsafe-exec to run it anyway")


@lru_cache(maxsize=1)
def isolation_problem() -> str | None:
    """Why the sandbox cannot be built here, or None when a trivial program runs in it."""
    missing = [tool for tool in ("unshare", "setpriv", "chroot", "mount") if shutil.which(tool) is None
               and not os.path.exists(f"/usr/sbin/{tool}")]
    if missing or not sys.platform.startswith("linux"):
        return f"missing {', '.join(missing)}" if missing else f"not Linux ({sys.platform})"
    probe = _isolated("import os\nassert os.getcwd() == '/work'\n", 30.0, 1024)
    return None if probe.passed else f"namespaces refused: {probe.reason}"


def isolation_available() -> bool:
    return isolation_problem() is None
