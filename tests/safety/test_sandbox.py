"""The generated-code sandbox: escape attempts that must all fail, checked from the host's side, and the refusal
to run unisolated code unless asked."""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path

import pytest

from llmcycle.safety import sandbox
from llmcycle.safety.sandbox import SandboxUnavailable, require_isolation, run_program

isolated = pytest.mark.skipif(not sandbox.isolation_available(), reason="this machine cannot build the sandbox")


def attempt(body: str, timeout_s: float = 10.0) -> sandbox.Outcome:
    """Run `body`; it prints ESCAPED when the attempt got through, and `blocked: <error>` when it was refused."""
    program = f"try:\n{body}\n    print('ESCAPED')\nexcept BaseException as exc:\n    print('blocked:', repr(exc))\n"
    return run_program(program, timeout_s=timeout_s)


def indent(code: str) -> str:
    return "".join(f"    {line}\n" for line in code.strip().splitlines())


def leftover(token: str) -> list[str]:
    """Host processes whose command line holds `token`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if token.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


@isolated
def test_benign_program_runs_and_sees_only_its_work_dir():
    out = run_program("import os\nprint(os.getuid(), os.getcwd(), sorted(os.listdir('/')))\n")
    assert out.passed, out.stderr
    uid, cwd, _ = out.stdout.split(" ", 2)
    assert (int(uid) == 65534) == (os.geteuid() == 0) and cwd == "/work"
    assert "etc" not in out.stdout and "home" not in out.stdout


@isolated
def test_pass_fail_scratch_files_and_timeout():
    assert run_program("assert sum([1, 2]) == 3\n").passed
    outcome = run_program("assert 1 == 2\n")
    assert not outcome.passed and "AssertionError" in outcome.reason
    assert run_program("open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'\n").passed
    outcome = run_program("while True:\n    pass\n", timeout_s=1.0)
    assert not outcome.passed and outcome.reason == "timeout"


@isolated
def test_humaneval_canonical_solutions_pass():
    """Benign completions score as before: the benchmark's own solutions all pass inside the sandbox."""
    from llmcycle.evaluate.bench.generation import humaneval, humaneval_metric

    items = humaneval().test[:6]
    metrics, scores = humaneval_metric([item.gold for item in items], items)
    assert metrics["humaneval_pass@1"] == 1.0 and scores == [1.0] * 6


@isolated
def test_files_outside_the_work_dir_cannot_be_read_or_written(tmp_path):
    secret = tmp_path / "planted.txt"
    secret.write_text("s3cret-" + secrets.token_hex(4))
    secret.chmod(0o644)
    target = Path("/tmp") / f"llmcycle-escape-{secrets.token_hex(4)}"
    for code in (f"print(open({str(secret)!r}).read())", "print(open('/etc/shadow').read())",
                 "print(open('/proc/1/root/etc/hostname').read())",
                 f"open({str(target)!r}, 'w').write('x'); import os; os.system('cat /proc/self/mounts')",
                 "open('/usr/escape', 'w').write('x')", "open('/escape', 'w').write('x')"):
        out = attempt(indent(code))
        assert "s3cret" not in out.stdout and "root:" not in out.stdout, code
    assert not target.exists() and not Path("/usr/escape").exists() and not Path("/escape").exists()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    attempt(indent(f"import os\nos.remove({str(victim)!r})"))
    assert victim.read_text() == "keep me"


@isolated
def test_rewriting_python_level_guards_gains_nothing(tmp_path):
    target = tmp_path / "owned"
    code = f"""
import sys, builtins, ctypes
sys.modules['__main__'].__dict__.clear()
sys.addaudithook = None
libc = ctypes.CDLL(None)
assert libc.setuid(0) != 0 and libc.unshare(0x20000) != 0 and libc.chroot(b'/proc/1/root') != 0
open({str(target)!r}, 'w').write('x')
"""
    out = attempt(indent(code))
    assert "blocked:" in out.stdout and not target.exists()


