"""The district job's use of the scoring API: `serve.client.AsyncScoringClient` (its one retry policy)
plus how each answer becomes a journal result.

- 200: the scores (each requested dimension must be present) -> an ok result.
- 400 / 413 / 422: the input is at fault -> a final error result (an error row).
- 429 / 503 (honouring Retry-After) and connection errors or timeouts: retried by the
  shared policy until `max_outage_s` has passed without an answer, then
  `RouterUnavailableError` (the run stops; `--resume` continues it later).
- other 5xx: the router failed on this image -> an error row naming the status.
- any other status (404, 401, ...): `RouterProtocolError` (wrong URL, key or contract).
The original file bytes are sent; the router decodes and normalises them.
"""

from __future__ import annotations

import logging
import time

from adapters.errors import KidsArtError
from serve.client import AsyncScoringClient, InvalidAnswerError, RetryPolicy, RouterUnavailableError, ScoringAPIError
from serve.protocol import ScoreAnswer

log = logging.getLogger(__name__)

INPUT_ERROR_STATUSES = frozenset({400, 413, 422})

__all__ = ["INPUT_ERROR_STATUSES", "RetryPolicy", "RouterProtocolError", "RouterUnavailableError", "ScoreClient"]


class RouterProtocolError(KidsArtError):
    """The router answered in a way this client cannot use (wrong URL, key, unexpected status)."""

    kind = "router_protocol_error"


class ScoreClient:
    """Scores one image per call; many calls run concurrently on one connection pool."""

    def __init__(
        self,
        url: str,
        *,
        dimensions: list[str] | None = None,
        policy: RetryPolicy | None = None,
        max_connections: int = 64,
        feedback: bool = False,
        api_key: str | None = None,
    ):
        self.dimensions = list(dimensions or [])
        self.feedback = feedback
        self.api = AsyncScoringClient(url, api_key=api_key, policy=policy, max_connections=max_connections)
        self.url, self.policy = self.api.url, self.api.policy
        self.last_success = time.monotonic()

    @property
    def retries(self) -> int:
        return self.api.retries

    async def aclose(self) -> None:
        await self.api.aclose()

    async def __aenter__(self) -> ScoreClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def wait_ready(self) -> None:
        """Wait until GET /readyz answers 200, at most `max_outage_s`."""
        try:
            await self.api.wait_ready()
        except ScoringAPIError as exc:
            raise RouterProtocolError(f"{self.url}/readyz: {exc}: is {self.url} the kidsart router?") from exc

    async def score(self, data: bytes, *, request_id: str, description: str = "") -> dict:
        """{"status": "ok", "scores": {...}} or {"status": "error", "error_type", "error", "http_status"}."""
        try:
            body = await self.api.score(
                data,
                request_id=request_id,
                dimensions=self.dimensions or None,
                description=description or None,
                feedback=self.feedback,
            )
        except RouterUnavailableError as exc:
            raise RouterUnavailableError(f"{exc}; rerun with --resume once it is back") from exc
        except InvalidAnswerError as exc:
            return {"status": "error", "error_type": "invalid_response", "error": str(exc), "http_status": 200}
        except ScoringAPIError as exc:
            if exc.status in INPUT_ERROR_STATUSES or (exc.status or 0) >= 500:
                self.last_success = time.monotonic()
                message = str(((exc.body or {}).get("error") or {}).get("message") or exc)
                return {"status": "error", "error_type": exc.error_type, "error": message, "http_status": exc.status}
            raise RouterProtocolError(f"POST {self.url}/v1/score: {exc}") from exc
        self.last_success = time.monotonic()
        return parse_score_answer(body, self.dimensions, self.feedback)


def parse_score_answer(answer: ScoreAnswer, dimensions: list[str], feedback: bool) -> dict:
    """A score answer as a journal result: ok with the scores (and the comment), or an invalid_response error when
    it lacks a requested dimension or the comment asked for."""
    missing = answer.missing(dimensions)
    if missing:
        return {
            "status": "error",
            "error_type": "invalid_response",
            "http_status": 200,
            "error": f"the answer lacks dimensions {missing}",
        }
    if feedback and answer.feedback is None:
        return {
            "status": "error",
            "error_type": "invalid_response",
            "http_status": 200,
            "error": "the answer has no feedback although it was asked for",
        }
    result = {
        "status": "ok",
        "scores": {d: s.model_dump(exclude_none=True) for d, s in answer.scores.items()},
        "rubric": answer.rubric,
    }
    if feedback:
        result["feedback"] = answer.feedback.model_dump()
    return result
