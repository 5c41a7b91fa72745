"""Request bodies read within limits: in Ray Serve's HTTP proxy first, then in the router.

Why in the proxy: Ray Serve hands a body from its proxy to the replica through two
unbounded queues (the proxy's `MessageQueue`, the replica's `ASGIReceiveProxy`), and the
replica keeps fetching until the client stops sending, however early the handler
refuses. Measured on the tiny stack with the limit in the router only: a 300 MB chunked
upload answered 413 early, yet the router replica grew by 196-221 MB. So the same reader
runs as a pure-ASGI middleware inside the proxy (Ray Serve's documented
`RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH` hook, `proxy_middlewares` below): it reads at
most the limit, answers 413/408/400 itself with the router's JSON error body and closes
the connection, and hands the replica the body as one message. The router reads with the
same function, so an app run without the proxy hook (tests, other ingresses) keeps the
same limits.

The limits come from the profile, one place: `Stack` writes them to
`PROXY_LIMITS_ENV` before it starts Ray, whose processes (the proxy among them) inherit
the environment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from serve.errors import BodyTimeoutError, BodyTooLargeError, MalformedRequestError, error_body, status_for

log = logging.getLogger(__name__)

ENVELOPE_BYTES = 64 * 1024  # room for the JSON/multipart envelope around the base64 image
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "serve.body:proxy_middlewares"
PROXY_LIMITS_ENV = "KIDSART_PROXY_BODY_LIMITS"  # JSON {"limit_bytes", "timeout_s", "stream_limits": {path: bytes}}
FILES_PATH = "/v1/files"  # the Batch API's upload route: its own limit, streamed


def body_limit(max_image_bytes: int) -> int:
    """Largest request body: the image in base64 (4/3 of its bytes) plus a bounded envelope."""
    return -(-max_image_bytes * 4 // 3) + ENVELOPE_BYTES


class ClientGone(MalformedRequestError):
    """The client disconnected before its body was complete (the router answers it as a 400)."""


async def read_limited_body(receive, limit: int, timeout_s: float, declared: str | None) -> bytes:
    """The whole body from an ASGI `receive`: BodyTooLargeError as soon as it passes `limit` (or when
    Content-Length says it will), BodyTimeoutError when it takes longer than `timeout_s`, ClientGone when
    the client leaves; never more than `limit` bytes held."""
    if declared is not None:
        if not declared.strip().isdigit():
            raise MalformedRequestError(f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise BodyTooLargeError(f"the request body is {int(declared)} bytes; the limit is {limit} bytes")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    chunks, size = [], 0
    while True:
        try:
            message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
        except TimeoutError:
            raise BodyTimeoutError(
                f"the request body did not arrive within {timeout_s:g} s ({size} bytes so far)"
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientGone(f"the client went away after {size} bytes of the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"the request body passed the limit of {limit} bytes")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class ProxyBodyLimit:
    """Pure-ASGI middleware for Ray Serve's proxy: the body read within the limits before the replica sees it.

    Paths in `stream_limits` (the Batch API's uploads, hundreds of MB) are not buffered: a declared length over
    their own limit is refused here, and the body streams through to the router, which counts it as it writes it
    to disk."""

    def __init__(self, app, limit_bytes: int, timeout_s: float, stream_limits: dict[str, int] | None = None):
        self.app, self.limit_bytes, self.timeout_s = app, limit_bytes, timeout_s
        self.stream_limits = stream_limits or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        streamed = next((limit for path, limit in self.stream_limits.items() if scope.get("path") == path), None)
        if streamed is not None:
            declared = _header(scope, b"content-length")
            if declared is not None and declared.strip().isdigit() and int(declared) > streamed:
                await _send_error(
                    send,
                    BodyTooLargeError(
                        f"the upload is {int(declared)} bytes; the limit is {streamed} bytes (batch.max_file_bytes)"
                    ),
                )
                return
            await self.app(scope, receive, send)
            return
        try:
            body = await read_limited_body(receive, self.limit_bytes, self.timeout_s, _header(scope, b"content-length"))
        except ClientGone:
            return  # nobody to answer
        except (BodyTooLargeError, BodyTimeoutError, MalformedRequestError) as error:
            log.info("refused in the proxy: %s %s: %s", scope.get("method"), scope.get("path"), error)
            await _send_error(send, error)
            return
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the client's disconnect, as the app expects

        await self.app(scope, replay, send)


async def _send_error(send, error: Exception) -> None:
    """The router's JSON error body; the connection is closed since the rest of the body is not read."""
    payload = json.dumps(error_body(error)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status_for(error),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def proxy_environment(max_image_bytes: int, timeout_s: float, max_file_bytes: int | None = None) -> dict[str, str]:
    """The environment that makes Ray Serve's proxy enforce these limits (set before Ray starts); uploads to
    /v1/files have their own limit (`batch.max_file_bytes`) and stream through."""
    limits = {"limit_bytes": body_limit(max_image_bytes), "timeout_s": timeout_s}
    if max_file_bytes is not None:
        limits["stream_limits"] = {FILES_PATH: max_file_bytes + ENVELOPE_BYTES}
    return {PROXY_CALLBACK_ENV: PROXY_CALLBACK, PROXY_LIMITS_ENV: json.dumps(limits)}


def proxy_middlewares() -> list:
    """Ray Serve's proxy callback: the middlewares of its ASGI app (none when no limits were handed over)."""
    from starlette.middleware import Middleware

    raw = os.environ.get(PROXY_LIMITS_ENV)
    if not raw:
        log.warning(
            "%s is not set: the proxy forwards bodies unchecked (the router still limits them)", PROXY_LIMITS_ENV
        )
        return []
    limits = json.loads(raw)
    return [
        Middleware(
            ProxyBodyLimit,
            limit_bytes=int(limits["limit_bytes"]),
            timeout_s=float(limits["timeout_s"]),
            stream_limits={k: int(v) for k, v in limits.get("stream_limits", {}).items()},
        )
    ]
