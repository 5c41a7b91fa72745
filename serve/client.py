"""The one client of the scoring API, with one retry policy.

`ScoringClient` (synchronous: `kidsart score`, `kidsart eval --backend router`, the
demo) and `AsyncScoringClient` (the district job and its Ray pipeline) send the same
requests and retry the same way, through tenacity:

- retried: connection errors and timeouts (the router restarting), 429 and 503
  (busy, or the engine restarting), waiting what `Retry-After` says (capped at
  `max_delay_s`) or else capped exponential backoff with seeded jitter, until
  `max_outage_s` has passed without an answer -> `RouterUnavailableError`;
- never retried: any 4xx (the input or the key is at fault) and any other status
  -> `ScoringAPIError` carrying the status and the JSON error body.

The key (`Authorization: Bearer`) is the `api_key` argument or `KIDSART_API_KEY`.
"""

from __future__ import annotations

import base64
import logging
import os
import random
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception_type, stop_after_delay

from adapters.errors import InputError, KidsArtError
from adapters.limits import DEFAULT_LIMITS, InputLimits
from serve.errors import RETRYABLE_STATUSES
from serve.protocol import AdapterSetStatus, ModelListing, ScoreAnswer, ScoreRequest

log = logging.getLogger(__name__)

API_KEY_ENV = "KIDSART_API_KEY"
ADMIN_KEY_ENV = "KIDSART_ADMIN_KEY"  # the admin key `kidsart adapters` sends (one of the router's KIDSART_ADMIN_KEYS)


class ScoringAPIError(KidsArtError):
    """The scoring API refused the request (4xx) or answered a status this client does not retry."""

    kind = "router_error"

    def __init__(self, message: str, status: int | None = None, body: dict | None = None):
        super().__init__(message)
        self.status = status
        self.body = body

    @property
    def error_type(self) -> str:
        error = (self.body or {}).get("error")
        return str(error.get("type")) if isinstance(error, dict) and error.get("type") else f"http_{self.status}"


class InvalidAnswerError(ScoringAPIError):
    """A 200 whose body is not the answer the protocol says (serve.protocol)."""

    kind = "invalid_response"


def parse_answer(model, body: dict, what: str):
    """A 200's body as its protocol model, or InvalidAnswerError naming `what` and the problem."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidAnswerError(f"{what}: the answer is not a {model.__name__}: {exc}"[:1000], 200, body) from exc


class RouterUnavailableError(KidsArtError):
    """No usable answer within the allowed outage time."""

    kind = "router_unavailable"


class RetryPolicy(BaseModel):
    """How long and how often a client retries a transient failure."""

    model_config = ConfigDict(extra="forbid")

    base_delay_s: float = Field(default=0.5, gt=0, le=60, description="First backoff delay (doubles per attempt).")
    max_delay_s: float = Field(default=15.0, gt=0, le=600, description="Longest single wait, Retry-After included.")
    max_outage_s: float = Field(
        default=900.0, ge=0, le=86_400, description="Give up after this long without a usable answer."
    )
    request_timeout_s: float = Field(default=600.0, gt=0, le=3600, description="Timeout of one HTTP request.")
    seed: int = Field(default=0, description="Seed of the backoff jitter.")


class _Transient(Exception):
    """A 429/503 answer, raised inside an attempt so that tenacity retries it."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _wait(policy: RetryPolicy, rng: random.Random):
    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Transient):
            try:
                return min(max(float(error.response.headers.get("retry-after", "")), 0.05), policy.max_delay_s)
            except ValueError:
                pass
        delay = min(policy.max_delay_s, policy.base_delay_s * 2 ** min(state.attempt_number - 1, 10))
        return delay * (0.5 + rng.random())

    return wait


def _log_retry(label: str):
    def before_sleep(state: RetryCallState) -> None:
        if state.attempt_number == 1 or state.attempt_number % 10 == 0:
            log.warning(
                "%s: %s; retrying (attempt %d, %.0f s so far)",
                label,
                state.outcome.exception(),
                state.attempt_number,
                state.seconds_since_start or 0.0,
            )

    return before_sleep


