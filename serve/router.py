"""The Ray Serve router: the HTTP API in front of the engine deployment.

Routes:
- POST /v1/score                 one image (multipart field `image`, or JSON) -> scores
                                 (+ `feedback: true`: a comment by the feedback adapter beside them)
- GET  /v1/models                the rubric model and one model per dimension
- POST /v1/chat/completions      OpenAI-compatible; model = rubric or a dimension; `feedback: true`
                                 in the body (the openai client's `extra_body`) adds the comment
- GET  /healthz, /readyz, /metrics

Each image is decoded and prepared once (the prompt format's recipe); its pixels go to one
engine replica in one Ray handle call scoring every dimension (serve.scoring). A bounded
admission queue per replica answers 429 + Retry-After when full, before requests pile up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from ray import serve as ray_serve

from adapters.errors import KidsArtError
from adapters.images import decode_base64_image
from adapters.profiles import RouterSettings
from serve import metrics
from serve.body import body_limit, read_limited_body
from serve.errors import (
    RETRYABLE_STATUSES,
    STATUS_BY_ERROR,
    BodyTimeoutError,
    BodyTooLargeError,
    MalformedRequestError,
    OverloadedError,
    RequestValidationFailed,
    UnauthorizedError,
    UnsupportedModelError,
    UnsupportedRouteError,
    error_body,
    status_for,
)
from serve.keys import key_matches
from serve.protocol import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatResponseMessage,
    ErrorBody,
    ModelCard,
    ModelListing,
    ScoreAnswer,
    ScoreRequest,
    Usage,
)
from serve.scoring import EngineScorer, EngineWatch, RouterRuntime

log = logging.getLogger(__name__)

ROUTER_DEPLOYMENT = "ScoringRouter"
# every error status the router answers with, each an ErrorBody (published in /openapi.json)
ERROR_RESPONSES = {status: {"model": ErrorBody} for status in sorted({s for _, s in STATUS_BY_ERROR} - {500})}


class Admission:
    """Bounded admission: at most `inflight` images scored at once, `queued` more waiting, the rest refused."""

    def __init__(self, inflight: int, queued: int, retry_after_s: int):
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

    async def __aexit__(self, *exc) -> None:
        self.semaphore.release()
        self.admitted -= 1
        metrics.INFLIGHT.set(self.admitted)


def _error_response(error: Exception, route: str, retry_after_s: int) -> JSONResponse:
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


def _image_and_text(messages) -> tuple[str, str | None]:
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


def _validated(model, payload, what: str):
    """`payload` as `model`, or a 422 naming each problem."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise RequestValidationFailed(f"invalid {what}: {problems}") from exc


