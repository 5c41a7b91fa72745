"""EngineScorer against a fake engine (a local aiohttp server): request shape, RAIL, engine failures."""
import asyncio
import json
import math
import socket

import pytest
from aiohttp import web

from adapters.errors import UnknownDimensionError
from adapters.limits import InputLimits
from adapters.profiles import RouterSettings
from adapters.prompts import load_prompt_format
from serve.errors import EngineResponseError, EngineUnavailableError
from serve.scoring import EngineScorer, RouterRuntime

DIMS = ["realism", "line_texture"]


def _runtime(**overrides):
    values = dict(
        engine_url="http://engine", rubric="kidsartbench", adapters={d: f"{d}@t" for d in DIMS},
        engine_modules={**{d: f"{d}@0123456789ab" for d in DIMS}, "feedback": "feedback@ba9876543210"},
        score_token_ids=[11, 12, 13, 14, 15], limits=InputLimits(image_size=224, max_image_bytes=1024, max_image_pixels=1000),
        settings=RouterSettings(max_inflight_images=2, max_queued_images=2, retry_after_s=1, engine_timeout_s=5,
                                engine_connections=4),
        base_model_id="base", prompt_format=load_prompt_format("kidsart"),
    )
    values.update(overrides)
    return RouterRuntime(**values)


def _run(handler, call, **runtime):
    """Serve `handler(body) -> (status, payload)` (or a coroutine of it) on a local port, run `call(scorer)` against it."""

    async def endpoint(request: web.Request) -> web.Response:
        result = handler(json.loads(await request.read()))
        status, payload = await result if asyncio.iscoroutine(result) else result
        if isinstance(payload, str):
            return web.Response(status=status, text=payload)
        return web.json_response(payload, status=status)

    async def main():
        app = web.Application()
        app.router.add_post("/v1/chat/completions", endpoint)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        scorer = EngineScorer(_runtime(engine_url=f"http://127.0.0.1:{port}", **runtime))
        try:
            return await call(scorer)
        finally:
            await scorer.aclose()
            await runner.cleanup()

    return asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _completion(logprobs: dict):
    top = [{"token": t, "logprob": lp} for t, lp in logprobs.items()]
    return {"choices": [{"logprobs": {"content": [{"token": "3", "logprob": -1, "top_logprobs": top}]}}],
            "usage": {"prompt_tokens": 100}}


def test_requests_carry_adapter_tokens_and_image_and_scores_follow_rail():
    seen = []

    def handler(body):
        seen.append(body)
        probs = {"realism": [0.1, 0.2, 0.4, 0.2, 0.1], "line_texture": [0, 0, 0, 0.5, 0.5]}[body["model"].removesuffix("@0123456789ab")]
        return 200, _completion({str(k + 1): math.log(p) for k, p in enumerate(probs) if p > 0})

    scores, tokens = _run(handler, lambda scorer: scorer.score("data:image/png;base64,AAAA"))
    assert scores["realism"]["score"] == pytest.approx(3.0) and scores["line_texture"]["score"] == pytest.approx(4.5)
    assert scores["line_texture"]["probs"] == pytest.approx([0, 0, 0, 0.5, 0.5])
    assert tokens == 200
    for body in seen:
        assert body["max_tokens"] == 1 and body["temperature"] == 0 and body["top_logprobs"] == 5
        assert body["allowed_token_ids"] == [11, 12, 13, 14, 15]
        assert body["messages"][1]["content"][-1]["image_url"]["url"] == "data:image/png;base64,AAAA"  # image last


def test_unreachable_engine_is_503_kind():
    scorer = EngineScorer(_runtime(engine_url=f"http://127.0.0.1:{_free_port()}"))  # nothing listens there

    async def call():
        try:
            return await scorer.score("data:x", ["realism"])
        finally:
            await scorer.aclose()

    with pytest.raises(EngineUnavailableError, match="unreachable"):
        asyncio.run(call())


def test_slow_engine_is_503_kind_after_the_timeout():
    async def handler(body):
        await asyncio.sleep(2.0)  # past the scorer's timeout
        return 200, _completion({"3": 0.0})

    async def call(scorer):
        settings = scorer.runtime.settings.model_copy(update={"engine_timeout_s": 0.1})
        scorer.runtime = scorer.runtime.model_copy(update={"settings": settings})
        return await scorer.score("data:x", ["realism"])

    with pytest.raises(EngineUnavailableError, match="did not answer within 0.1 s"):
        _run(handler, call)


