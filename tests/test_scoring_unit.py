"""EngineScorer against a fake engine (httpx.MockTransport): request shape, RAIL, engine failures."""
import asyncio
import json
import math

import httpx
import pytest

from adapters.errors import UnknownDimensionError
from serve.errors import EngineResponseError, EngineUnavailableError
from serve.scoring import EngineScorer, RouterRuntime

DIMS = ["realism", "line_texture"]


def _runtime(**overrides):
    values = dict(
        engine_url="http://engine", rubric="kidsartbench", adapters={d: f"{d}@t" for d in DIMS},
        score_token_ids=[11, 12, 13, 14, 15], image_size=224, max_image_bytes=1000, max_image_pixels=1000,
        max_inflight_images=2, max_queued_images=2, retry_after_s=1, engine_timeout_s=5, engine_connections=4,
        base_model_id="base",
    )
    values.update(overrides)
    return RouterRuntime(**values)


def _scorer(handler):
    scorer = EngineScorer(_runtime())
    scorer.client = httpx.AsyncClient(base_url="http://engine", transport=httpx.MockTransport(handler))
    return scorer


def _completion(logprobs: dict):
    top = [{"token": t, "logprob": lp} for t, lp in logprobs.items()]
    return {"choices": [{"logprobs": {"content": [{"token": "3", "logprob": -1, "top_logprobs": top}]}}],
            "usage": {"prompt_tokens": 100}}


def test_requests_carry_adapter_tokens_and_image_and_scores_follow_rail():
    seen = []

    def handler(request: httpx.Request):
        body = json.loads(request.content)
        seen.append(body)
        probs = {"realism": [0.1, 0.2, 0.4, 0.2, 0.1], "line_texture": [0, 0, 0, 0.5, 0.5]}[body["model"]]
        return httpx.Response(200, json=_completion({str(k + 1): math.log(p) for k, p in enumerate(probs) if p > 0}))

    scores, tokens = asyncio.run(_scorer(handler).score("data:image/png;base64,AAAA"))
    assert scores["realism"]["score"] == pytest.approx(3.0) and scores["line_texture"]["score"] == pytest.approx(4.5)
    assert scores["line_texture"]["probs"] == pytest.approx([0, 0, 0, 0.5, 0.5])
    assert tokens == 200
    for body in seen:
        assert body["max_tokens"] == 1 and body["temperature"] == 0 and body["top_logprobs"] == 5
        assert body["allowed_token_ids"] == [11, 12, 13, 14, 15]
        assert body["messages"][1]["content"][-1]["image_url"]["url"] == "data:image/png;base64,AAAA"  # image last


def test_unreachable_engine_is_503_kind():
    def handler(request):
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(EngineUnavailableError, match="unreachable"):
        asyncio.run(_scorer(handler).score("data:x", ["realism"]))


def test_engine_error_answers_are_typed():
    with pytest.raises(EngineUnavailableError, match="500"):
        asyncio.run(_scorer(lambda r: httpx.Response(500, text="boom")).score("data:x", ["realism"]))
    with pytest.raises(EngineResponseError, match="rejected"):
        asyncio.run(_scorer(lambda r: httpx.Response(400, text="bad")).score("data:x", ["realism"]))
    with pytest.raises(EngineResponseError, match="no score-token logprobs"):
        asyncio.run(_scorer(lambda r: httpx.Response(200, json={"choices": []})).score("data:x", ["realism"]))


def test_dimension_without_adapter_is_refused():
    with pytest.raises(UnknownDimensionError, match="no adapter is deployed"):
        _scorer(lambda r: httpx.Response(200)).select(["imagination"])
