"""Parity: router (vLLM, nine LoRAs batched) vs reference backend (transformers + PEFT) on the same images."""

import base64

import httpx
import pytest

from tests.conftest import AUTH, drawing, png_bytes

pytestmark = pytest.mark.integration


def test_router_scores_equal_reference_scores_within_1e3(live_stack, tiny_profile):
    from serve.reference import ReferenceBackend

    reference = ReferenceBackend(tiny_profile)
    worst = 0.0
    for seed in (11, 12, 13, 14):
        data = png_bytes(drawing(seed, size=(300 + 37 * seed, 200 + 11 * seed)), "JPEG")
        routed = httpx.post(
            f"{live_stack.url}/v1/score", headers=AUTH, json={"image": base64.b64encode(data).decode()}, timeout=120
        )
        assert routed.status_code == 200
        expected = reference.score_bytes(data)
        for dim, entry in expected.items():
            got = routed.json()["scores"][dim]
            worst = max(worst, abs(got["score"] - entry["score"]))
            assert got["score"] == pytest.approx(entry["score"], abs=1e-3), dim
            assert got["probs"] == pytest.approx(entry["probs"], abs=1e-3)
            assert got["adapter"] == entry["adapter"]
    print(f"worst router-vs-reference score difference: {worst:.2e}")
