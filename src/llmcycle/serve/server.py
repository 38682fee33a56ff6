"""Run the app under uvicorn, after the checks that keep a default server safe: local only unless an API key (or
an explicit --insecure) is given, CORS only for the origins asked for."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import socket
from pathlib import Path
from types import FrameType

import uvicorn

from llmcycle.errors import ConfigError
from llmcycle.openmp import short_openmp_spin
from llmcycle.quant_spec import parse_spec
from llmcycle.serve.config import LOCAL_HOSTS, ServeConfig

API_KEY_ENV = "LLMCYCLE_API_KEY"
log = logging.getLogger("llmcycle.serve")


def resolve(cfg: ServeConfig) -> ServeConfig:
    """The config with the key from the environment, checked before anything loads."""
    if not cfg.api_key and os.environ.get(API_KEY_ENV):
        cfg = cfg.model_copy(update={"api_key": os.environ[API_KEY_ENV]})
    if not cfg.model and not cfg.watch:
        raise ConfigError("no model: pass --model DIR or --watch POINTER")
    if cfg.model and not cfg.watch and not Path(cfg.model).exists():
        raise ConfigError(f"--model {cfg.model}: no such model dir")
    if cfg.watch and not Path(cfg.watch).is_file() and not cfg.model:
        raise ConfigError(f"--watch {cfg.watch}: no such pointer file")
    if cfg.host not in LOCAL_HOSTS and not cfg.api_key and not cfg.insecure:
        raise ConfigError(f"--host {cfg.host} exposes the server beyond this machine: give --api-key KEY (or "
                          f"${API_KEY_ENV}), or --insecure to serve without one")
    parse_spec(cfg.quantize)  # a bad method is one line now, not "model load failed" in a running server's log
    if cfg.default_max_tokens > cfg.max_tokens:
        cfg = cfg.model_copy(update={"default_max_tokens": cfg.max_tokens})
    return cfg


def build(cfg: ServeConfig):
    from llmcycle.serve.app import create_app  # lazy: the app loads torch; `resolve` checks settings without it

    app = create_app(cfg)
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    return app


def bind(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads: a busy port is one line and exit 2, not a traceback
    after a success message. uvicorn serves on this very socket, so nothing can take the port in between."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart reuses the port at once
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        busy = exc.errno in (98, 48, 10048)  # EADDRINUSE on Linux, macOS, Windows
        reason = "is already in use (another server?)" if busy else f"cannot be bound ({exc.strerror or exc})"
        raise ConfigError(f"--port {port}: {host}:{port} {reason}; choose another with --port N, "
                          f"or --host ADDR") from None
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, saying which signal stopped it: the cause of every shutdown is in the log."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        log.warning("%s received: draining in-flight requests (at most %.0f s), then stopping", name,
                    self.config.timeout_graceful_shutdown or 0)
        super().handle_exit(sig, frame)


def log_to_stderr() -> None:
    """Lifecycle events (start, reload, drain, shutdown, failures) at INFO, one line each, whatever uvicorn's level."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def serve(cfg: ServeConfig) -> None:
    """Run until SIGTERM/SIGINT: in-flight requests get `drain_seconds` to finish, then are cancelled. A fatal
    signal (segfault, abort) dumps every thread's traceback to stderr (faulthandler), so no exit is silent."""
    cfg = resolve(cfg)
    sock = bind(cfg.host, cfg.port)  # before anything is printed: a busy port is one line, exit 2
    faulthandler.enable()
    log_to_stderr()
    policy = short_openmp_spin()
    log.info("llmcycle serve starting (pid %d): http://%s:%d/, model %s, OpenMP wait policy %s", os.getpid(),
             cfg.host, cfg.port, cfg.model or f"from {cfg.watch}", policy)
    print(f"llmcycle serve: http://{cfg.host}:{cfg.port}/  (OpenAI API under /v1, metrics at /metrics)", flush=True)
    config = uvicorn.Config(build(cfg), log_level="warning", access_log=False,
                            timeout_graceful_shutdown=max(1, round(cfg.drain_seconds)))
    try:
        _Server(config).run(sockets=[sock])
    except BaseException as exc:
        log.critical("server stopped by %s: %s", type(exc).__name__, exc)
        raise
    log.info("llmcycle serve stopped")
