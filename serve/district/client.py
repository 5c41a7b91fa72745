"""An asyncio client of the router's `POST /v1/score` with the district job's retry policy.

- 200: the scores (each requested dimension must be present).
- 400 / 413 / 422: the input is at fault; a final error result (becomes an error row).
- 429 / 503 (honouring Retry-After), other 5xx, connection errors and timeouts: the
  router or engine is busy or restarting; retried with capped exponential backoff
  and seeded jitter until `max_outage_s` has passed without an answer, then
  `RouterUnavailableError` (the run stops; `--resume` continues it later).
- any other status (404, 401, ...): `RouterProtocolError` (wrong URL or contract).
The original file bytes are sent; the router decodes and normalises them.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from dataclasses import dataclass

import httpx

from adapters.errors import KidsArtError

log = logging.getLogger(__name__)

INPUT_ERROR_STATUSES = frozenset({400, 413, 422})
RETRY_STATUSES = frozenset({429, 503})


class RouterUnavailableError(KidsArtError):
    """The router did not answer usefully within the allowed outage time."""

    kind = "router_unavailable"


class RouterProtocolError(KidsArtError):
    """The router answered in a way this client cannot use (wrong URL, unexpected status)."""

    kind = "router_protocol_error"


@dataclass
class RetryPolicy:
    """Backoff for transient failures."""

    base_delay_s: float = 0.5
    max_delay_s: float = 15.0
    max_outage_s: float = 900.0
    request_timeout_s: float = 600.0
    seed: int = 0


class ScoreClient:
    """Scores one image per call; many calls run concurrently on one connection pool."""

    def __init__(self, url: str, *, dimensions: list[str] | None = None, policy: RetryPolicy | None = None,
                 max_connections: int = 64, feedback: bool = False):
        self.url = url.rstrip("/")
        self.dimensions = list(dimensions or [])
        self.feedback = feedback
        self.policy = policy or RetryPolicy()
        self._random = random.Random(self.policy.seed)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.policy.request_timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )
        self.retries = 0
        self.last_success = time.monotonic()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> "ScoreClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(max(float(retry_after), 0.05), self.policy.max_delay_s) * (1 + 0.2 * self._random.random())
            except ValueError:
                pass
        delay = min(self.policy.max_delay_s, self.policy.base_delay_s * (2 ** min(attempt, 10)))
        return delay * (0.5 + self._random.random())

    async def wait_ready(self) -> None:
        """Poll GET /readyz until 200 (with backoff), at most `max_outage_s`."""
        started = time.monotonic()
        attempt = 0
        while True:
            reason = ""
            try:
                response = await self._client.get(f"{self.url}/readyz", timeout=10.0)
                if response.status_code == 200:
                    return
                if response.status_code == 404:
                    raise RouterProtocolError(f"{self.url}/readyz answered 404: is {self.url} the kidsart router?")
                reason = f"readyz answered {response.status_code}"
            except httpx.TransportError as exc:
                reason = f"{exc.__class__.__name__}"
            if time.monotonic() - started > self.policy.max_outage_s:
                raise RouterUnavailableError(
                    f"router at {self.url} not ready after {self.policy.max_outage_s:.0f} s ({reason})"
                )
            self.retries += 1
            if attempt == 0:
                log.info("waiting for the router at %s to be ready (%s)", self.url, reason)
            await asyncio.sleep(self._delay(attempt, None))
            attempt += 1

    async def score(self, data: bytes, *, request_id: str, description: str = "") -> dict:
        """{"status": "ok", "scores": {...}} or {"status": "error", "error_type", "error", "http_status"}."""
        payload: dict = {"image": base64.b64encode(data).decode("ascii"), "id": request_id}
        if self.dimensions:
            payload["dimensions"] = self.dimensions
        if description:
            payload["description"] = description
        if self.feedback:
            payload["feedback"] = True
        attempt = 0
        first_failure: float | None = None
        while True:
            retry_after = None
            try:
                response = await self._client.post(f"{self.url}/v1/score", json=payload)
            except httpx.TransportError as exc:
                reason = f"{exc.__class__.__name__}: {exc}"
            else:
                status = response.status_code
                if status == 200:
                    self.last_success = time.monotonic()
                    return self._parse_ok(response)
                if status in INPUT_ERROR_STATUSES:
                    self.last_success = time.monotonic()
                    return _parse_error(response)
                if status in RETRY_STATUSES or status >= 500:
                    retry_after = response.headers.get("retry-after")
                    reason = f"HTTP {status}"
                else:
                    raise RouterProtocolError(
                        f"POST {self.url}/v1/score answered {status}: {response.text[:300]!r}"
                    )
            now = time.monotonic()
            first_failure = first_failure or now
            outage = now - first_failure
            if outage > self.policy.max_outage_s:
                raise RouterUnavailableError(
                    f"no usable answer from {self.url} for {outage:.0f} s (last: {reason}); "
                    "rerun with --resume once it is back"
                )
            if attempt == 0 or attempt % 10 == 0:
                log.warning("%s: %s; retrying (attempt %d, outage %.0f s)", request_id, reason, attempt + 1, outage)
            self.retries += 1
            await asyncio.sleep(self._delay(attempt, retry_after))
            attempt += 1

    def _parse_ok(self, response: httpx.Response) -> dict:
        try:
            body = response.json()
            scores = body["scores"]
            missing = [d for d in self.dimensions if d not in scores]
            for dim, value in scores.items():
                float(value["score"])
                list(value["probs"])
            comment = body["feedback"] if self.feedback else None
            if comment is not None and not isinstance(comment["text"], str):
                raise TypeError("feedback.text is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            return {"status": "error", "error_type": "invalid_response", "http_status": 200,
                    "error": f"the router's answer is not a score object: {exc!r}"}
        if missing:
            return {"status": "error", "error_type": "invalid_response", "http_status": 200,
                    "error": f"the router's answer lacks dimensions {missing}"}
        result = {"status": "ok", "scores": scores, "rubric": body.get("rubric", "")}
        if comment is not None:
            result["feedback"] = comment
        return result


def _parse_error(response: httpx.Response) -> dict:
    error_type, message = f"http_{response.status_code}", response.text[:500]
    try:
        error = response.json()["error"]
        error_type = str(error.get("type") or error_type)
        message = str(error.get("message") or message)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return {"status": "error", "error_type": error_type, "error": message, "http_status": response.status_code}
