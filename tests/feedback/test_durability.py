"""A writer killed with SIGKILL mid-stream leaves a database that opens clean and holds every acknowledged row."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

WRITER = """
import sys
from llmcycle.feedback.store import FeedbackStore
store = FeedbackStore(sys.argv[1])
store.record_response("r1", "m", [{"role": "user", "content": "hi"}], "hello", {}, "stop")
i = 0
while True:
    row = store.add_rating("r1", 1 if i % 2 else -1, f"c{i}")
    print(row, flush=True)  # acknowledged: committed before it is printed
    i += 1
"""


def test_kill9_keeps_every_acknowledged_row(tmp_path):
    db = tmp_path / "feedback.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True, env=env)
    acked = []
    for line in proc.stdout:
        acked.append(int(line))
        if len(acked) >= 300:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        present = {r[0] for r in conn.execute("SELECT id FROM feedback")}
    assert set(acked) <= present
