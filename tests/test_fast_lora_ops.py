"""The grouped CPU LoRA ops equal vLLM's own torch ops on random inputs.

vLLM's ops index the stacked weights with each token's adapter index, so an index
of -1 ("no LoRA") picks the last slot. The reference here therefore appends an
all-zero slot to the weights and maps -1 to it: that is the "no LoRA" meaning
the grouped ops implement (no contribution; zeros where the op overwrites).
"""

from __future__ import annotations

import zlib

import pytest

torch = pytest.importorskip("torch")
vllm_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops")

from serve.vllm_plugin import lora_ops as fast  # noqa: E402


def _segments(groups: list[tuple[int, int]]):
    """SGMV metadata as vLLM's compute_meta builds it: consecutive runs of equal index merged."""
    merged: list[list[int]] = []
    for index, length in groups:
        if merged and merged[-1][0] == index:
            merged[-1][1] += length
        else:
            merged.append([index, length])
    indices = torch.tensor([m[0] for m in merged], dtype=torch.long)
    lengths = torch.tensor([m[1] for m in merged], dtype=torch.long)
    starts = torch.zeros_like(lengths)
    starts[1:] = torch.cumsum(lengths, 0)[:-1]
    return starts, lengths, indices, len(merged), int(lengths.max()), int(lengths.sum())


def _reference_meta(meta, slots: int):
    """The same metadata with -1 mapped to an extra zero slot at index `slots`."""
    starts, lengths, indices, *rest = meta
    return (starts, lengths, torch.where(indices < 0, torch.full_like(indices, slots), indices), *rest)


def _with_zero_slot(weights):
    return torch.cat([weights, torch.zeros_like(weights[:1])], 0)


def _seed(*params) -> int:
    """A fixed integer per parameter set, the same in every process (a failure can be reproduced)."""
    return zlib.crc32(repr(params).encode("utf-8"))


GROUPINGS = {
    "one_adapter": [(0, 37)],
    "nine_adapters_contiguous": [(i, 5 + i) for i in range(9)],
    "interleaved_requests": [(i % 9, 7) for i in range(27)],
    "with_no_lora_tokens": [(-1, 4), (2, 6), (-1, 3), (5, 9), (2, 2), (-1, 1)],
    "only_no_lora_and_one": [(-1, 10), (3, 1)],
    "single_tokens": [(i % 4 - 1, 1) for i in range(17)],
}


@pytest.mark.parametrize("grouping", sorted(GROUPINGS))
@pytest.mark.parametrize("rank", [1, 8, 16])
@pytest.mark.parametrize("four_dim", [False, True])
def test_sgmv_shrink_matches_vllm(grouping, rank, four_dim):
    gen = torch.Generator().manual_seed(_seed(grouping, rank, four_dim))
    slots, hidden = 9, 48
    meta = _segments(GROUPINGS[grouping])
    tokens = meta[-1]
    x = torch.randn(tokens, hidden, generator=gen)
    a = torch.randn(slots, rank, hidden, generator=gen)
    if four_dim:
        a = a.unsqueeze(1)
    expected = torch.randn(tokens, rank + 3, generator=gen)
    got = expected.clone()
    vllm_ops.sgmv_shrink(x, _with_zero_slot(a), expected, *_reference_meta(meta, slots), 0.5)
    fast.sgmv_shrink(x, a, got, *meta, 0.5)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grouping", sorted(GROUPINGS))