def retry_kwargs(policy: RetryPolicy, rng: random.Random, label: str, retry_on: tuple) -> dict:
    """tenacity's arguments for the one retry policy: `retry_on` errors retried with backoff (Retry-After
    honoured) until `policy.max_outage_s` has passed, then the last error raised."""
    return {
        "retry": retry_if_exception_type(retry_on),
        "stop": stop_after_delay(policy.max_outage_s),
        "wait": _wait(policy, rng),
        "before_sleep": _log_retry(label),
        "reraise": True,
    }


def score_payload(
    data: bytes,
    *,
    request_id: str | None = None,
    dimensions: list[str] | None = None,
    description: str | None = None,
    feedback: bool = False,
) -> dict:
    """The JSON body of POST /v1/score for image bytes (a serve.protocol.ScoreRequest)."""
    request = ScoreRequest(
        image=base64.b64encode(data).decode("ascii"),
        id=request_id or None,
        dimensions=list(dimensions) if dimensions else None,
        description=description or None,
        feedback=feedback,
    )
    return request.model_dump(exclude_none=True, exclude_defaults=True)


def auth_headers(api_key: str | None = None) -> dict:
    """`Authorization: Bearer` for the router: the given key, else $KIDSART_API_KEY, else none."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}


def _json_or_none(response: httpx.Response) -> dict | None:
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _answer(response: httpx.Response, what: str) -> dict:
    """The JSON body of a 200; a 429/503 raises _Transient (retried); anything else ScoringAPIError."""
    if response.status_code == 200:
        body = _json_or_none(response)
        if body is None:
            raise ScoringAPIError(f"{what}: the answer is not a JSON object", 200)
        return body
    if response.status_code in RETRYABLE_STATUSES:
        raise _Transient(response)
    body = _json_or_none(response)
    error = (body or {}).get("error")
    message = error.get("message") if isinstance(error, dict) else response.text[:300]
    raise ScoringAPIError(f"{what} answered {response.status_code}: {message}", response.status_code, body)


def _unavailable(url: str, error: Exception, policy: RetryPolicy) -> RouterUnavailableError:
    detail = (
        f"HTTP {error.response.status_code}"
        if isinstance(error, _Transient)
        else f"{error.__class__.__name__}: {error}"
    )
    return RouterUnavailableError(f"no usable answer from {url} within {policy.max_outage_s:.0f} s (last: {detail})")


class _Base:
    def __init__(self, url: str, *, api_key: str | None = None, policy: RetryPolicy | None = None):
        self.url = url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self.headers = auth_headers(api_key)
        self._rng = random.Random(self.policy.seed)
        self.retries = 0

    def _kwargs(self, label: str) -> dict:
        kwargs = retry_kwargs(self.policy, self._rng, label, (httpx.TransportError, _Transient))
        before = kwargs["before_sleep"]

        def count(state: RetryCallState) -> None:
            self.retries += 1
            before(state)

        return {**kwargs, "before_sleep": count}


class ServedModels(BaseModel):
    """What a router says it serves (its `GET /v1/models`): read here once for every client without a profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rubric: str = Field(description="The rubric's model id (all dimensions at once): the entry without an adapter.")
    dimensions: list[str] = Field(description="One model id per served dimension, in the router's order.")
    feedback_adapter: str | None = Field(default=None, description="The feedback adapter's name@version, if any.")
    limits: InputLimits = Field(
        default=DEFAULT_LIMITS, description="The router's input limits (defaults if it names none)."
    )

    @classmethod
    def from_listing(cls, listing: object, url: str) -> ServedModels:
        """What a listing (a ModelListing, or its JSON) says; ScoringAPIError naming `url` when it is not a scoring
        router's listing or lists no rubric model."""
        if not isinstance(listing, ModelListing):
            listing = parse_answer(ModelListing, listing, f"{url}/v1/models")
        rubrics = [m.id for m in listing.data if m.adapter is None]
        if not rubrics:
            raise ScoringAPIError(f"{url}/v1/models lists no rubric model: {[m.id for m in listing.data]}")
        return cls(
            rubric=rubrics[0],
            dimensions=[m.id for m in listing.data if m.adapter is not None],
            feedback_adapter=listing.feedback_adapter,
            limits=listing.limits,
        )


