"""The one client of the scoring API (serve/client.py): what it retries, what it never retries, its key."""

import asyncio
import threading
import time

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from serve.client import AsyncScoringClient, RetryPolicy, RouterUnavailableError, ScoringAPIError, ScoringClient
from serve.protocol import ScoreAnswer
from tests.conftest import free_port, wait_for

OK = ScoreAnswer(
    id="x",
    rubric="kidsartbench",
    scores={"realism": {"score": 3.0, "probs": [0.2] * 5, "std": 1.41, "adapter": "realism@t"}},
)
LIMITS = {"image_size": 224, "max_image_bytes": 4096, "max_image_pixels": 10_000}


def _card(model_id: str, adapter: str | None = None) -> dict:
    return {
        "id": model_id,
        "object": "model",
        "created": 0,
        "owned_by": "kidsart",
        "description": model_id,
        **({"adapter": adapter} if adapter else {}),
    }


class Scripted:
    """Answers POST /v1/score with the scripted (status, headers) in turn, then 200; records what it saw."""

    def __init__(self, script: list[tuple[int, dict]]):
        self.script = list(script)
        self.seen: list[dict] = []
        self.port = free_port()
        app = Starlette(
            routes=[Route("/v1/score", self.score, methods=["POST"]), Route("/v1/models", self.models, methods=["GET"])]
        )
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def score(self, request: Request):
        self.seen.append(
            {"time": time.monotonic(), "auth": request.headers.get("authorization"), "body": await request.json()}
        )
        if self.script:
            status, headers = self.script.pop(0)
            return JSONResponse(
                {"error": {"type": f"t{status}", "message": f"scripted {status}"}}, status_code=status, headers=headers
            )
        return JSONResponse(OK.model_dump(exclude_none=True))

    async def models(self, request: Request):
        return JSONResponse(
            {"object": "list", "data": [_card("kidsartbench")], "feedback_adapter": None, "limits": LIMITS}
        )

    def __enter__(self) -> "Scripted":
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 10, "the scripted server to start", poll=0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


FAST = RetryPolicy(base_delay_s=0.05, max_delay_s=2.0, max_outage_s=20.0, request_timeout_s=10.0, seed=1)


def test_429_and_503_are_retried_honouring_retry_after_then_succeed():
    with Scripted([(429, {"Retry-After": "1"}), (503, {"Retry-After": "1"})]) as server:
        with ScoringClient(server.url, policy=FAST, api_key="k1") as client:
            assert client.score(b"png", request_id="a", dimensions=["realism"], feedback=True) == OK
            assert client.retries == 2
    times = [s["time"] for s in server.seen]
    assert len(times) == 3 and all(
        b - a >= 0.95 for a, b in zip(times, times[1:], strict=False)
    )  # waited what Retry-After said
    assert {s["auth"] for s in server.seen} == {"Bearer k1"}
    assert server.seen[0]["body"]["dimensions"] == ["realism"] and server.seen[0]["body"]["feedback"] is True


@pytest.mark.parametrize("status", [400, 401, 404, 413, 422, 500])
def test_4xx_and_other_statuses_are_never_retried(status):
    with Scripted([(status, {})]) as server:
        with ScoringClient(server.url, policy=FAST) as client, pytest.raises(ScoringAPIError) as info:
            client.score(b"png")
    assert len(server.seen) == 1 and info.value.status == status and info.value.error_type == f"t{status}"
    assert f"scripted {status}" in str(info.value)


def test_connection_errors_are_retried_until_the_router_comes_up():
    port = free_port()
    server = Scripted([])
    server.port = port
    server.server.config.port = port

    def start_later():
        time.sleep(1.5)
        server.__enter__()

    threading.Thread(target=start_later, daemon=True).start()
    try:
        with ScoringClient(f"http://127.0.0.1:{port}", policy=FAST) as client:
            assert client.score(b"png") == OK and client.retries >= 1
    finally:
        server.__exit__()


def test_an_outage_longer_than_the_policy_allows_is_router_unavailable():
    policy = RetryPolicy(base_delay_s=0.05, max_delay_s=0.2, max_outage_s=1.0, request_timeout_s=5.0)
    with Scripted([(503, {"Retry-After": "1"})] * 50) as server:
        started = time.monotonic()
        with (
            ScoringClient(server.url, policy=policy) as client,
            pytest.raises(RouterUnavailableError, match="HTTP 503"),
        ):
            client.score(b"png")
        assert time.monotonic() - started < 5  # Retry-After is capped by max_delay_s; the outage bound holds
    with pytest.raises(RouterUnavailableError, match="ConnectError"):
        ScoringClient(f"http://127.0.0.1:{free_port()}", policy=policy).score(b"png")


def test_the_async_client_shares_the_policy_and_the_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("KIDSART_API_KEY", "from-env")

    async def run(url: str):
        async with AsyncScoringClient(url, policy=FAST) as client:
            return await asyncio.gather(*(client.score(b"png", request_id=str(i)) for i in range(3))), client.retries

    with Scripted([(503, {"Retry-After": "1"}), (422, {})]) as server:
        with pytest.raises(ScoringAPIError):  # one of the three hits the scripted 422 and is not retried
            asyncio.run(run(server.url))
    assert {s["auth"] for s in server.seen} == {"Bearer from-env"}
    with Scripted([(503, {"Retry-After": "1"})]) as server:
        answers, retries = asyncio.run(run(server.url))
    assert answers == [OK] * 3 and retries == 1


def test_models_listing_goes_through_the_same_client():
    with Scripted([]) as server, ScoringClient(server.url, policy=FAST) as client:
        assert client.models().data[0].id == "kidsartbench"


def test_what_a_router_serves_is_read_from_its_listing_or_refused_by_name():
    from serve.client import ScoringAPIError, ServedModels

    listing = {
        "object": "list",
        "data": [_card("creativity5"), _card("color", "color@raft-1"), _card("texture", "texture@raft-1")],
        "feedback_adapter": "feedback@sft-3",
        "limits": {"image_size": 112, "max_image_bytes": 4096, "max_image_pixels": 10_000},
    }
    served = ServedModels.from_listing(listing, "http://r")
    assert (served.rubric, served.dimensions, served.feedback_adapter) == (
        "creativity5",
        ["color", "texture"],
        "feedback@sft-3",
    )
    assert served.limits.image_size == 112 and served.limits.max_image_bytes == 4096
    for bad in (
        {},
        {"data": "x"},
        {"data": [_card("realism", "realism@1")], "limits": LIMITS},
        [],
        {"data": [_card("k")], "limits": {"image_size": 1}},
        {"data": [_card("kidsartbench")]},
    ):
        with pytest.raises(ScoringAPIError, match="http://r/v1/models"):
            ServedModels.from_listing(bad, "http://r")
    with Scripted([]) as server, ScoringClient(server.url, policy=FAST) as client:
        assert client.served().rubric == "kidsartbench"
