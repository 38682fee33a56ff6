"""`llmcycle serve` on a busy port: one line naming the port and what to do, exit 2, before the model loads and
with nothing printed that suggests the server started."""

from __future__ import annotations

import socket

from llmcycle.serve.server import bind


def test_busy_port_is_one_line_exit_2(cli, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = cli("serve", "--model", tmp_path, "--port", port)  # tmp_path: never loaded
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"error: --port {port}: 127.0.0.1:{port} is already in use (another "
                                        "server?); choose another with --port N, or --host ADDR"]


def test_free_port_is_bound_for_the_server():
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()
