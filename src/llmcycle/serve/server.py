"""Run the app under uvicorn, after the checks that keep a default server safe: local only unless an API key (or
an explicit --insecure) is given, CORS only for the origins asked for."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from llmcycle.errors import ConfigError
from llmcycle.serve.config import LOCAL_HOSTS, ServeConfig

API_KEY_ENV = "LLMCYCLE_API_KEY"


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
    if cfg.default_max_tokens > cfg.max_tokens:
        cfg = cfg.model_copy(update={"default_max_tokens": cfg.max_tokens})
    return cfg


def build(cfg: ServeConfig):
    from llmcycle.serve.app import create_app

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


def serve(cfg: ServeConfig) -> None:
    import logging

    import uvicorn

    cfg = resolve(cfg)
    sock = bind(cfg.host, cfg.port)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("llmcycle.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # model swaps and moderation decisions, one line each
    server = uvicorn.Server(uvicorn.Config(build(cfg), log_level="warning", access_log=False))
    print(f"llmcycle serve: http://{cfg.host}:{cfg.port}/  (OpenAI API under /v1, metrics at /metrics)", flush=True)
    server.run(sockets=[sock])
