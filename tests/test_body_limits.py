"""serve.body: the bounded body reader and the middleware Ray Serve's proxy runs, against fake ASGI channels
(the live proxy is covered in tests/test_security.py)."""

import asyncio
import json

import pytest

from serve.body import (
    PROXY_CALLBACK,
    PROXY_CALLBACK_ENV,
    PROXY_LIMITS_ENV,
    ClientGone,
    ProxyBodyLimit,
    body_limit,
    proxy_environment,
    proxy_middlewares,
    read_limited_body,
)
from serve.errors import BodyTimeoutError, BodyTooLargeError, MalformedRequestError


def _receiver(chunks, pause_s=0.0):
    """An ASGI receive giving `chunks` as body messages (the last without more_body), counting calls."""
    calls = {"n": 0}

    async def receive():
        calls["n"] += 1
        index = calls["n"] - 1
        if index < len(chunks):
            if pause_s:
                await asyncio.sleep(pause_s)
            return {"type": "http.request", "body": chunks[index], "more_body": index < len(chunks) - 1}
        return {"type": "http.disconnect"}

    return receive, calls


def test_a_body_within_the_limit_is_joined():
    receive, _ = _receiver([b"ab", b"", b"cd"])
    assert asyncio.run(read_limited_body(receive, 4, 5.0, None)) == b"abcd"


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit():
    receive, calls = _receiver([b"x" * 10] * 100)
    with pytest.raises(BodyTooLargeError, match="passed the limit of 25 bytes"):
        asyncio.run(read_limited_body(receive, 25, 5.0, None))
    assert calls["n"] == 3  # the third chunk passed it; nothing more was read


def test_a_declared_length_is_checked_before_reading():
    receive, calls = _receiver([b"x"])
    with pytest.raises(BodyTooLargeError, match="is 1000 bytes; the limit is 10"):
        asyncio.run(read_limited_body(receive, 10, 5.0, "1000"))
    with pytest.raises(MalformedRequestError, match="not a number"):
        asyncio.run(read_limited_body(receive, 10, 5.0, "ten"))
    assert calls["n"] == 0


def test_a_trickled_body_is_cut_off_after_the_timeout():
    receive, _ = _receiver([b"x"] * 1000, pause_s=0.05)
    with pytest.raises(BodyTimeoutError, match=r"within 0.3 s \(\d+ bytes so far\)"):
        asyncio.run(read_limited_body(receive, 10_000, 0.3, None))


def test_a_client_leaving_midway_is_a_400_kind():
    messages = iter([{"type": "http.request", "body": b"x", "more_body": True}, {"type": "http.disconnect"}])

    async def receive():
        return next(messages)

    with pytest.raises(ClientGone, match="went away after 1 bytes") as caught:
        asyncio.run(read_limited_body(receive, 10, 5.0, None))
    assert isinstance(caught.value, MalformedRequestError)


def _call_middleware(chunks, limit, headers=()):
    """Run ProxyBodyLimit over an app that records what it receives; (messages sent, what the app saw)."""
    seen, sent = {}, []

    async def app(scope, receive, send):
        seen["first"] = await receive()
        seen["path"] = scope["path"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message):
        sent.append(message)

    receive, _ = _receiver(chunks)
    scope = {"type": "http", "method": "POST", "path": "/v1/score", "headers": list(headers)}
    asyncio.run(ProxyBodyLimit(app, limit_bytes=limit, timeout_s=5.0)(scope, receive, send))
    return sent, seen


def test_the_proxy_hands_the_app_one_message_within_the_limit():
    sent, seen = _call_middleware([b"ab", b"cd"], limit=10)
    assert seen["first"] == {"type": "http.request", "body": b"abcd", "more_body": False}
    assert sent[0]["status"] == 200


def test_the_proxy_answers_an_oversized_body_itself_with_the_routers_error_body():
    sent, seen = _call_middleware([b"x" * 8] * 10, limit=20)
    assert seen == {}  # the app (Ray Serve's path to the replica) never saw it
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 413 and headers[b"connection"] == b"close"
    error = json.loads(body["body"])["error"]
    assert error["code"] == 413 and "passed the limit of 20 bytes" in error["message"]
    sent, _ = _call_middleware([b"x"], limit=20, headers=[(b"content-length", b"999")])
    assert sent[0]["status"] == 413


def test_the_proxy_passes_other_scopes_through():
    seen = {}

    async def app(scope, receive, send):
        seen["scope"] = scope["type"]

    asyncio.run(ProxyBodyLimit(app, limit_bytes=1, timeout_s=1.0)({"type": "lifespan"}, None, None))
    assert seen == {"scope": "lifespan"}


def test_the_proxy_callback_reads_the_limits_handed_over(monkeypatch):
    environment = proxy_environment(max_image_bytes=3000, timeout_s=7.0, max_file_bytes=2**20)
    assert environment[PROXY_CALLBACK_ENV] == PROXY_CALLBACK
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    (middleware,) = proxy_middlewares()
    assert middleware.cls is ProxyBodyLimit
    assert middleware.kwargs == {
        "limit_bytes": body_limit(3000),
        "timeout_s": 7.0,
        "stream_limits": {"/v1/files": 2**20 + 64 * 1024},
    }
    monkeypatch.delenv(PROXY_LIMITS_ENV)
    assert proxy_middlewares() == []


def test_uploads_to_the_files_route_stream_through_within_their_own_limit():
    """/v1/files is not buffered in the proxy (hundreds of MB): a declared length over its limit is a 413 at once,
    any other upload reaches the app as the client sends it, whatever the image limit."""
    seen = {}

    async def app(scope, receive, send):
        message = await receive()
        seen["first_chunk"] = len(message["body"])

    sent = []

    async def send(message):
        sent.append(message)

    def receive_chunks(*sizes):
        chunks = [
            {"type": "http.request", "body": b"x" * n, "more_body": i < len(sizes) - 1} for i, n in enumerate(sizes)
        ]

        async def receive():
            return chunks.pop(0)

        return receive

    proxy = ProxyBodyLimit(app, limit_bytes=100, timeout_s=1.0, stream_limits={"/v1/files": 10_000})
    scope = {"type": "http", "path": "/v1/files", "method": "POST", "headers": [(b"content-length", b"5000")]}
    asyncio.run(proxy(scope, receive_chunks(4000, 1000), send))
    assert seen == {"first_chunk": 4000} and not sent  # passed through, over the image limit of 100
    too_big = {**scope, "headers": [(b"content-length", b"20000")]}
    asyncio.run(proxy(too_big, receive_chunks(10), send))
    assert sent[0]["status"] == 413
    image_route = {**scope, "path": "/v1/score"}
    sent.clear()
    asyncio.run(proxy(image_route, receive_chunks(4000, 1000), send))
    assert sent[0]["status"] == 413  # every other route keeps its limit
