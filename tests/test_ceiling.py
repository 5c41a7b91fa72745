"""The benchmark's FLOP counts (loadtest.ceiling) against torch's FlopCounterMode on the tiny base.

FlopCounterMode counts every matmul, convolution and attention kernel that runs.
Attention there is counted in full (s x s), while the floor counts causal
attention (token p attends p + 1 positions), so the text check converts one into
the other; everything else must agree to within 1%.
"""

from __future__ import annotations

import json

import pytest

from loadtest.ceiling import floor_gflop_per_image, prefill_flops, shapes_from_config, vision_flops


@pytest.fixture(scope="module")
def tiny_model(tiny_profile):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    path = tiny_profile.base.resolved_path
    # Eager attention: its matmuls are what FlopCounterMode sees (the CPU SDPA kernel is not counted).
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    config = json.loads((path / "config.json").read_text())
    return model, config


def _counted(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_vision_pass_matches_flop_counter(tiny_model, tiny_profile):
    import torch

    model, config = tiny_model
    _, vision = shapes_from_config(config)
    side = tiny_profile.image_size
    grid = side // vision.patch
    patch_values = vision.in_channels * vision.temporal_patch * vision.patch * vision.patch
    pixels = torch.randn(grid * grid, patch_values, generator=torch.Generator().manual_seed(0))
    grid_thw = torch.tensor([[1, grid, grid]])
    with torch.no_grad():
        counted = _counted(lambda: model.model.visual(pixels, grid_thw=grid_thw))
    assert vision_flops(vision, side) == pytest.approx(counted, rel=0.01)


def test_text_prefill_matches_flop_counter(tiny_model):
    import torch

    model, config = tiny_model
    text, _ = shapes_from_config(config)
    tokens = 70
    embeds = torch.randn(1, tokens, text.hidden, generator=torch.Generator().manual_seed(1))

    def forward():
        hidden = model.model.language_model(inputs_embeds=embeds, use_cache=False).last_hidden_state
        model.lm_head(hidden[:, -1:])

    with torch.no_grad():
        counted = _counted(forward)
    causal = 4.0 * sum(range(1, tokens + 1)) * text.hidden * text.layers
    full = 4.0 * tokens * tokens * text.hidden * text.layers
    assert prefill_flops(text, tokens, 0) - causal + full == pytest.approx(counted, rel=0.01)


def test_cached_context_only_adds_attention():
    text, _ = shapes_from_config(
        json.loads(
            json.dumps(
                {
                    "text_config": {
                        "hidden_size": 64,
                        "num_hidden_layers": 2,
                        "num_attention_heads": 4,
                        "num_key_value_heads": 1,
                        "intermediate_size": 128,
                        "vocab_size": 100,
                    },
                    "vision_config": {
                        "hidden_size": 32,
                        "depth": 1,
                        "intermediate_size": 64,
                        "patch_size": 14,
                        "window_size": 112,
                        "out_hidden_size": 64,
                    },
                }
            )
        )
    )
    cold, warm = prefill_flops(text, 10, 0), prefill_flops(text, 10, 100)
    assert warm - cold == pytest.approx(4.0 * 100 * 10 * 64 * 2)
    assert prefill_flops(text, 10, 0, lora_rank=8) > cold


def test_floor_adds_one_vision_pass_and_each_request(tiny_model, tiny_profile):
    _, config = tiny_model
    text, vision = shapes_from_config(config)
    requests = [(128, 70), (160, 75)]
    expected = vision_flops(vision, tiny_profile.image_size) + sum(prefill_flops(text, n, c) for c, n in requests)
    assert floor_gflop_per_image(config, tiny_profile.image_size, requests) == pytest.approx(expected / 1e9)
