"""The fast path: one normalised image, fanned out to the engine's adapters concurrently.

`EngineScorer` sends one OpenAI chat request per dimension to the vLLM server
(`model=<dimension>` selects that LoRA), asks for the logprobs of the score
tokens only (`allowed_token_ids`, one generated token, greedy), and turns each
answer into a RAIL score with the shared function. The image arrives already
normalised and PNG-encoded, so every dimension sees identical pixels.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import httpx
from pydantic import BaseModel, ConfigDict, Field

from adapters.prompts import chat_messages
from adapters.rail import rail_from_token_logprobs
from adapters.rubric import Rubric, load_rubric
from serve import metrics
from serve.errors import EngineResponseError, EngineUnavailableError
from adapters.errors import UnknownDimensionError

log = logging.getLogger(__name__)


class RouterRuntime(BaseModel):
    """Everything a router replica needs, resolved by the driver that starts it."""

    model_config = ConfigDict(extra="forbid")

    engine_url: str = Field(description="Base URL of the vLLM OpenAI server.")
    rubric: str = Field(description="Rubric name or path.")
    adapters: dict[str, str] = Field(description="Served dimension -> adapter label (name@version).")
    score_token_ids: list[int] = Field(description="Token ids of the score tokens, in level order.")
    image_size: int = Field(description="Side of the letter-boxed image.")
    max_image_bytes: int = Field(description="Largest accepted image in bytes.")
    max_image_pixels: int = Field(description="Largest accepted width*height.")
    max_inflight_images: int = Field(description="Images scored at once per replica.")
    max_queued_images: int = Field(description="Images waiting per replica before 429.")
    retry_after_s: int = Field(description="Retry-After seconds for 429/503.")
    engine_timeout_s: float = Field(description="Timeout of one engine request.")
    engine_connections: int = Field(description="Pooled connections to the engine.")
    base_model_id: str = Field(description="The base model's served name (for readiness checks).")


@dataclass
class EngineScorer:
    """Async client of the vLLM server for one replica (pooled keep-alive connections)."""

    runtime: RouterRuntime
    rubric: Rubric = field(init=False)
    client: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.rubric = load_rubric(self.runtime.rubric)
        limits = httpx.Limits(
            max_connections=self.runtime.engine_connections, max_keepalive_connections=self.runtime.engine_connections
        )
        self.client = httpx.AsyncClient(
            base_url=self.runtime.engine_url, timeout=self.runtime.engine_timeout_s, limits=limits
        )

    def select(self, dimensions: list[str] | None) -> list:
        """The requested dimensions (validated), or every deployed one when none are named."""
        if not dimensions:
            return [d for d in self.rubric.dimensions if d.name in self.runtime.adapters]
        selected = self.rubric.select(dimensions)
        missing = [d.name for d in selected if d.name not in self.runtime.adapters]
        if missing:
            raise UnknownDimensionError(f"no adapter is deployed for dimension(s) {missing}")
        return selected

    async def score(self, data_url: str, dimensions: list[str] | None = None, description: str | None = None) -> tuple[dict, int]:
        """Score one image on the chosen dimensions; returns (scores, prompt tokens used)."""
        selected = self.select(dimensions)
        image_part = {"type": "image_url", "image_url": {"url": data_url}}
        results = await asyncio.gather(
            *(self._score_dimension(dim, image_part, description) for dim in selected)
        )
        scores = {}
        prompt_tokens = 0
        for dim, (rail, tokens) in zip(selected, results):
            scores[dim.name] = {
                "score": rail.score,
                "probs": rail.probs,
                "std": rail.std,
                "adapter": self.runtime.adapters[dim.name],
            }
            metrics.SCORES.labels(dim.name).observe(rail.score)
            prompt_tokens += tokens
        return scores, prompt_tokens

    async def _score_dimension(self, dim, image_part: dict, description: str | None):
        body = {
            "model": dim.name,
            "messages": chat_messages(self.rubric, dim, image_part, description),
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": len(self.rubric.score_tokens),
            "allowed_token_ids": self.runtime.score_token_ids,
        }
        started = time.perf_counter()
        try:
            response = await self.client.post("/v1/chat/completions", json=body)
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise EngineUnavailableError(f"the scoring engine is unreachable: {exc.__class__.__name__}") from exc
        except httpx.TimeoutException as exc:
            raise EngineUnavailableError(
                f"the scoring engine did not answer within {self.runtime.engine_timeout_s} s"
            ) from exc
        finally:
            metrics.ENGINE_LATENCY.observe(time.perf_counter() - started)
        if response.status_code >= 500:
            raise EngineUnavailableError(f"the scoring engine answered {response.status_code} for {dim.name}")
        if response.status_code != 200:
            raise EngineResponseError(
                f"the scoring engine rejected the {dim.name} request ({response.status_code}): {response.text[:300]}"
            )
        payload = response.json()
        try:
            content = payload["choices"][0]["logprobs"]["content"][0]
            top = {entry["token"]: entry["logprob"] for entry in content["top_logprobs"]}
            prompt_tokens = int(payload.get("usage", {}).get("prompt_tokens", 0))
        except (KeyError, IndexError, TypeError) as exc:
            raise EngineResponseError(f"the engine's answer for {dim.name} has no score-token logprobs") from exc
        return rail_from_token_logprobs(top, self.rubric.score_tokens, self.rubric.levels), prompt_tokens

    async def ready(self) -> tuple[bool, str]:
        try:
            response = await self.client.get("/v1/models", timeout=5.0)
        except httpx.HTTPError as exc:
            return False, f"engine unreachable: {exc.__class__.__name__}"
        if response.status_code != 200:
            return False, f"engine /v1/models answered {response.status_code}"
        served = {m["id"] for m in response.json().get("data", [])}
        missing = [d for d in self.runtime.adapters if d not in served]
        if missing:
            return False, f"adapters not loaded in the engine: {missing}"
        return True, "ready"

    async def aclose(self) -> None:
        await self.client.aclose()
