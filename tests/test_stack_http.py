"""The real stack over HTTP: vLLM engine (tiny model, nine LoRAs) + Ray Serve router."""

import base64
import io

import httpx
import pytest
from PIL import Image

from adapters.rubric import load_rubric
from tests.conftest import AUTH, drawing, png_bytes

pytestmark = pytest.mark.integration

DIMENSIONS = load_rubric("kidsartbench").dimension_names  # the nine, in the rubric's order


def _check_scores(scores, dims=DIMENSIONS):
    assert list(scores) == dims
    for dim, entry in scores.items():
        assert 1.0 <= entry["score"] <= 5.0
        assert len(entry["probs"]) == 5 and sum(entry["probs"]) == pytest.approx(1.0, abs=1e-6)
        expected = sum((k + 1) * p for k, p in enumerate(entry["probs"]))
        assert entry["score"] == pytest.approx(expected, abs=1e-9)
        variance = sum(p * ((k + 1) - entry["score"]) ** 2 for k, p in enumerate(entry["probs"]))
        assert entry["std"] == pytest.approx(variance**0.5, abs=1e-9)
        assert entry["adapter"].startswith(dim + "@")


def test_health_ready_and_models(live_stack):
    assert httpx.get(f"{live_stack.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{live_stack.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    ids = [m["id"] for m in httpx.get(f"{live_stack.url}/v1/models", headers=AUTH).json()["data"]]
    assert ids == ["kidsartbench", *DIMENSIONS]


def test_score_json_and_multipart_agree(live_stack):
    data = png_bytes(drawing(1))
    as_json = httpx.post(
        f"{live_stack.url}/v1/score",
        headers=AUTH,
        json={"image": base64.b64encode(data).decode(), "id": "art-1"},
        timeout=120,
    )
    assert as_json.status_code == 200, as_json.text
    body = as_json.json()
    assert body["id"] == "art-1" and body["rubric"] == "kidsartbench"
    _check_scores(body["scores"])
    as_upload = httpx.post(
        f"{live_stack.url}/v1/score", headers=AUTH, files={"image": ("a.png", data, "image/png")}, timeout=120
    )
    assert as_upload.status_code == 200
    for dim in DIMENSIONS:
        assert as_upload.json()["scores"][dim]["score"] == pytest.approx(body["scores"][dim]["score"], abs=1e-4)


def test_dimensions_differ_and_subset_is_honoured(live_stack):
    data = png_bytes(drawing(2))
    url = "data:image/jpeg;base64," + base64.b64encode(png_bytes(drawing(2).convert("RGB"), "JPEG")).decode()
    full = httpx.post(f"{live_stack.url}/v1/score", headers=AUTH, json={"image": url}, timeout=120).json()["scores"]
    assert len({round(v["score"], 6) for v in full.values()}) > 1, "every dimension scored the same"
    subset = httpx.post(
        f"{live_stack.url}/v1/score",
        headers=AUTH,
        json={"image": base64.b64encode(data).decode(), "dimensions": ["line_texture", "realism"]},
        timeout=120,
    ).json()
    _check_scores(subset["scores"], ["line_texture", "realism"])


def _big_pixel_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (9000, 5000)).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_REQUESTS = [
    ("empty body", dict(content=b"", headers={"content-type": "application/json"}), 400, "empty"),
    (
        "malformed json",
        dict(content=b'{"image": ', headers={"content-type": "application/json"}),
        400,
        "not valid JSON",
    ),
    ("bad base64", dict(json={"image": "%%%not-base64%%%"}), 400, "base64"),
    (
        "not an image",
        dict(json={"image": base64.b64encode(b"plain text, not a picture").decode()}),
        400,
        "not a recognised image",
    ),
    (
        "truncated",
        dict(json={"image": base64.b64encode(png_bytes(drawing(3))[:400]).decode()}),
        400,
        "could not be decoded",
    ),
    (
        "unknown dimension",
        dict(json={"image": base64.b64encode(png_bytes(drawing(3))).decode(), "dimensions": ["sparkle"]}),
        422,
        "sparkle",
    ),
    ("missing image field", dict(json={"id": "x"}), 422, "image"),
    ("unexpected field", dict(json={"image": "AAAA", "colour": 1}), 422, "colour"),
    ("multipart without image", dict(files={"picture": ("a.png", b"x")}), 422, "'image'"),
    ("too many bytes", dict(files={"image": ("big.png", b"\0" * (21 * 1024 * 1024))}), 413, "bytes"),
    ("too many pixels", dict(files={"image": ("huge.png", _big_pixel_png())}), 413, "pixels"),
]


@pytest.mark.parametrize("name, kwargs, status, fragment", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_a_clear_4xx_and_the_router_keeps_serving(live_stack, name, kwargs, status, fragment):
    kwargs = {**kwargs, "headers": {**AUTH, **kwargs.get("headers", {})}}
    response = httpx.post(f"{live_stack.url}/v1/score", timeout=120, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error["message"] and error["code"] == status
    assert "scores" not in response.json()
    ok = httpx.post(
        f"{live_stack.url}/v1/score",
        headers=AUTH,
        json={"image": base64.b64encode(png_bytes(drawing(4))).decode(), "dimensions": ["realism"]},
        timeout=120,
    )
    assert ok.status_code == 200


def test_metrics_count_requests_errors_and_scores(live_stack):
    httpx.post(f"{live_stack.url}/v1/score", headers=AUTH, json={"image": "AAAA"}, timeout=60)
    httpx.post(
        f"{live_stack.url}/v1/score",
        headers=AUTH,
        json={"image": base64.b64encode(png_bytes(drawing(5))).decode()},
        timeout=120,
    )
    text = httpx.get(f"{live_stack.url}/metrics", headers=AUTH).text
    assert 'kidsart_requests_total{route="/v1/score",status="200"}' in text
    assert 'kidsart_errors_total{kind="invalid_image"}' in text
    assert 'kidsart_score_count{dimension="line_texture"}' in text
    assert "kidsart_request_latency_seconds_bucket" in text
