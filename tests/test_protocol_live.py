"""The protocol (serve/protocol.py) against the live router: /openapi.json publishes it and every live answer is it."""

import base64

import httpx
import pytest

from serve.protocol import ChatCompletion, ErrorBody, ModelListing, ScoreAnswer
from tests.conftest import AUTH, drawing, png_bytes

pytestmark = pytest.mark.integration


def test_openapi_publishes_the_protocol_and_live_answers_follow_it(live_stack):
    url = live_stack.url
    spec = httpx.get(f"{url}/openapi.json", timeout=30).json()
    score = spec["paths"]["/v1/score"]["post"]
    assert score["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ScoreAnswer")
    assert score["responses"]["413"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert score["requestBody"]["content"]["application/json"]["schema"]["title"] == "ScoreRequest"
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    assert chat["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletion")
    assert {"ScoreAnswer", "DimensionScore", "ModelListing", "ErrorBody", "ChatCompletion"} <= set(
        spec["components"]["schemas"]
    )

    image = base64.b64encode(png_bytes(drawing(5301))).decode()
    answer = ScoreAnswer.model_validate(
        httpx.post(f"{url}/v1/score", json={"image": image, "id": "p1"}, headers=AUTH, timeout=120).json()
    )
    assert answer.id == "p1" and len(answer.scores) == 9 and answer.total is None  # kidsartbench has no points
    listing = ModelListing.model_validate(httpx.get(f"{url}/v1/models", headers=AUTH, timeout=30).json())
    assert listing.data[0].id == answer.rubric and listing.limits.image_size == 224
    refused = httpx.post(f"{url}/v1/score", json={"image": image, "dimensions": ["nope"]}, headers=AUTH, timeout=30)
    error = ErrorBody.model_validate(refused.json())
    assert refused.status_code == error.error.code == 422 and "nope" in error.error.message
    data_url = f"data:image/png;base64,{image}"
    completion = ChatCompletion.model_validate(
        httpx.post(
            f"{url}/v1/chat/completions",
            json={
                "model": "realism",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}}]}],
            },
            headers=AUTH,
            timeout=120,
        ).json()
    )
    assert list(completion.answer().scores) == ["realism"]
    assert completion.answer().scores["realism"].score == pytest.approx(answer.scores["realism"].score, abs=1e-3)
