"""The fast path: one normalised image, fanned out to the engine's adapters concurrently.

`EngineScorer` sends one OpenAI chat request per dimension to the vLLM server
(`model=<dimension>` selects that LoRA), asks for the logprobs of the score
tokens only (`allowed_token_ids`, one generated token, greedy), and turns each
answer into a RAIL score with the shared function. The image arrives already
prepared (by the deployment's prompt format's image recipe) and PNG-encoded, so
every dimension sees identical pixels.

The engine client is aiohttp, not httpx: under the bench's router load py-spy put
half of the router replica's CPU in httpx/httpcore's connection-pool bookkeeping
(`_assign_requests_to_connections`, `has_expired` polling each pooled socket on
every request); on two cores that CPU is taken from the model (figures in the
README's Performance section).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from adapters.feedback import FEEDBACK_MODULE, FeedbackSettings, feedback_messages, require_feedback_adapter
from adapters.limits import InputLimits
from adapters.profiles import RouterSettings
from adapters.prompts import PromptFormat
from adapters.rail import rail_from_token_logprobs
from adapters.rubric import Rubric, load_rubric
from serve import metrics
from serve.engine import listing_readiness
from serve.errors import EngineResponseError, EngineUnavailableError
from serve.supervisor import read_status
from serve.vllm_plugin.engine_auth import engine_headers
from adapters.errors import UnknownDimensionError

log = logging.getLogger(__name__)

# A pooled engine connection is dropped after this many idle seconds, before any server closes it: vLLM's
# HTTP server closes idle connections after VLLM_HTTP_TIMEOUT_KEEP_ALIVE (default 5 s; our own engine gets
# 30), and a request written to a connection the server is closing at that instant fails ("Can not write
# request body"), which the router would answer 503. Measured with uvicorn at keep-alive 1 s and bursts
# after ~1 s idle: a 15 s client keep-alive failed in the first rounds, 0.5 s failed 0 of 60.
ENGINE_CONNECTION_IDLE_S = 4.0


class RouterRuntime(BaseModel):
    """Everything a router replica needs, resolved by the driver that starts it."""

    model_config = ConfigDict(extra="forbid")

    engine_url: str = Field(description="Base URL of the vLLM OpenAI server.")
    rubric: str = Field(description="Rubric name or path.")
    adapters: dict[str, str] = Field(description="Served dimension -> adapter label (name@version).")
    engine_modules: dict[str, str] = Field(description="Served dimension (and 'feedback') -> the engine's "
                                           "content-addressed LoRA module name (dimension@<weights hash>).")
    score_token_ids: list[int] = Field(description="Token ids of the score tokens, in level order.")
    settings: RouterSettings = Field(description="The profile's router settings (admission, timeouts, keys on /metrics).")
    limits: InputLimits = Field(description="The profile's image size and input limits.")
    base_model_id: str = Field(description="The base model's served name (for readiness checks).")
    prompt_format: PromptFormat = Field(description="The deployment's prompt format: messages and image recipe.")
    feedback_adapter: str | None = Field(
        default=None, description="Label (name@version) of the deployment's feedback adapter, served as module "
        f"{FEEDBACK_MODULE!r}; None: feedback requests get 422."
    )
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings, description="The profile's feedback generation settings.")
    deployment_name: str = Field(default="", description="The deployment set's name (named in errors).")
    api_key_digests: list[str] = Field(default_factory=list, description="SHA-256 hex digests of the router's API "
                                       "keys; empty: no key is asked (loopback only, or --insecure-no-auth).")
    engine_status_path: str | None = Field(default=None, description="The engine supervisor's status file "
                                           "(serve.supervisor): /readyz names a restart in progress or given up.")
    engine_api_key: str | None = Field(default=None, repr=False, description="The engine's key (made at each engine "
                                       "start, or the operator's for an engine on another host); never logged.")


@dataclass
class EngineScorer:
    """Async client of the vLLM server for one replica (pooled keep-alive connections)."""

    runtime: RouterRuntime
    rubric: Rubric = field(init=False)
    _session: aiohttp.ClientSession | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.rubric = load_rubric(self.runtime.rubric)

    def _client(self) -> aiohttp.ClientSession:
        """The pooled session, made on first use inside the event loop that will use it."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.runtime.settings.engine_connections,
                                               keepalive_timeout=ENGINE_CONNECTION_IDLE_S),
                timeout=aiohttp.ClientTimeout(total=self.runtime.settings.engine_timeout_s),
                headers=engine_headers(self.runtime.engine_api_key),
            )
        return self._session

    def _url(self, route: str) -> str:
        return self.runtime.engine_url.rstrip("/") + route

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
            "model": self.runtime.engine_modules[dim.name],
            "messages": self.runtime.prompt_format.chat_messages(self.rubric, dim, image_part, description),
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": len(self.rubric.score_tokens),
            "allowed_token_ids": self.runtime.score_token_ids,
        }
        _, text = await self._post(body, dim.name)
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EngineResponseError(f"the engine's answer for {dim.name} is not JSON") from exc
        try:
            content = payload["choices"][0]["logprobs"]["content"][0]
            top = {entry["token"]: entry["logprob"] for entry in content["top_logprobs"]}
            prompt_tokens = int(payload.get("usage", {}).get("prompt_tokens", 0))
        except (KeyError, IndexError, TypeError) as exc:
            raise EngineResponseError(f"the engine's answer for {dim.name} has no score-token logprobs") from exc
        return rail_from_token_logprobs(top, self.rubric.score_tokens, self.rubric.levels), prompt_tokens

    async def _post(self, body: dict, what: str, timeout_s: float | None = None) -> tuple[int, str]:
        """POST a chat request to the engine; transport failures and 5xx are 503s, other non-200s 502s."""
        timeout_s = timeout_s or self.runtime.settings.engine_timeout_s
        started = time.perf_counter()
        try:
            async with self._client().post(
                self._url("/v1/chat/completions"), json=body, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                status = response.status
                text = await response.text()
        except asyncio.TimeoutError as exc:
            raise EngineUnavailableError(f"the scoring engine did not answer within {timeout_s} s ({what})") from exc
        except aiohttp.ClientError as exc:
            raise EngineUnavailableError(f"the scoring engine is unreachable: {exc.__class__.__name__}") from exc
        finally:
            metrics.ENGINE_LATENCY.observe(time.perf_counter() - started)
        if status >= 500:
            raise EngineUnavailableError(f"the scoring engine answered {status} for {what}")
        if status != 200:
            raise EngineResponseError(f"the scoring engine rejected the {what} request ({status}): {text[:300]}")
        return status, text

    def check_feedback(self) -> None:
        """Refuse a feedback request at once when the deployment has no feedback adapter."""
        require_feedback_adapter(self.runtime.feedback_adapter is not None, f"deployment {self.runtime.deployment_name!r}")

    async def feedback(self, data_url: str, scores: dict, description: str | None = None) -> dict:
        """A comment on one image from the feedback adapter, with the scores just predicted in its prompt."""
        self.check_feedback()
        settings = self.runtime.feedback
        image_part = {"type": "image_url", "image_url": {"url": data_url}}
        body = {
            "model": self.runtime.engine_modules[FEEDBACK_MODULE],
            "messages": feedback_messages(
                self.runtime.prompt_format, self.rubric, {d: e["score"] for d, e in scores.items()}, image_part, description
            ),
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "repetition_penalty": settings.repetition_penalty,
        }
        _, text = await self._post(body, "feedback", settings.timeout_s)
        try:
            payload = json.loads(text)
            comment = payload["choices"][0]["message"]["content"]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise EngineResponseError("the engine's feedback answer has no message content") from exc
        if not isinstance(comment, str):
            raise EngineResponseError("the engine's feedback answer has no text")
        metrics.FEEDBACK.inc()
        return {"text": comment.strip(), "adapter": self.runtime.feedback_adapter}

    async def ready(self) -> tuple[bool, str]:
        # the supervisor's word first: while it restarts the engine or has given up, say so at once
        # instead of probing a port that may hang or belong to something else
        status = read_status(self.runtime.engine_status_path)
        if status and status.get("state") in ("restarting", "failed"):
            return False, f"engine {status['state']}: {status.get('reason', '')}"
        return await self._engine_ready()

    async def _engine_ready(self) -> tuple[bool, str]:
        try:
            async with self._client().get(self._url("/v1/models"), timeout=aiohttp.ClientTimeout(total=5.0)) as response:
                status = response.status
                listing = await response.json() if status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            return False, f"engine unreachable: {exc.__class__.__name__}"
        return listing_readiness(status, listing, list(self.runtime.engine_modules.values()))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