def _request_body(model) -> dict:
    """OpenAPI's description of a JSON request body that the route reads itself (within the body limits)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _json(body: bytes):
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedRequestError(f"the request body is not valid JSON: {exc}") from exc


def _answer(model) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", exclude_none=True))


def _form_flag(value, name: str) -> bool:
    """A multipart true/false field (absent: false)."""
    if value is None:
        return False
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no", ""):
        return value.strip().lower() in ("true", "1", "yes")
    raise RequestValidationFailed(f"multipart field {name!r} must be true or false")


api = FastAPI(title="kidsart router", description="Scores children's artworks on a rubric with one LoRA per dimension.")


@ray_serve.deployment(name=ROUTER_DEPLOYMENT)
@ray_serve.ingress(api)
class ScoringRouter:
    """One router replica."""

    def __init__(self, runtime: dict, engine):
        from adapters.logs import setup_logging

        setup_logging()
        self.runtime = RouterRuntime.model_validate(runtime)
        self.scorer = EngineScorer(self.runtime, engine, EngineWatch(self.runtime.max_outage_s))
        self.rubric = self.scorer.rubric
        self.admission = Admission(
            self.runtime.settings.max_inflight_images,
            self.runtime.settings.max_queued_images,
            self.runtime.settings.retry_after_s,
        )

    # ---- helpers -------------------------------------------------------------------------

    async def _score(self, data: bytes, dimensions, description, request_id, feedback: bool = False):
        async with self.admission:
            result = await self.scorer.score_upload(data, dimensions, description, request_id, feedback)
        metrics.IMAGES.inc()
        return result

    async def runtime_info(self) -> dict:
        """What this router serves (rubric, adapters, prompt format, limits): for the district job's handle path,
        which prepares and scores images itself through the engine deployment."""
        return self.runtime.model_dump()

    async def _run(self, route: str, handler):
        self.scorer.watch.start()
        started = time.perf_counter()
        try:
            response = await handler()
        except Exception as exc:  # every error becomes a typed JSON answer
            response = _error_response(exc, route, self.runtime.settings.retry_after_s)
        metrics.REQUESTS.labels(route, str(response.status_code)).inc()
        metrics.LATENCY.labels(route).observe(time.perf_counter() - started)
        return response

    async def _admit(self, request: Request) -> bytes:
        """A scoring request's gate, in order: its key, room in the admission queue, its body within the limits."""
        self._authorize(request)
        self.admission.check()
        return await self._read_body(request)

    async def _read_body(self, request: Request) -> bytes:
        """The body within the limits (serve.body; Ray Serve's proxy has already applied the same ones)."""
        body = await read_limited_body(
            request.receive,
            body_limit(self.runtime.limits.max_image_bytes),
            self.runtime.settings.body_timeout_s,
            request.headers.get("content-length"),
        )
        request._body = body  # starlette replays a read body to request.form()
        return body

    def _authorize(self, request: Request) -> None:
        if self.runtime.api_key_digests and not key_matches(
            request.headers.get("authorization"), self.runtime.api_key_digests
        ):
            raise UnauthorizedError("a valid API key is required: send Authorization: Bearer <key>")

    # ---- routes ---------------------------------------------------------------------------

    @api.post(
        "/v1/score", response_model=ScoreAnswer, responses=ERROR_RESPONSES, openapi_extra=_request_body(ScoreRequest)
    )
    async def score(self, request: Request):
        async def handle():
            body = await self._admit(request)
            content_type = request.headers.get("content-type", "")
            if content_type.startswith("multipart/form-data"):
                data, dimensions, request_id, description, feedback = await self._parse_multipart(request)
            else:
                data, dimensions, request_id, description, feedback = self._parse_json(body)
            answer, _ = await self._score(data, dimensions, description, request_id, feedback)
            return _answer(answer)

        return await self._run("/v1/score", handle)

    def _parse_json(self, body: bytes):
        if not body:
            raise MalformedRequestError(
                "the request body is empty; send JSON {\"image\": ...} or multipart field 'image'"
            )
        parsed = _validated(ScoreRequest, _json(body), "score request")
        self.scorer.select(parsed.dimensions)  # unknown dimensions fail before any decoding
        if parsed.feedback:
            self.scorer.check_feedback()
        image = decode_base64_image(parsed.image)
        return image, parsed.dimensions, parsed.id or str(uuid.uuid4()), parsed.description, parsed.feedback

    async def _parse_multipart(self, request: Request):
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
        self.scorer.select(dimensions)
        feedback = _form_flag(form.get("feedback"), "feedback")
        if feedback:
            self.scorer.check_feedback()
        request_id = form.get("id") if isinstance(form.get("id"), str) else None
        description = form.get("description") if isinstance(form.get("description"), str) else None
        return data, dimensions, request_id or str(uuid.uuid4()), description, feedback

    @api.get("/v1/models", response_model=ModelListing, responses=ERROR_RESPONSES)
    async def models(self, request: Request):
        async def handle():
            self._authorize(request)
            return _answer(self._listing())

        return await self._run("/v1/models", handle)

    def _listing(self) -> ModelListing:
        created = int(time.time())
        data = [ModelCard(id=self.rubric.name, created=created, description=f"all dimensions of {self.rubric.title}")]
        data += [
            ModelCard(
                id=dim.name, created=created, adapter=self.runtime.adapters[dim.name], description=dim.description
            )
            for dim in self.rubric.dimensions
            if dim.name in self.runtime.adapters
        ]
        # beside OpenAI's fields: what a client without a profile needs (the district job checks files locally)
        return ModelListing(data=data, feedback_adapter=self.runtime.feedback_adapter, limits=self.runtime.limits)

    @api.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        responses=ERROR_RESPONSES,
        openapi_extra=_request_body(ChatCompletionRequest),
    )
    async def chat_completions(self, request: Request):
        async def handle():
            body = await self._admit(request)
            payload = _json(body) if body else None
            if not isinstance(payload, dict):
                raise MalformedRequestError("the request body must be a JSON object")
            parsed = _validated(ChatCompletionRequest, payload, "chat request")
            if parsed.model == self.rubric.name:
                dimensions = None
            elif parsed.model in self.runtime.adapters:
                dimensions = [parsed.model]
            else:
                raise UnsupportedModelError(
                    f"model {parsed.model!r} does not exist; use {self.rubric.name!r} or one of "
                    f"{list(self.runtime.adapters)}"
                )
            if parsed.feedback:
                self.scorer.check_feedback()
            image_url, text = _image_and_text(parsed.messages)
            data = decode_base64_image(image_url)
            request_id = "chatcmpl-" + uuid.uuid4().hex
            description = text if self.rubric.uses_description else None
            answer, prompt_tokens = await self._score(data, dimensions, description, request_id, parsed.feedback)
            completion_tokens = len(answer.scores)
            return _answer(
                ChatCompletion(
                    id=request_id,
                    created=int(time.time()),
                    model=parsed.model,
                    choices=[
                        ChatChoice(message=ChatResponseMessage(content=answer.model_dump_json(exclude_none=True)))
                    ],
                    usage=Usage(
                        prompt_tokens=prompt_tokens,
                        completion_tokens=completion_tokens,
                        total_tokens=prompt_tokens + completion_tokens,
                    ),
                )
            )

        return await self._run("/v1/chat/completions", handle)

    @api.get("/healthz")
    async def healthz(self):
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self):
        self.scorer.watch.start()
        ready, reason = await self.scorer.ready()
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "reason": reason}, status_code=200 if ready else 503
        )

    @api.get("/metrics")
    async def prometheus_metrics(self, request: Request):
        async def handle():
            if self.runtime.settings.metrics_require_key:
                self._authorize(request)
            return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

        return await self._run("/metrics", handle)

    @api.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def other_v1(self, request: Request, rest: str):
        """Any other /v1 path: 401 without a key (nothing about the API is told to strangers), else 404."""

        async def handle():
            self._authorize(request)
            raise UnsupportedRouteError(f"there is no route {request.method} /v1/{rest}")

        return await self._run("/v1/*", handle)


def router_options(settings: RouterSettings) -> dict:
    """The router deployment's Ray Serve options from the profile, in the names a Serve config file uses."""
    capacity = settings.max_inflight_images + settings.max_queued_images
    actor: dict = {"num_cpus": 0}
    if settings.resources:
        actor["resources"] = dict(settings.resources)
    # Ray's own limit sits above ours, so the router's admission answers 429 itself.
    return {
        "name": ROUTER_DEPLOYMENT,
        "num_replicas": settings.num_replicas,
        "max_ongoing_requests": capacity + 16,
        "ray_actor_options": actor,
    }


def build_app(runtime: RouterRuntime, engine):
    """The Ray Serve application: the router in front of `engine` (the bound engine deployment)."""
    return ScoringRouter.options(**router_options(runtime.settings)).bind(runtime.model_dump(), engine)
