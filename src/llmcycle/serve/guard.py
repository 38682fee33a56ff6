"""The ASGI layer in front of every route: API key, body size limit, and request counts by route and status.

Pure ASGI (not BaseHTTPMiddleware) so streaming responses pass straight through and a client disconnect reaches
the stream at once.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from llmcycle.serve.errors import error_body

PROTECTED = ("/v1/", "/admin/", "/metrics", "/stats")
ROUTES = {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/feedback", "/admin/reload", "/health",
          "/metrics", "/stats", "/", "/monitor"}


class BodyTooLarge(Exception):
    pass


class Guard:
    def __init__(self, app: Any, state: Any):
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else ("/static" if path.startswith("/static/") else "other")
        status = {"code": 500}

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            problem = self._check(scope, path)
            if problem is not None:
                await _reply(counting_send, *problem)
                return
            limit = self.state.cfg.max_body_bytes
            seen = {"bytes": 0}

            async def limited_receive() -> dict:
                message = await receive()
                if message["type"] == "http.request":
                    seen["bytes"] += len(message.get("body", b""))
                    if seen["bytes"] > limit:
                        raise BodyTooLarge()
                return message

            try:
                await self.app(scope, limited_receive, counting_send)
            except BodyTooLarge:
                await _reply(counting_send, 413, f"request body over {limit} bytes", "body_too_large")
        finally:
            self.state.metrics.request(route, status["code"])

    def _check(self, scope: dict, path: str) -> tuple[int, str, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.state.cfg.max_body_bytes:
            return 413, f"request body over {self.state.cfg.max_body_bytes} bytes", "body_too_large"
        cfg = self.state.cfg
        key = (cfg.admin_key or cfg.api_key) if path.startswith("/admin/") else cfg.api_key
        if path.startswith("/admin/") and not key:
            return 403, "admin routes need an admin key (--admin-key or --api-key)", "admin_disabled"
        if key and path.startswith(PROTECTED):
            given = headers.get("authorization", "")
            token = given[7:].strip() if given.lower().startswith("bearer ") else ""
            if not token:
                return 401, "missing API key: send 'Authorization: Bearer KEY'", "missing_api_key"
            if not hmac.compare_digest(token.encode(), key.encode()):
                return 401, "incorrect API key", "invalid_api_key"
        return None


async def _reply(send: Any, status: int, message: str, code: str) -> None:
    body = json.dumps(error_body(status, message, None, code)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
