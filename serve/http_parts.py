"""The router's HTTP pieces: bounded admission, typed error answers, request parsing and OpenAPI descriptions.

Kept apart from `serve.router` (the routes) so each stays small; nothing here knows Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid

from fastapi.responses import JSONResponse
from pydantic import ValidationError

from adapters.errors import KidsArtError
from adapters.images import decode_base64_image
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
from serve.protocol import ScoreRequest

log = logging.getLogger("serve.router")

BACKGROUND_POLL_S = 0.05  # how often a batch line looks for a free in-flight slot


class Admission:
    """Bounded admission: at most `inflight` images scored at once, `queued` more waiting, the rest refused.

    Batch lines come in through `background()`, below the sync traffic's priority: while sync
    requests are in flight or ended less than `quiet_s` ago, at most `busy_share` batch lines
    are scored at once (so sync latency barely moves, docs/batch.md has the measurement); when
    sync traffic is quiet they may fill every free slot (so a batch alone runs at full speed).
    """

    def __init__(self, inflight: int, queued: int, retry_after_s: int, busy_share: int = 1, quiet_s: float = 1.0):
        self.inflight = inflight
        self.semaphore = asyncio.Semaphore(inflight)
        self.capacity = inflight + queued
        self.retry_after_s = retry_after_s
        self.busy_share = busy_share
        self.quiet_s = quiet_s
        self.admitted = 0
        self.sync_admitted = 0
        self.background_admitted = 0
        self.last_sync_end = float("-inf")

    def check(self) -> None:
        """Refuse at once when full, before the request body is read or decoded."""
        if self.admitted >= self.capacity:
            raise OverloadedError(
                f"the router is at capacity ({self.capacity} images admitted); retry after {self.retry_after_s} s"
            )

    async def _enter(self) -> None:
        self.admitted += 1
        metrics.INFLIGHT.set(self.admitted)
        try:
            await self.semaphore.acquire()
        except BaseException:
            self.admitted -= 1
            metrics.INFLIGHT.set(self.admitted)
            raise

    def _leave(self) -> None:
        self.semaphore.release()
        self.admitted -= 1
        metrics.INFLIGHT.set(self.admitted)

    async def __aenter__(self) -> None:
        self.check()
        self.sync_admitted += 1
        try:
            await self._enter()
        except BaseException:
            self._sync_done()
            raise

    async def __aexit__(self, *exc) -> None:
        self._leave()
        self._sync_done()

    def _sync_done(self) -> None:
        self.sync_admitted -= 1
        self.last_sync_end = time.monotonic()

    def sync_busy(self) -> bool:
        return self.sync_admitted > 0 or time.monotonic() - self.last_sync_end < self.quiet_s

    def _background_may_start(self) -> bool:
        share = self.busy_share if self.sync_busy() else self.inflight
        return self.background_admitted < share and self.admitted < self.inflight

    @contextlib.asynccontextmanager
    async def background(self):
        """Admission of a batch line: wait, outside the queue, until the sync traffic leaves it room (above)."""
        while not self._background_may_start():
            await asyncio.sleep(BACKGROUND_POLL_S)
        self.background_admitted += 1
        try:
            await self._enter()
            try:
                yield
            finally:
                self._leave()
        finally:
            self.background_admitted -= 1


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


def parse_score_request(payload, scorer) -> tuple:
    """A JSON score request's (image bytes, dimensions, id, description, feedback), checked against `scorer`'s
    deployment before any decoding."""
    parsed = validated(ScoreRequest, payload, "score request")
    scorer.select(parsed.dimensions)  # unknown dimensions fail before any decoding
    if parsed.feedback:
        scorer.check_feedback()
    image = decode_base64_image(parsed.image)
    return image, parsed.dimensions, parsed.id or str(uuid.uuid4()), parsed.description, parsed.feedback


async def parse_multipart(request, scorer) -> tuple:
    """The same from a multipart upload (the image as file field `image`)."""
    try:
        form = await request.form()
    except Exception as exc:  # starlette raises several types for broken multipart
        raise MalformedRequestError(f"the multipart body could not be parsed: {exc}") from exc
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        raise RequestValidationFailed("multipart upload needs a file field named 'image'")
    data = await upload.read()
    dims_field = form.get("dimensions")
    dimensions = None
    if isinstance(dims_field, str) and dims_field.strip():
        dimensions = [d.strip() for d in dims_field.split(",") if d.strip()]
    scorer.select(dimensions)
    feedback = form_flag(form.get("feedback"), "feedback")
    if feedback:
        scorer.check_feedback()
    request_id = form.get("id") if isinstance(form.get("id"), str) else None
    description = form.get("description") if isinstance(form.get("description"), str) else None
    return data, dimensions, request_id or str(uuid.uuid4()), description, feedback