@pytest.mark.parametrize("rank", [1, 8, 16])
@pytest.mark.parametrize("add_inputs", [False, True])
@pytest.mark.parametrize("pad_columns", [0, 5])
def test_sgmv_expand_matches_vllm(grouping, rank, add_inputs, pad_columns):
    gen = torch.Generator().manual_seed(_seed(grouping, rank, add_inputs, pad_columns))
    slots, out_features = 9, 40
    meta = _segments(GROUPINGS[grouping])
    tokens = meta[-1]
    x = torch.randn(tokens, rank, generator=gen)
    b = torch.randn(slots, 1, out_features + pad_columns, rank, generator=gen)
    expected = torch.randn(tokens, out_features, generator=gen)
    got = expected.clone()
    vllm_ops.sgmv_expand(x, _with_zero_slot(b), expected, *_reference_meta(meta, slots), add_inputs)
    fast.sgmv_expand(x, b, got, *meta, add_inputs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("grouping", sorted(GROUPINGS))
@pytest.mark.parametrize("rank", [1, 8])
@pytest.mark.parametrize("add_inputs", [False, True])
def test_sgmv_expand_slice_matches_vllm(grouping, rank, add_inputs):
    gen = torch.Generator().manual_seed(_seed(grouping, rank, add_inputs))
    slots, total, offset, size = 9, 96, 32, 24
    meta = _segments(GROUPINGS[grouping])
    tokens = meta[-1]
    x = torch.randn(tokens, rank, generator=gen)
    b = torch.randn(slots, 1, size, rank, generator=gen)
    expected = torch.randn(tokens, total, generator=gen)
    got = expected.clone()
    vllm_ops.sgmv_expand_slice(x, _with_zero_slot(b), expected, *_reference_meta(meta, slots), offset, size, add_inputs)
    fast.sgmv_expand_slice(x, b, got, *meta, offset, size, add_inputs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_bf16_inputs_into_float32_buffer():
    """CPU LoRA keeps a float32 intermediate buffer; inputs and weights may be bf16."""
    gen = torch.Generator().manual_seed(7)
    meta = _segments([(1, 5), (0, 3), (1, 4)])
    x = torch.randn(12, 32, generator=gen).to(torch.bfloat16)
    a = torch.randn(3, 1, 8, 32, generator=gen).to(torch.bfloat16)
    expected = torch.zeros(12, 8)
    got = torch.zeros(12, 8)
    vllm_ops.sgmv_shrink(x, a, expected, *meta, 2.0)
    fast.sgmv_shrink(x, a, got, *meta, 2.0)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_vllm_ops_apply_last_slot_to_no_lora_tokens():
    """Documents why -1 is mapped to a zero slot above: vLLM's ops use weights[-1]."""
    meta = _segments([(-1, 2), (0, 2)])
    x = torch.ones(4, 4)
    a = torch.stack([torch.zeros(2, 4), torch.ones(2, 4)])  # slot 0 zero, slot 1 (last) ones
    out = torch.zeros(4, 2)
    vllm_ops.sgmv_shrink(x, a, out, *meta, 1.0)
    assert out[:2].abs().sum() > 0  # vLLM: the base-model tokens got the last adapter
    fast_out = torch.full((4, 2), 9.0)
    fast.sgmv_shrink(x, a, fast_out, *meta, 1.0)
    assert fast_out.abs().sum() == 0  # grouped: no LoRA for -1, slot 0 is zero


def test_plugin_installs_only_when_asked(monkeypatch):
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    import serve.vllm_plugin as plugin

    originals = {name: getattr(punica_cpu, name) for name in ("sgmv_shrink", "sgmv_expand", "sgmv_expand_slice")}
    try:
        monkeypatch.delenv(plugin.ENV_FLAG, raising=False)
        plugin.register()
        assert punica_cpu.sgmv_shrink is originals["sgmv_shrink"]
        monkeypatch.setenv(plugin.ENV_FLAG, "1")
        plugin.register()
        assert punica_cpu.sgmv_shrink is fast.sgmv_shrink
        assert punica_cpu.sgmv_expand is fast.sgmv_expand
        assert punica_cpu.sgmv_expand_slice is fast.sgmv_expand_slice
        assert vllm_ops.sgmv_shrink is fast.sgmv_shrink
    finally:
        for name, fn in originals.items():
            setattr(punica_cpu, name, fn)
            setattr(vllm_ops, name, fn)
        import vllm.lora.ops.torch_ops as torch_ops

        for name, fn in originals.items():
            setattr(torch_ops, name, fn)


def test_plugin_is_registered_as_vllm_general_plugin():
    from importlib.metadata import entry_points

    values = {ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert "serve.vllm_plugin:register" in values


def test_image_path_counters_count_per_process_and_sum(monkeypatch, tmp_path):
    """mm_stats (KIDSART_MM_STATS): a wrapped method records its images in <folder>/<pid>.txt, read_counts sums them."""
    import asyncio

    from serve.vllm_plugin import mm_stats

    class Encoder:
        def encode(self, images):
            return list(images)

        async def decode(self, url):
            return url.upper()

    count = mm_stats._images_encoded
    assert mm_stats._wrap(Encoder, "encode", "encode", count)
    wrapped = Encoder.encode
    assert mm_stats._wrap(Encoder, "encode", "encode", count) and Encoder.encode is wrapped  # never wrapped twice
    assert mm_stats._wrap(Encoder, "decode", "decode", lambda a, k, r: 1)
    assert not mm_stats._wrap(Encoder, "missing", "decode", count)
    monkeypatch.delenv(mm_stats.ENV_DIR, raising=False)
    assert Encoder().encode([1, 2]) == [1, 2]  # no folder: the result only, nothing recorded
    monkeypatch.setenv(mm_stats.ENV_DIR, str(tmp_path))
    assert Encoder().encode([1, 2, 3]) == [1, 2, 3] and asyncio.run(Encoder().decode("a")) == "A"
    Encoder().encode([4])
    (tmp_path / "0.txt").write_text("preprocess 2\nencode 1\n")  # another process of the same engine
    assert mm_stats.read_counts(tmp_path) == {"decode": 1, "preprocess": 2, "encode": 5}
    assert mm_stats._images_in_hf_call((), {}, {"image_grid_thw": [[1, 16, 16], [1, 16, 16]]}) == 2
    assert mm_stats._images_in_hf_call((), {}, None) == 0