def test_engine_error_answers_are_typed():
    def score_with(status, payload):
        return _run(lambda body: (status, payload), lambda scorer: scorer.score("data:x", ["realism"]))

    with pytest.raises(EngineUnavailableError, match="500"):
        score_with(500, "boom")
    with pytest.raises(EngineResponseError, match="rejected"):
        score_with(400, "bad")
    with pytest.raises(EngineResponseError, match="no score-token logprobs"):
        score_with(200, {"choices": []})
    with pytest.raises(EngineResponseError, match="not JSON"):
        score_with(200, "<html>")


def test_dimension_without_adapter_is_refused():
    with pytest.raises(UnknownDimensionError, match="no adapter is deployed"):
        EngineScorer(_runtime()).select(["imagination"])


def test_engine_requests_follow_the_deployments_prompt_format():
    seen = []

    def handler(body):
        seen.append(body)
        return 200, _completion({"3": 0.0})

    async def call(scorer):
        scorer.runtime = scorer.runtime.model_copy(update={"prompt_format": load_prompt_format("kidsartbench-release")})
        return await scorer.score("data:image/png;base64,AAAA", ["realism"])

    _run(handler, call)
    (body,) = seen
    assert [m["role"] for m in body["messages"]] == ["user"]  # no system message of ours
    content = body["messages"][0]["content"]
    assert content[0]["image_url"]["url"] == "data:image/png;base64,AAAA"
    assert content[1]["text"].startswith("<image>Assess the student's artwork based on the 'realism' criterion")


def test_feedback_request_carries_the_scores_and_is_bounded_by_the_settings():
    from adapters.feedback import FeedbackSettings

    seen = []

    def handler(body):
        seen.append(body)
        return 200, {"choices": [{"message": {"role": "assistant", "content": "  Realism is a real strength here. "}}]}

    scores = {"realism": {"score": 4.26}, "line_texture": {"score": 1.5}}
    settings = FeedbackSettings(max_tokens=40, temperature=0.0, timeout_s=5)
    result = _run(handler, lambda scorer: scorer.feedback("data:image/png;base64,AAAA", scores, "a cat"),
                  feedback_adapter="feedback@sft-1", feedback=settings)
    assert result == {"text": "Realism is a real strength here.", "adapter": "feedback@sft-1"}
    body = seen[0]
    assert body["model"] == "feedback@ba9876543210" and body["max_tokens"] == 40 and body["temperature"] == 0.0
    content = body["messages"][1]["content"]
    assert "realism 4.3, line texture 1.5" in content[0]["text"]
    assert content[1]["image_url"]["url"] == "data:image/png;base64,AAAA"
    assert content[2]["text"].endswith("a cat")


def test_feedback_without_a_feedback_adapter_is_a_422_naming_it():
    from adapters.errors import FeedbackNotDeployedError
    from serve.errors import status_for

    scorer = EngineScorer(_runtime(deployment_name="creativity-tiny"))
    with pytest.raises(FeedbackNotDeployedError, match="'creativity-tiny' has no feedback adapter.*feedback@<hash> LoRA") as info:
        scorer.check_feedback()
    assert status_for(info.value) == 422


def test_readiness_takes_the_supervisors_word_before_probing_the_engine(tmp_path):
    from serve.supervisor import write_status

    status = tmp_path / "engine-status.json"
    write_status(status, "failed", "gave up after 2 restart attempt(s)", 2)
    # nothing listens on the engine's port: a probe would fail with "unreachable", not with the reason
    scorer = EngineScorer(_runtime(engine_url=f"http://127.0.0.1:{_free_port()}", engine_status_path=str(status)))

    async def call():
        try:
            return await scorer.ready()
        finally:
            await scorer.aclose()

    assert asyncio.run(call()) == (False, "engine failed: gave up after 2 restart attempt(s)")
    write_status(status, "running", "restarted")
    ready, reason = asyncio.run(call())
    assert not ready and reason.startswith("engine unreachable")


def test_pooled_engine_connections_close_before_the_engine_closes_them(tiny_profile, monkeypatch):
    """The router drops an idle engine connection before vLLM's server would (its default and the value our
    engine gets), so a request is never written to a connection being closed (a 503 seen once in CI)."""
    import vllm.envs

    from serve.engine import engine_env
    from serve.scoring import ENGINE_CONNECTION_IDLE_S

    monkeypatch.delenv("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", raising=False)
    vllm_default = vllm.envs.environment_variables["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"]()
    ours = int(engine_env(tiny_profile)["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"])
    assert ENGINE_CONNECTION_IDLE_S < vllm_default <= ours

    scorer = EngineScorer(_runtime())

    async def connector_idle_s():
        try:
            return scorer._client().connector._keepalive_timeout
        finally:
            await scorer.aclose()

    assert asyncio.run(connector_idle_s()) == ENGINE_CONNECTION_IDLE_S
