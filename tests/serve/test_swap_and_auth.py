"""Model swap without downtime (admin reload, watched pointer file) and the safe-by-default rules."""

from __future__ import annotations

import os

import httpx
import openai
import pytest

from llmcycle.errors import ConfigError
from llmcycle.infer import GenerationSettings
from llmcycle.serve.config import ServeConfig

HELLO = [{"role": "user", "content": "hello there"}]


def _hash(live) -> str:
    return httpx.get(live.url + "/health", headers={"Authorization": "Bearer k"}).json()["model_hash"]


def test_reload_keeps_in_flight_requests_on_the_old_model(make_tiny_model, tmp_path, start_live):
    first, second = make_tiny_model("llama"), make_tiny_model("llama", seed=1)
    pointer = tmp_path / "current.txt"
    pointer.write_text(str(first))
    live = start_live(ServeConfig(watch=str(pointer), api_key="k", feedback_db=str(tmp_path / "fb.db"),
                                    watch_interval=0.05))
    client = live.client("k")
    old = _hash(live)
    [expected] = live.state.host.current.engine.chat([HELLO], GenerationSettings(max_new_tokens=40, temperature=0))
    stream = iter(client.chat.completions.create(model="", messages=HELLO, max_tokens=40, stream=True,
                                                 temperature=0))
    first_chunk = next(stream)
    # promote: write the pointer atomically, as `improve` does
    tmp = tmp_path / "current.txt.tmp"
    tmp.write_text(str(second))
    os.replace(tmp, pointer)
    while _hash(live) == old:  # the watcher polls the pointer's mtime
        pass
    rest = list(stream)  # the request in flight finished on the old model
    assert "".join(c.choices[0].delta.content or "" for c in [first_chunk] + rest) == expected.text
    assert client.models.list().data[0].id == second.name
    reloaded = httpx.post(live.url + "/admin/reload", json={"model": str(first)},
                          headers={"Authorization": "Bearer k"})
    assert reloaded.status_code == 200 and _hash(live) == old
    bad = httpx.post(live.url + "/admin/reload", json={"model": str(tmp_path / "missing")},
                     headers={"Authorization": "Bearer k"})
    assert bad.status_code == 400 and _hash(live) == old  # a bad dir keeps the old model serving
    with pytest.raises(openai.AuthenticationError):
        live.client("wrong").chat.completions.create(model="", messages=HELLO, max_tokens=2)
    assert httpx.get(live.url + "/v1/models").status_code == 401


def test_public_host_needs_a_key(make_tiny_model, cli):
    from llmcycle.serve.server import resolve

    model = str(make_tiny_model("llama"))
    with pytest.raises(ConfigError, match="--api-key"):
        resolve(ServeConfig(model=model, host="0.0.0.0"))
    assert resolve(ServeConfig(model=model, host="0.0.0.0", insecure=True)).insecure
    code, out, err = cli("serve", "--model", model, "--host", "0.0.0.0")
    assert code == 2 and err.startswith("error: --host 0.0.0.0") and "Traceback" not in err
    code, out, err = cli("serve", "--model", "/no/such/dir")
    assert code == 2 and "no such model dir" in err


def test_an_unknown_quantization_stops_the_server_before_it_starts(make_tiny_model, cli):
    """Checked with the other settings, before the port is bound and the model loads in the background: a server
    that came up anyway would only log "model load failed" and answer 503 for ever."""
    code, out, err = cli("serve", "--model", str(make_tiny_model("llama")), "--quantize", "int5", "--port", "0")
    assert code == 2 and err.startswith("error: quantize: unknown method 'int5'") and "Traceback" not in err
    assert err.count("\n") == 1


def test_503_while_loading(make_tiny_model, tmp_path):
    import threading

    from fastapi.testclient import TestClient

    from llmcycle.infer import Engine
    from llmcycle.serve.app import create_app
    from llmcycle.serve.host import ModelHost

    release = threading.Event()

    def slow_loader(path):
        release.wait(60)
        return Engine.load(path)

    cfg = ServeConfig(model=str(make_tiny_model("llama")), feedback_db=None)
    with TestClient(create_app(cfg, ModelHost(cfg, loader=slow_loader))) as client:
        assert client.get("/health").status_code == 503
        busy = client.post("/v1/chat/completions", json={"messages": HELLO})
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "model_loading"
        assert busy.headers["retry-after"] == "1"
        release.set()
        while client.get("/health").status_code != 200:
            pass
        assert client.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2}).status_code == 200


def test_the_watcher_retries_after_a_failed_first_load(make_tiny_model, tmp_path):
    import shutil
    import time

    from llmcycle.serve.host import ModelHost

    pointer = tmp_path / "current.txt"
    pointer.write_text(str(tmp_path / "not-yet-written"))
    host = ModelHost(ServeConfig(watch=str(pointer), watch_interval=0.02))
    with pytest.raises(Exception):
        host.start()
    assert host.current is None
    good = tmp_path / "not-yet-written"
    shutil.copytree(make_tiny_model("llama"), good)  # the dir appears; the pointer itself never changes
    deadline = time.monotonic() + 30
    while host.current is None and time.monotonic() < deadline:
        host._stop.wait(0.02)
    try:
        assert host.current is not None and host.current.path == str(good)
    finally:
        host.stop()


def test_a_replaced_model_is_freed_once_drained(make_tiny_model, monkeypatch):
    """A reload must not keep the model it replaced: the drain thread holds the only reference, and no reference
    cycle (the scripted step refers back to its backend weakly) waits for a full collection."""
    import gc
    import threading
    import weakref

    from llmcycle.serve import host as host_module
    from llmcycle.serve.host import ModelHost

    collected = []
    monkeypatch.setattr(host_module, "give_back_memory", lambda: collected.append(1))  # no gc.collect here
    model = str(make_tiny_model("llama"))
    host = ModelHost(ServeConfig(model=model, feedback_db=None))
    host.start()
    engine = host.current.engine
    list(host.current.scheduler.submit(engine.encode_chat(HELLO), engine.chat_settings(None).replace(
        max_new_tokens=3)))
    assert engine.backend._scripted  # the scripted step was built (the cycle it used to make)
    first, backend = weakref.ref(engine), weakref.ref(engine.backend)
    del engine
    gc.disable()
    try:
        host.load(model)
        for thread in threading.enumerate():
            if thread.name == "llmcycle-drain":
                thread.join(30)
        assert first() is None and backend() is None and len(collected) == 3  # two loads, one drain
    finally:
        gc.enable()
        host.stop()
