"""The Ray Serve router: the HTTP API in front of the engine deployment.

Routes:
- POST /v1/score                 one image (multipart field `image`, or JSON) -> scores
                                 (+ `feedback: true`: a comment by the feedback adapter beside them)
- GET  /v1/models                the rubric model and one model per dimension
- POST /v1/chat/completions      OpenAI-compatible; model = rubric or a dimension; `feedback: true`
                                 in the body (the openai client's `extra_body`) adds the comment
- GET  /healthz, /readyz, /metrics
- GET  /v1/admin/adapters, POST /v1/admin/adapters/promote, /rollback (admin keys only): the
  served adapter set changed without a restart (serve.adapter_sets, serve.admin_routes)

Each image is decoded and prepared once (the prompt format's recipe); its pixels go to one
engine replica in one Ray handle call scoring every dimension (serve.scoring). A bounded
admission queue per replica answers 429 + Retry-After when full, before requests pile up.
"""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from ray import serve as ray_serve

from adapters.images import decode_base64_image
from adapters.profiles import RouterSettings
from serve import metrics
from serve.body import body_limit, read_limited_body
from serve.chat import image_and_text, model_dimensions
from serve.errors import (
    STATUS_BY_ERROR,
    ForbiddenError,
    MalformedRequestError,
    UnauthorizedError,
    UnsupportedRouteError,
    error_body,
    status_for,
)
from serve.http_parts import (
    Admission,
    error_response,
    json_answer,
    openapi_json_body,
    parse_json,
    parse_multipart,
    parse_score_request,
    validated,
)
from serve.keys import bearer_token, digest, key_matches
from serve.protocol import (
    AdapterSetStatus,
    BatchCreateRequest,
    BatchList,
    BatchObject,
    ChatCompletion,
    ChatCompletionRequest,
    ErrorBody,
    FileDeleted,
    FileObject,
    ModelCard,
    ModelListing,
    PromoteRequest,
    ScoreAnswer,
    ScoreRequest,
)
from serve.scoring import EngineScorer, EngineWatch, RouterRuntime

log = logging.getLogger(__name__)

ROUTER_DEPLOYMENT = "ScoringRouter"
ANONYMOUS_OWNER = "anonymous"  # the owner of files and batches when the router has no keys (loopback)
# every error status the router answers with, each an ErrorBody (published in /openapi.json)
ERROR_RESPONSES = {status: {"model": ErrorBody} for status in sorted({s for _, s in STATUS_BY_ERROR} - {500})}


api = FastAPI(title="kidsart router", description="Scores children's artworks on a rubric with one LoRA per dimension.")


