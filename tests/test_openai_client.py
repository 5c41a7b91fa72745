"""The official `openai` Python client, unchanged, against the router."""

import base64
import json

import openai
import pytest

from tests.conftest import AUTH, LIVE_API_KEY, drawing, png_bytes

pytestmark = pytest.mark.integration


def _client(stack):
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=LIVE_API_KEY, max_retries=0, timeout=120)


def _message(data: bytes, text="Score this artwork."):
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    return [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]}
    ]


def test_models_list(live_stack):
    ids = [m.id for m in _client(live_stack).models.list().data]
    assert ids[0] == "kidsartbench" and "line_texture" in ids and len(ids) == 10


def test_chat_with_the_rubric_model_returns_all_scores(live_stack):
    completion = _client(live_stack).chat.completions.create(
        model="kidsartbench", messages=_message(png_bytes(drawing(7)))
    )
    result = json.loads(completion.choices[0].message.content)
    assert result["rubric"] == "kidsartbench" and len(result["scores"]) == 9
    for entry in result["scores"].values():
        assert 1 <= entry["score"] <= 5 and sum(entry["probs"]) == pytest.approx(1.0, abs=1e-6)
    assert completion.usage.prompt_tokens > 9 * 64


def test_chat_with_a_dimension_model_and_matches_score_route(live_stack):
    import httpx

    data = png_bytes(drawing(8))
    completion = _client(live_stack).chat.completions.create(model="color_contrast", messages=_message(data))
    result = json.loads(completion.choices[0].message.content)
    assert list(result["scores"]) == ["color_contrast"]
    direct = httpx.post(
        f"{live_stack.url}/v1/score", headers=AUTH, json={"image": base64.b64encode(data).decode()}, timeout=120
    ).json()
    assert result["scores"]["color_contrast"]["score"] == pytest.approx(
        direct["scores"]["color_contrast"]["score"], abs=1e-4
    )


def test_client_errors_are_typed(live_stack):
    client = _client(live_stack)
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-4o", messages=_message(png_bytes(drawing(9))))
    with pytest.raises(openai.UnprocessableEntityError, match="exactly one image_url"):
        client.chat.completions.create(model="kidsartbench", messages=[{"role": "user", "content": "hello"}])
    with pytest.raises(openai.BadRequestError, match="not a recognised image"):
        client.chat.completions.create(model="kidsartbench", messages=_message(b"not an image"))