class ScoringClient(_Base):
    """Synchronous client (one connection pool; thread-safe for concurrent calls)."""

    def __init__(
        self, url: str, *, api_key: str | None = None, policy: RetryPolicy | None = None, max_connections: int = 16
    ):
        super().__init__(url, api_key=api_key, policy=policy)
        self._client = httpx.Client(
            timeout=httpx.Timeout(self.policy.request_timeout_s, connect=10.0),
            headers=self.headers,
            limits=httpx.Limits(max_connections=max_connections),
        )

    def _call(self, method: str, path: str, label: str, **kwargs) -> dict:
        try:
            for attempt in Retrying(**self._kwargs(label)):
                with attempt:
                    return _answer(
                        self._client.request(method, f"{self.url}{path}", **kwargs), f"{method} {self.url}{path}"
                    )
        except (httpx.TransportError, _Transient) as exc:
            raise _unavailable(self.url, exc, self.policy) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def score(self, data: bytes, *, request_id: str | None = None, **fields) -> ScoreAnswer:
        """Scores of one image (`dimensions`, `description`, `feedback` as in `score_payload`)."""
        body = self._call(
            "POST", "/v1/score", request_id or "score", json=score_payload(data, request_id=request_id, **fields)
        )
        return parse_answer(ScoreAnswer, body, f"POST {self.url}/v1/score")

    def score_file(self, path: Path, **fields) -> ScoreAnswer:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from exc
        return self.score(data, **fields)

    def models(self) -> ModelListing:
        """GET /v1/models (OpenAI's list, plus `feedback_adapter` and `limits`)."""
        return parse_answer(ModelListing, self._call("GET", "/v1/models", "models"), f"GET {self.url}/v1/models")

    def served(self) -> ServedModels:
        """What the router serves: its rubric, dimensions, feedback adapter and input limits."""
        return ServedModels.from_listing(self.models(), self.url)

    def adapter_sets(self) -> AdapterSetStatus:
        """GET /v1/admin/adapters (an admin key): the served adapter set, its generation and history."""
        body = self._call("GET", "/v1/admin/adapters", "adapter sets")
        return parse_answer(AdapterSetStatus, body, f"GET {self.url}/v1/admin/adapters")

    def promote(self, deployment: str) -> AdapterSetStatus:
        """POST /v1/admin/adapters/promote: serve this deployment set (a path the router's nodes read)."""
        body = self._call("POST", "/v1/admin/adapters/promote", "promote", json={"deployment": deployment})
        return parse_answer(AdapterSetStatus, body, f"POST {self.url}/v1/admin/adapters/promote")

    def rollback(self) -> AdapterSetStatus:
        """POST /v1/admin/adapters/rollback: serve the set served before the last promotion."""
        body = self._call("POST", "/v1/admin/adapters/rollback", "rollback")
        return parse_answer(AdapterSetStatus, body, f"POST {self.url}/v1/admin/adapters/rollback")

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ScoringClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncScoringClient(_Base):
    """Asyncio client; many calls run concurrently on one connection pool."""

    def __init__(
        self, url: str, *, api_key: str | None = None, policy: RetryPolicy | None = None, max_connections: int = 64
    ):
        super().__init__(url, api_key=api_key, policy=policy)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.policy.request_timeout_s, connect=10.0),
            headers=self.headers,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def _call(self, method: str, path: str, label: str, **kwargs) -> dict:
        try:
            async for attempt in AsyncRetrying(**self._kwargs(label)):
                with attempt:
                    response = await self._client.request(method, f"{self.url}{path}", **kwargs)
                    return _answer(response, f"{method} {self.url}{path}")
        except (httpx.TransportError, _Transient) as exc:
            raise _unavailable(self.url, exc, self.policy) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def score(self, data: bytes, *, request_id: str | None = None, **fields) -> ScoreAnswer:
        body = await self._call(
            "POST", "/v1/score", request_id or "score", json=score_payload(data, request_id=request_id, **fields)
        )
        return parse_answer(ScoreAnswer, body, f"POST {self.url}/v1/score")

    async def wait_ready(self) -> None:
        """Wait (with the same policy) until GET /readyz answers 200."""
        await self._call("GET", "/readyz", "readyz", timeout=10.0)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AsyncScoringClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()


def use_api_key(api_key: str | None) -> None:
    """A command's `--api-key`: set for this process and the ones it starts (locust, bench workers, Ray
    workers of a local instance), which all read `KIDSART_API_KEY`; None leaves the environment's own."""
    if api_key:
        os.environ[API_KEY_ENV] = api_key
