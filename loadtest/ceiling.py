"""The compute ceiling of a benchmark run: the machine's matmul rate and the floor's FLOPs per image.

`gemm_gflops()` measures this machine's float32 matrix-multiply throughput with one
large torch matmul (all torch threads), the best of a few timed repeats: a
practical ceiling for a dense model on this CPU.

`floor_gflop_per_image()` counts the useful work of scoring one image on every
dimension when the fixed prefix of each dimension is served from the prefix cache:
one vision-encoder pass, plus, for each dimension, a prefill of only the tokens
after its fixed prefix (linear layers, LoRA, causal attention over the whole
context) and the lm_head at the one position that is read. Norms, activations,
rotary embeddings and the embedding lookup are left out (they are not matmuls).
FLOPs are 2 per multiply-add. The counts follow the Qwen2.5-VL layers in
transformers (gated MLPs, windowed vision attention, 2x2 patch merger); the unit
test checks them against torch's FlopCounterMode on the tiny base.

achieved GFLOP/s = images/s x floor GFLOP per image; over `gemm_gflops` it is the
fraction of the ceiling a path reaches. Work a path does beyond the floor (the
reference re-encodes the image and re-prefills the rubric text for every
dimension) is not counted as useful.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class TextShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class VisionShape:
    hidden: int
    depth: int
    intermediate: int
    fullatt_blocks: tuple[int, ...]
    patch: int
    temporal_patch: int
    in_channels: int
    merge: int
    window: int
    out_hidden: int


def shapes_from_config(config: dict) -> tuple[TextShape, VisionShape]:
    """Text and vision shapes from a Qwen2.5-VL `config.json` (as a dict)."""
    text = config.get("text_config", config)
    vision = config["vision_config"]
    return (
        TextShape(
            hidden=text["hidden_size"],
            layers=text["num_hidden_layers"],
            heads=text["num_attention_heads"],
            kv_heads=text["num_key_value_heads"],
            intermediate=text["intermediate_size"],
            vocab=text["vocab_size"],
        ),
        VisionShape(
            hidden=vision["hidden_size"],
            depth=vision["depth"],
            intermediate=vision["intermediate_size"],
            fullatt_blocks=tuple(vision.get("fullatt_block_indexes", ())),
            patch=vision["patch_size"],
            temporal_patch=vision.get("temporal_patch_size", 2),
            in_channels=vision.get("in_channels", 3),
            merge=vision.get("spatial_merge_size", 2),
            window=vision["window_size"],
            out_hidden=vision["out_hidden_size"],
        ),
    )


def vision_flops(v: VisionShape, image_side: int) -> float:
    """One pass of the vision encoder over a square image of `image_side` pixels (already resized)."""
    grid = image_side // v.patch
    patches = grid * grid
    d = v.hidden
    flops = 2.0 * patches * (v.in_channels * v.temporal_patch * v.patch * v.patch) * d  # patch embedding
    # Windows are window/patch patches wide (whole merge units); the grid is cut into such squares.
    window_side = max(v.merge, (v.window // v.patch) // v.merge * v.merge)
    window_sizes = [min(window_side, grid - start) for start in range(0, grid, window_side)]
    windowed_pairs = sum(a * b * a * b for a in window_sizes for b in window_sizes)  # sum over windows of n^2
    for block in range(v.depth):
        flops += 2.0 * patches * (3 * d * d + d * d + 3 * d * v.intermediate)  # qkv, proj, gated MLP
        pairs = patches * patches if block in v.fullatt_blocks else windowed_pairs
        flops += 4.0 * pairs * d  # QK^T and AV over all heads
    merged = patches // (v.merge * v.merge)
    wide = d * v.merge * v.merge
    flops += 2.0 * merged * (wide * wide + wide * v.out_hidden)  # patch merger MLP
    return flops


def prefill_flops(t: TextShape, new_tokens: int, context_before: int, lora_rank: int = 0) -> float:
    """Prefill of `new_tokens` after `context_before` cached tokens, plus the lm_head at the last position."""
    h, kv = t.hidden, t.kv_heads * t.head_dim
    per_token = 2 * h * h + 2 * h * kv + 3 * h * t.intermediate  # q, o, k, v, gated MLP
    if lora_rank:
        # A rank-r adapter on q/k/v/o: x @ A (in x r) then @ B (r x out) per projection.
        per_token += lora_rank * ((h + h) + (h + kv) + (h + kv) + (h + h))
    flops = 2.0 * new_tokens * per_token * t.layers
    # Causal attention: the token at position p attends to p + 1 positions (QK^T and AV, all query heads).
    attended = sum(context_before + i + 1 for i in range(new_tokens))
    flops += 4.0 * attended * h * t.layers
    return flops + 2.0 * h * t.vocab


def floor_gflop_per_image(config: dict, image_side: int, requests: list[tuple[int, int]], lora_rank: int = 0) -> float:
    """The floor's work per image in GFLOP: one vision pass + one prefill per (fixed_prefix, after_prefix) request."""
    text, vision = shapes_from_config(config)
    total = vision_flops(vision, image_side)
    for fixed_prefix, after_prefix in requests:
        total += prefill_flops(text, after_prefix, fixed_prefix, lora_rank)
    return total / 1e9


def gemm_gflops(size: int = 2048, repeats: int = 5, threads: int | None = None) -> float:
    """This machine's float32 matmul throughput in GFLOP/s: best of `repeats` (size x size) @ (size x size)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator, dtype=torch.float32)
    b = torch.randn(size, size, generator=generator, dtype=torch.float32)
    torch.mm(a, b)  # warm-up: thread pool and kernel selection
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best / 1e9