@isolated
def test_no_socket_reaches_the_host(tmp_path):
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    path = str(tmp_path / "unix.sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(path)
    unix.listen(1)
    unix.setblocking(False)
    abstract_name = "\0llmcycle-" + secrets.token_hex(4)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(abstract_name)
    abstract.listen(1)
    abstract.setblocking(False)
    tries = {
        "tcp": f"import socket; socket.create_connection(('127.0.0.1', {tcp.getsockname()[1]}), timeout=2)",
        "udp_sendto": f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                      f"s.sendto(b'x', ('127.0.0.1', {udp.getsockname()[1]}))",
        "udp_sendmsg": f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                       f"s.sendmsg([b'x'], [], 0, ('127.0.0.1', {udp.getsockname()[1]}))",
        "unix": f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({path!r})",
        "abstract": f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({abstract_name!r})",
        "raw": "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
        "packet": "import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
        "dns": "import socket; socket.getaddrinfo('pypi.org', 443)",
        "outside": "import socket; socket.create_connection(('1.1.1.1', 53), timeout=2)",
    }
    for name, code in tries.items():
        out = attempt(indent(code))
        assert "blocked:" in out.stdout and "ESCAPED" not in out.stdout, (name, out)
    for server in (tcp, unix, abstract):
        with pytest.raises(BlockingIOError):
            server.accept()
    with pytest.raises(BlockingIOError):
        udp.recv(16)


@isolated
def test_spawned_processes_stay_inside():
    """Shell, multiprocessing spawn, fork and exec all run, and write where the host would see it: they write
    into the sandbox's own /tmp, which the host never sees."""
    target = Path("/tmp") / f"llmcycle-escape-{secrets.token_hex(4)}"
    program = f"""
import multiprocessing, os, subprocess
def child():
    open('{target}.spawn', 'w').write('x')
if __name__ == '__main__':
    subprocess.run('echo x > {target}.shell', shell=True)
    os.system('touch {target}.system')
    p = multiprocessing.get_context('spawn').Process(target=child)
    p.start(); p.join()
    if os.fork() == 0:
        os.execv('/bin/sh', ['sh', '-c', 'touch {target}.exec'])
    os.wait()
    print(sorted(name.rsplit('.', 1)[1] for name in os.listdir('/tmp')))
"""
    out = run_program(program)
    assert out.passed, out.stderr
    assert out.stdout.strip() == "['exec', 'shell', 'spawn', 'system']"
    assert not any(Path(f"{target}{end}").exists() for end in (".spawn", ".shell", ".system", ".exec"))


@isolated
def test_no_process_outlives_the_run():
    token = "llmcycle-bg-" + secrets.token_hex(4)
    code = f"""
import os, subprocess
subprocess.Popen(['python3', '-c', 'import time; time.sleep(120)  # {token}'], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    os.execv('/bin/sh', ['sh', '-c', 'sleep 120; : {token}'])
"""
    out = attempt(indent(code))
    assert out.passed
    assert leftover(token) == []


@isolated
def test_disk_and_memory_are_capped():
    code = """
import signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
open('big', 'wb').write(b'x' * (64 << 20))
"""
    out = attempt(indent(code))
    assert "blocked:" in out.stdout and ("File too large" in out.stdout or "MemoryError" in out.stdout)
    code = "\n".join(f"open('f{i}', 'wb').write(b'x' * (6 << 20))" for i in range(5))
    out = attempt(indent(code))
    assert "No space left" in out.stdout
    out = attempt(indent("x = bytearray(4 << 30)"))
    assert "MemoryError" in out.stdout


@isolated
def test_fork_bomb_is_contained():
    token = "llmcycle-bomb-" + secrets.token_hex(4)
    program = f"# {token}\nimport os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    began = time.monotonic()
    out = run_program(program, timeout_s=2)
    assert not out.passed and time.monotonic() - began < 10
    assert leftover(token) == []


def test_unisolated_code_needs_explicit_consent(monkeypatch):
    monkeypatch.setattr(sandbox, "isolation_problem", lambda: "missing unshare")
    with pytest.raises(SandboxUnavailable, match="--allow-unsafe-exec"):
        require_isolation(False)
    with pytest.raises(SandboxUnavailable):
        run_program("print(1)")
    require_isolation(True)
    assert run_program("print(1)", allow_unsafe=True).stdout == "1\n"


def test_eval_refuses_humaneval_before_any_model_runs(monkeypatch):
    from llmcycle.evaluate.stage import EvalConfig, build_tasks

    monkeypatch.setattr(sandbox, "isolation_problem", lambda: "missing unshare")
    with pytest.raises(SandboxUnavailable, match="cannot isolate"):
        build_tasks(EvalConfig(tasks=["humaneval"]), None, [])
