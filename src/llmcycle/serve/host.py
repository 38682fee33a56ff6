"""The served model and how it is swapped without downtime.

A `Served` is one loaded engine with its scheduler. `ModelHost.current` is what new requests use; a reload loads
the new model beside the old one, switches `current`, then closes the old scheduler once its in-flight requests
have finished. A watched pointer file (a text file holding a model dir path, written atomically by `improve`)
triggers the same reload when its mtime changes.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from llmcycle.errors import ConfigError, UserError
from llmcycle.infer.continuous import Scheduler
from llmcycle.serve.config import ServeConfig
from llmcycle.artifacts import input_identity, sha256_json
from llmcycle.infer import Engine
from llmcycle.infer.prefix_cache import PrefixCache

log = logging.getLogger("llmcycle.serve")


@dataclass
class Served:
    name: str
    path: str
    model_hash: str
    engine: Any
    scheduler: Scheduler
    loaded_at: float


def model_hash(path: str) -> str:
    """The artifact's identity: its manifest's output hashes (or its files' listing), hashed."""
    try:
        return sha256_json(input_identity(Path(path)))[:16]
    except Exception:  # a hub id or an odd dir: the hash is only a label
        return ""


def read_pointer(pointer: str | Path) -> str:
    try:
        target = Path(pointer).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"--watch {pointer}: cannot read the pointer file ({exc.strerror})") from None
    if not target:
        raise ConfigError(f"--watch {pointer}: the pointer file is empty (it should hold a model dir path)")
    return target


def _drain(holder: list[Served]) -> None:
    """Let the replaced model finish its requests, then give its memory back: the collector frees any cycle that
    still holds its tensors, and glibc's `malloc_trim` returns the freed heap to the system (without it a server
    that reloads kept about 0.4-1.9 GB more after each SmolLM2 reload, as measured by its RSS)."""
    holder[0].scheduler.close()
    holder.clear()
    give_back_memory()


def give_back_memory() -> None:
    """Free unreachable cycles, then return the heap's free pages to the system (glibc only)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps what it keeps
        pass


class ModelHost:
    def __init__(self, cfg: ServeConfig, loader: Callable[[str], Any] | None = None):
        self.cfg = cfg
        self.loader = loader or self._load_engine
        self.current: Served | None = None
        self.loading = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._pointer_mtime: float | None = None

    def _load_engine(self, path: str) -> Any:
        engine = Engine.load(path, device=self.cfg.device, dtype=self.cfg.dtype, quantize=self.cfg.quantize,
                             fast=self.cfg.fast, threads=self.cfg.threads)
        copies = getattr(engine.backend, "batch_copy_bytes", 0)
        if copies:
            log.info("%s products of many rows (prompts, large batches) use bf16 copies of the weights, made on "
                     "first use: up to %d MB more", self.cfg.quantize, copies >> 20)
        if hasattr(engine.backend, "prefix_cache"):  # requests sharing a system prompt reuse its keys/values
            engine.backend.prefix_cache = PrefixCache()
        return engine

    def start(self) -> None:
        """Load the first model: --model, else what the watched pointer names. The watcher starts first, so a
        failed first load (a bad promotion, a dir still being written) is retried and a fixed pointer picked up."""
        path = self.cfg.model
        if self.cfg.watch:
            self._pointer_mtime = Path(self.cfg.watch).stat().st_mtime if Path(self.cfg.watch).exists() else None
            self._watcher = threading.Thread(target=self._watch, name="llmcycle-watch", daemon=True)
            self._watcher.start()
            path = path or read_pointer(self.cfg.watch)
        if not path:
            raise ConfigError("no model: pass --model DIR or --watch POINTER")
        self.load(path, "startup")

    def load(self, path: str, cause: str = "admin reload") -> Served:
        """Load `path` and make it current; the previous model drains in the background."""
        log.info("loading %s (%s)", path, cause)
        with self._lock:
            self.loading = True
            try:
                engine = self.loader(path)
            finally:
                self.loading = False
            give_back_memory()  # loading's temporaries (a float copy of a model being quantized)
            name = self.cfg.model_name or Path(path).name or str(path)
            scheduler = Scheduler(engine, self.cfg.max_batch, self.cfg.max_queue, self.cfg.max_context)
            old, self.current = self.current, Served(name, str(path), model_hash(str(path)), engine, scheduler,
                                                     time.time())
        if old is not None:
            log.info("serving %s (%s); draining %s", path, cause, old.path)
            holder, old = [old], None  # the drain thread holds the only reference, so it can free the model
            threading.Thread(target=_drain, args=(holder,), name="llmcycle-drain", daemon=True).start()
        else:
            log.info("serving %s (%s)", path, cause)
        return self.current

    def _watch(self) -> None:
        """Swap when the pointer changes; while no model is served (the first load failed), retry every interval."""
        pointer = Path(self.cfg.watch)
        last_error = None
        while not self._stop.wait(self.cfg.watch_interval):
            try:
                mtime = pointer.stat().st_mtime
            except OSError:
                continue
            if mtime == self._pointer_mtime and (self.current is not None or self.loading):
                continue
            self._pointer_mtime = mtime
            cause = f"{pointer} changed" if self.current is not None else f"retrying from {pointer}"
            try:
                target = read_pointer(pointer)
                if self.current is None or target != self.current.path:
                    self.load(target, cause)
                last_error = None
            except Exception as exc:  # noqa: BLE001 - a bad promotion keeps the old model; the watcher survives
                error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, (UserError, OSError)) else str(exc)
                if error != last_error:  # a retry that fails the same way is not logged again
                    log.error("model load from %s failed: %s", pointer, error)
                last_error = error

    def stop(self, timeout: float = 5.0) -> None:
        """Shutdown: the requests still in flight (past the server's drain) are cancelled and the scheduler ends."""
        self._stop.set()
        if self.current is not None:
            cancelled = self.current.scheduler.cancel_all()
            if cancelled:
                log.warning("shutdown: cancelling %d requests still in flight", cancelled)
            self.current.scheduler.close(wait=True, timeout=timeout)
