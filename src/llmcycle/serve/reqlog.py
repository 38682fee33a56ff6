"""The opt-in request log: one JSON line per generation request, with personal data redacted from the
conversation and the reply (the safety module's redaction), appended under a lock."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from llmcycle.safety.pii import scrub_head

MAX_LOGGED_CHARS = 8_000  # of each message and reply: a huge prompt costs the log (and the event loop) no more


class RequestLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, route: str, status: int, job: Any, latency: float, ttft: float | None) -> None:
        record = {
            "time": time.time(), "route": route, "status": status, "id": job.rid, "model": job.served.name,
            "model_hash": job.served.model_hash, "prompt_tokens": len(job.prompt_ids),
            "completion_tokens": job.completion_tokens, "latency_s": round(latency, 4),
            "ttft_s": None if ttft is None else round(ttft, 4),
            "messages": [{"role": m["role"], "content": scrub_head(m["content"], MAX_LOGGED_CHARS)}
                         for m in job.messages],
            "replies": [{"text": scrub_head(text, MAX_LOGGED_CHARS), "finish_reason": reason} for _, (text, reason)
                        in sorted(job.replies.items())],
            "moderation": job.moderation,
            "settings": job.settings.to_dict(),
        }
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
