"""A fake router for the district unit tests: the `/v1/score` contract, deterministic scores, outages on demand.

Scores are a pure function of the image bytes (so resumed and uninterrupted runs
must match exactly); undecodable images get the router's 400 error body; `down()`
makes it answer 503 with Retry-After (an engine restart seen through the router)
and `stop()`/`start()` take the port away entirely (a router restart).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import time

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.errors import InputError
from adapters.images import decode_image
from adapters.limits import DEFAULT_LIMITS, InputLimits
from adapters.rail import expected_score
from adapters.rubric import load_rubric
from serve.protocol import ModelCard, ModelListing, ScoreAnswer
from tests.conftest import wait_for

DIMS = load_rubric("kidsartbench").dimension_names  # the nine, in the rubric's order


def fake_scores(data: bytes, dims=DIMS) -> dict:
    scores = {}
    for dim in dims:
        digest = hashlib.sha256(dim.encode() + data).digest()
        logits = np.frombuffer(digest[:5], dtype=np.uint8).astype(np.float64) / 40.0
        probs, mean, std = expected_score(logits)
        scores[dim] = {
            "score": float(mean),
            "probs": [float(p) for p in probs],
            "std": float(std),
            "adapter": f"{dim}@fake",
        }
    return scores


def fake_comment(data: bytes) -> str:
    return f"Comment <{hashlib.sha256(data).hexdigest()[:8]}> & more."


class FakeRouter:
    def __init__(
        self, port: int, delay_s: float = 0.01, feedback_adapter: str | None = None, max_image_bytes: int | None = None
    ):
        self.port = port
        self.max_image_bytes = max_image_bytes  # None: the default limits
        self.feedback_adapter = feedback_adapter
        self.delay_s = delay_s
        self.down_until = 0.0
        self.requests = 0
        self.scored_ids: list[str] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/score", self.score, methods=["POST"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/v1/models", self.models, methods=["GET"]),
            ]
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def down(self, seconds: float) -> None:
        self.down_until = time.monotonic() + seconds

    async def models(self, request: Request):
        """The router's listing: the rubric model, then one model per dimension (with its adapter)."""
        limits = (
            DEFAULT_LIMITS
            if self.max_image_bytes is None
            else InputLimits(image_size=224, max_image_bytes=self.max_image_bytes, max_image_pixels=10**6)
        )
        listing = ModelListing(
            data=[ModelCard(id="kidsartbench", created=0, description="all")]
            + [ModelCard(id=dim, created=0, description=dim, adapter=f"{dim}@fake") for dim in DIMS],
            feedback_adapter=self.feedback_adapter,
            limits=limits,
        )
        return JSONResponse(listing.model_dump(mode="json"))

    async def readyz(self, request: Request):
        if time.monotonic() < self.down_until:
            return JSONResponse({"status": "not ready"}, status_code=503, headers={"Retry-After": "1"})
        return JSONResponse({"status": "ready"})

    async def score(self, request: Request):
        self.requests += 1
        if time.monotonic() < self.down_until:
            return JSONResponse(
                {"error": {"type": "engine_unavailable", "message": "restarting"}},
                status_code=503,
                headers={"Retry-After": "1"},
            )
        body = await request.json()
        data = base64.b64decode(body["image"])
        await asyncio.sleep(self.delay_s)
        try:
            decode_image(data)
        except InputError as exc:
            return JSONResponse({"error": {"type": exc.kind, "message": str(exc)}}, status_code=400)
        if body.get("feedback") and not self.feedback_adapter:
            return JSONResponse(
                {"error": {"type": "feedback_not_deployed", "message": "no feedback adapter"}}, status_code=422
            )
        self.scored_ids.append(body.get("id"))
        answer = ScoreAnswer(
            id=body.get("id") or "fake",
            rubric="kidsartbench",
            scores=fake_scores(data, body.get("dimensions") or DIMS),
            feedback={"text": fake_comment(data), "adapter": self.feedback_adapter} if body.get("feedback") else None,
        )
        return JSONResponse(answer.model_dump(mode="json", exclude_none=True))

    def start(self) -> FakeRouter:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_for(lambda: self._server.started, 10, "the fake router to start", poll=0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> FakeRouter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
