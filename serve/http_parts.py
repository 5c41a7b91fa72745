"""The router's HTTP pieces: bounded admission, typed error answers, request parsing and OpenAPI descriptions.

Kept apart from `serve.router` (the routes) so each stays small; nothing here knows Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from fastapi.responses import JSONResponse
from pydantic import ValidationError

from adapters.errors import KidsArtError
from serve import metrics
from serve.errors import (
    RETRYABLE_STATUSES,
    BodyTimeoutError,
    BodyTooLargeError,
    MalformedRequestError,
    OverloadedError,
    RequestValidationFailed,
    error_body,
    status_for,
)

log = logging.getLogger("serve.router")

BACKGROUND_POLL_S = 0.05  # how often a batch line looks for a free in-flight slot


class Admission:
    """Bounded admission: at most `inflight` images scored at once, `queued` more waiting, the rest refused."""

    def __init__(self, inflight: int, queued: int, retry_after_s: int):
        self.inflight = inflight
        self.semaphore = asyncio.Semaphore(inflight)
        self.capacity = inflight + queued
        self.retry_after_s = retry_after_s
        self.admitted = 0

    def check(self) -> None:
        """Refuse at once when full, before the request body is read or decoded."""
        if self.admitted >= self.capacity:
            raise OverloadedError(
                f"the router is at capacity ({self.capacity} images admitted); retry after {self.retry_after_s} s"
            )

    async def __aenter__(self) -> None:
        self.check()
        self.admitted += 1
        metrics.INFLIGHT.set(self.admitted)
        try:
            await self.semaphore.acquire()
        except BaseException:
            self.admitted -= 1
            metrics.INFLIGHT.set(self.admitted)
            raise

    @contextlib.asynccontextmanager
    async def background(self):
        """Admission below the sync traffic's priority (batch lines): wait, outside the queue, until an in-flight
        slot is free, so a sync request arriving meanwhile is never behind a batch line."""
        while self.admitted >= self.inflight:
            await asyncio.sleep(BACKGROUND_POLL_S)
        async with self:
            yield

    async def __aexit__(self, *exc) -> None:
        self.semaphore.release()
        self.admitted -= 1
        metrics.INFLIGHT.set(self.admitted)


def error_response(error: Exception, route: str, retry_after_s: int) -> JSONResponse:
    status = status_for(error)
    if not isinstance(error, KidsArtError):
        log.exception("unexpected error on %s", route, exc_info=error)
    metrics.ERRORS.labels(getattr(error, "kind", "internal_error")).inc()
    headers = {"Retry-After": str(retry_after_s)} if status in RETRYABLE_STATUSES else None
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    if isinstance(error, (BodyTooLargeError, BodyTimeoutError)):
        # close the connection: the rest of the body is not read, and Ray Serve's replica would otherwise
        # keep queueing what the client still sends until it disconnects
        headers = {**(headers or {}), "Connection": "close"}
    return JSONResponse(error_body(error), status_code=status, headers=headers)


def image_and_text(messages) -> tuple[str, str | None]:
    """The single image (data URL) and any user text from the chat request's messages."""
    images: list[str] = []
    texts: list[str] = []
    for message in messages:
        if message.role != "user" or message.content is None:
            continue
        if isinstance(message.content, str):
            texts.append(message.content)
            continue
        for part in message.content:
            if part.type == "image_url":
                if part.image_url is None:
                    raise RequestValidationFailed("an image_url part needs image_url.url")
                if not part.image_url.url.startswith("data:"):
                    raise RequestValidationFailed(
                        "only data URLs (data:image/...;base64,...) are accepted: the service does not fetch remote "
                        "images"
                    )
                images.append(part.image_url.url)
            elif part.type == "text" and part.text is not None:
                texts.append(part.text)
    if len(images) != 1:
        raise RequestValidationFailed(f"the user message must contain exactly one image_url part, found {len(images)}")
    text = "\n".join(t for t in texts if t.strip()) or None
    return images[0], text


def validated(model, payload, what: str):
    """`payload` as `model`, or a 422 naming each problem."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise RequestValidationFailed(f"invalid {what}: {problems}") from exc


def openapi_json_body(model) -> dict:
    """OpenAPI's description of a JSON request body that the route reads itself (within the body limits)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def parse_json(body: bytes):
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedRequestError(f"the request body is not valid JSON: {exc}") from exc


def json_answer(model) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", exclude_none=True))


def form_flag(value, name: str) -> bool:
    """A multipart true/false field (absent: false)."""
    if value is None:
        return False
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no", ""):
        return value.strip().lower() in ("true", "1", "yes")
    raise RequestValidationFailed(f"multipart field {name!r} must be true or false")
