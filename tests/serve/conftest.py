"""A live server on 127.0.0.1 (uvicorn in a thread, a free port), over a tiny random Llama: tests talk to it with
the official openai client and plain HTTP. Readiness is polled on /health, never slept for."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest


class Live:
    def __init__(self, app, url: str, server, thread, db: Path):
        self.app, self.url, self.server, self.thread, self.db = app, url, server, thread, db

    @property
    def state(self):
        return self.app.state.llm

    def client(self, key: str = "none"):
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start_server(cfg) -> Live:
    import httpx
    import uvicorn

    from llmcycle.serve.server import build, resolve

    app = build(resolve(cfg))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                           timeout_graceful_shutdown=max(1, round(cfg.drain_seconds))))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    live = Live(app, f"http://127.0.0.1:{port}", server, thread, Path(cfg.feedback_db or ""))
    deadline = time.monotonic() + 60
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    while time.monotonic() < deadline:
        try:
            if httpx.get(live.url + "/health", headers=headers, timeout=5).status_code == 200:
                return live
        except httpx.HTTPError:
            pass
        thread.join(0.02)  # yields to the server thread while polling, without a fixed sleep
    raise RuntimeError("server did not become ready")


@pytest.fixture(scope="session")
def live_server(make_tiny_model, tmp_path_factory):
    from llmcycle.serve.config import ServeConfig

    root = tmp_path_factory.mktemp("serve")
    cfg = ServeConfig(model=str(make_tiny_model("llama")), feedback_db=str(root / "feedback.db"),
                      request_log=str(root / "requests.jsonl"), max_context=160, max_tokens=64, max_n=3,
                      max_body_bytes=20_000, admin_key="admin-secret")
    live = start_server(cfg)
    yield live
    live.stop()


@pytest.fixture
def start_live():
    """Factory: start_live(ServeConfig) -> a running Live server, stopped at the end of the test."""
    started = []

    def start(cfg) -> Live:
        live = start_server(cfg)
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()