@ray_serve.deployment(name=ROUTER_DEPLOYMENT)
@ray_serve.ingress(api)
class ScoringRouter:
    """One router replica."""

    async def __init__(self, runtime: dict, engine, batches=None, sets=None):
        from adapters.logs import setup_logging
        from serve.admin_routes import AdminRoutes, SetFollower
        from serve.batch.routes import BatchRoutes

        setup_logging()
        self.runtime = RouterRuntime.model_validate(runtime)
        self.engine = engine
        self.batch_routes = BatchRoutes(batches, self.runtime.batch.max_file_bytes) if batches is not None else None
        self.scorer = EngineScorer(self.runtime, engine, EngineWatch(self.runtime.max_outage_s))
        self.rubric = self.scorer.rubric
        self.admin = None
        if sets is not None:  # the served adapter set, followed from AdapterSets (read now: it may be a promoted one)
            follower = SetFollower(sets, self._serve_set)
            await follower.start()
            self.admin = AdminRoutes(sets, engine, follower)
        self.admission = Admission(
            self.runtime.settings.max_inflight_images,
            self.runtime.settings.max_queued_images,
            self.runtime.settings.retry_after_s,
            busy_share=self.runtime.batch.inflight_while_busy,
            quiet_s=self.runtime.batch.quiet_s,
        )

    # ---- helpers -------------------------------------------------------------------------

    def _serve_set(self, served, generation: int) -> None:
        """Serve another adapter set from now on: a new scorer; requests in flight finish with the old one."""
        self.runtime = self.runtime.serving(served)
        self.scorer = EngineScorer(self.runtime, self.engine, self.scorer.watch)
        log.info("serving adapter set %s (generation %d): %s", served.name, generation, served.adapters)

    async def _score(self, data: bytes, dimensions, description, request_id, feedback=False, background=False):
        async with self.admission.background() if background else self.admission:
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
            response = error_response(exc, route, self.runtime.settings.retry_after_s)
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

    def _authorize_admin(self, request: Request) -> str:
        """Who is changing the served set (the admin key's digest prefix); 403 for a scoring key or when this
        router has scoring keys but no admin key; open only on a router without any key (loopback)."""
        header = request.headers.get("authorization")
        if self.runtime.admin_key_digests and key_matches(header, self.runtime.admin_key_digests):
            return "admin:" + digest(bearer_token(header))[:12]
        if not self.runtime.admin_key_digests and not self.runtime.api_key_digests:
            return ANONYMOUS_OWNER
        if key_matches(header, self.runtime.api_key_digests):
            raise ForbiddenError("this key may score but not change the served adapters: use an admin key")
        if not self.runtime.admin_key_digests:
            raise ForbiddenError("this router has no admin key: set KIDSART_ADMIN_KEYS where it starts")
        raise UnauthorizedError("an admin key is required: send Authorization: Bearer <admin key>")

    def _admin_routes(self, request: Request):
        by = self._authorize_admin(request)
        if self.admin is None:
            raise UnsupportedRouteError("this router does not manage its adapter set")
        return self.admin, by

    # ---- routes ---------------------------------------------------------------------------

    @api.post(
        "/v1/score",
        response_model=ScoreAnswer,
        responses=ERROR_RESPONSES,
        openapi_extra=openapi_json_body(ScoreRequest),
    )
    async def score(self, request: Request):
        async def handle():
            body = await self._admit(request)
            content_type = request.headers.get("content-type", "")
            if content_type.startswith("multipart/form-data"):
                data, dimensions, request_id, description, feedback = await parse_multipart(request, self.scorer)
            else:
                if not body:
                    raise MalformedRequestError(
                        "the request body is empty; send JSON {\"image\": ...} or multipart field 'image'"
                    )
                data, dimensions, request_id, description, feedback = parse_score_request(parse_json(body), self.scorer)
            answer, _ = await self._score(data, dimensions, description, request_id, feedback)
            return json_answer(answer)

        return await self._run("/v1/score", handle)

    @api.get("/v1/models", response_model=ModelListing, responses=ERROR_RESPONSES)
    async def models(self, request: Request):
        async def handle():
            self._authorize(request)
            return json_answer(self._listing())

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
        openapi_extra=openapi_json_body(ChatCompletionRequest),
    )
    async def chat_completions(self, request: Request):
        async def handle():
            body = await self._admit(request)
            return json_answer(await self._chat(parse_json(body) if body else None))

        return await self._run("/v1/chat/completions", handle)

    async def _chat(self, payload, background: bool = False) -> ChatCompletion:
        if not isinstance(payload, dict):
            raise MalformedRequestError("the request body must be a JSON object")
        parsed = validated(ChatCompletionRequest, payload, "chat request")
        dimensions = model_dimensions(parsed.model, self.rubric.name, self.runtime.adapters)
        if parsed.feedback:
            self.scorer.check_feedback()
        image_url, text = image_and_text(parsed.messages)
        data = decode_base64_image(image_url)
        request_id = "chatcmpl-" + uuid.uuid4().hex
        description = text if self.rubric.uses_description else None
        answer, prompt_tokens = await self._score(
            data, dimensions, description, request_id, parsed.feedback, background
        )
        return ChatCompletion.of(answer, parsed.model, request_id, prompt_tokens)

    async def score_line(self, endpoint: str, body: dict) -> tuple[int, dict]:
        """One line of a batch through the sync route's own handling, below the sync traffic's priority (it waits
        for a free in-flight slot rather than queueing ahead of requests): (HTTP status, the route's body)."""
        self.scorer.watch.start()
        try:
            if endpoint == "/v1/score":
                data, dimensions, request_id, description, feedback = parse_score_request(body, self.scorer)
                answer, _ = await self._score(data, dimensions, description, request_id, feedback, True)
            else:
                answer = await self._chat(body, background=True)
            return 200, answer.model_dump(mode="json", exclude_none=True)
        except Exception as exc:  # every error is the line's answer, as the sync route would give it
            return status_for(exc), error_body(exc)

    # ---- the OpenAI Files and Batch APIs (serve/batch/routes.py does the work) -------------------

    def _owner(self, request: Request) -> str:
        """Whose files and batches these are: the key's digest (any caller is one owner when keys are off)."""
        self._authorize(request)
        if self.batch_routes is None:
            raise UnsupportedRouteError("this router serves no Batch API")
        token = bearer_token(request.headers.get("authorization"))
        return digest(token) if self.runtime.api_key_digests and token else ANONYMOUS_OWNER

    @api.post("/v1/files", response_model=FileObject, responses=ERROR_RESPONSES)
    async def files_create(self, request: Request):
        return await self._run("/v1/files", lambda: self.batch_routes.create_file(self._owner(request), request))

    @api.get("/v1/files/{file_id}", response_model=FileObject, responses=ERROR_RESPONSES)
    async def files_get(self, request: Request, file_id: str):
        return await self._run("/v1/files/{id}", lambda: self.batch_routes.get_file(self._owner(request), file_id))

    @api.get("/v1/files/{file_id}/content", responses=ERROR_RESPONSES)
    async def files_content(self, request: Request, file_id: str):
        owner = lambda: self._owner(request)  # noqa: E731 (checked inside _run, as every route's key)
        return await self._run("/v1/files/{id}/content", lambda: self.batch_routes.file_content(owner(), file_id))

    @api.delete("/v1/files/{file_id}", response_model=FileDeleted, responses=ERROR_RESPONSES)
    async def files_delete(self, request: Request, file_id: str):
        return await self._run("/v1/files/{id}", lambda: self.batch_routes.delete_file(self._owner(request), file_id))

    @api.post(
        "/v1/batches",
        response_model=BatchObject,
        responses=ERROR_RESPONSES,
        openapi_extra=openapi_json_body(BatchCreateRequest),
    )
    async def batches_create(self, request: Request):
        async def handle():
            owner = self._owner(request)
            return await self.batch_routes.create_batch(owner, await self._read_body(request))

        return await self._run("/v1/batches", handle)

    @api.get("/v1/batches/{batch_id}", response_model=BatchObject, responses=ERROR_RESPONSES)
    async def batches_get(self, request: Request, batch_id: str):
        return await self._run("/v1/batches/{id}", lambda: self.batch_routes.get_batch(self._owner(request), batch_id))

    @api.post("/v1/batches/{batch_id}/cancel", response_model=BatchObject, responses=ERROR_RESPONSES)
    async def batches_cancel(self, request: Request, batch_id: str):
        return await self._run(
            "/v1/batches/{id}/cancel", lambda: self.batch_routes.cancel_batch(self._owner(request), batch_id)
        )

    @api.get("/v1/batches", response_model=BatchList, responses=ERROR_RESPONSES)
    async def batches_list(self, request: Request):
        query = request.query_params
        return await self._run(
            "/v1/batches",
            lambda: self.batch_routes.list_batches(self._owner(request), query.get("after"), query.get("limit")),
        )

    # ---- the served adapter set (serve/admin_routes.py does the work) ---------------------------

    @api.get("/v1/admin/adapters", response_model=AdapterSetStatus, responses=ERROR_RESPONSES)
    async def admin_adapters(self, request: Request):
        return await self._run("/v1/admin/adapters", lambda: self._admin_routes(request)[0].status())

    @api.post(
        "/v1/admin/adapters/promote",
        response_model=AdapterSetStatus,
        responses=ERROR_RESPONSES,
        openapi_extra=openapi_json_body(PromoteRequest),
    )
    async def admin_promote(self, request: Request):
        async def handle():
            admin, by = self._admin_routes(request)
            return await admin.promote(await self._read_body(request), by)

        return await self._run("/v1/admin/adapters/promote", handle)

    @api.post("/v1/admin/adapters/rollback", response_model=AdapterSetStatus, responses=ERROR_RESPONSES)
    async def admin_rollback(self, request: Request):
        async def handle():
            admin, by = self._admin_routes(request)
            return await admin.rollback(by)

        return await self._run("/v1/admin/adapters/rollback", handle)

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


def build_app(runtime: RouterRuntime, engine, batches=None, sets=None):
    """The Ray Serve application: the router in front of `engine` (the bound engine deployment) and, when given,
    `batches` (the bound batch runner, serve.batch.runner) and `sets` (the served adapter set, serve.adapter_sets)."""
    options = router_options(runtime.settings)
    return ScoringRouter.options(**options).bind(runtime.model_dump(mode="json"), engine, batches, sets)
