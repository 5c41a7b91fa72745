"""Integration: in steady state each dimension's fixed prefix comes from vLLM's prefix cache.

Through the real stack (engine replica + Ray Serve router, tiny model): after one
image has been scored, a new image's nine requests hit the cache for exactly the
whole KV blocks of each dimension's fixed prefix (the prompt before the image, sent
as token ids), and prefill only the rest, read from vLLM's own Prometheus counters
in the engine replica (through its Ray handle; this test process is the stack's driver).
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.conftest import AUTH, drawing, png_bytes

pytestmark = pytest.mark.integration


def _counters() -> dict:
    from loadtest.bench_router import EngineProbe

    return EngineProbe().counters()


def _score(url: str, seed: int) -> None:
    body = {"image": base64.b64encode(png_bytes(drawing(seed, (300, 220)))).decode("ascii")}
    response = httpx.post(f"{url}/v1/score", headers=AUTH, json=body, timeout=120)
    assert response.status_code == 200, response.text


def test_fixed_prefix_is_served_from_the_cache(live_stack, tiny_profile):
    from adapters.manifest import load_profile_deployment
    from loadtest.bench import _prompt_layout
    from loadtest.token_accounting import counter_delta, token_figures

    layout = _prompt_layout(tiny_profile, load_profile_deployment(tiny_profile))
    block = tiny_profile.engine.block_size
    assert block == 32
    _score(live_stack.url, seed=91_001)  # the first image of each adapter fills the cache
    before = _counters()
    _score(live_stack.url, seed=91_002)  # an image no other test scores
    delta = counter_delta(before, _counters())
    figures = token_figures(delta, layout, images=1, block_size=block)
    assert delta["requests"] == len(layout.prompt)
    assert figures["prompt_tokens_match_reference"], (delta, layout)
    assert delta["prefix_cache_hits"] == layout.cacheable_prefix_tokens_per_image(block)
    assert delta["prefilled_tokens"] == layout.prompt_tokens_per_image - delta["prefix_cache_hits"]
    assert figures["prefix_cache_hit_rate"] >= 0.8, json.dumps(figures)
    assert figures["prefilled_tokens_per_image"] <= len(layout.prompt) * (layout.image_tokens + 40)
