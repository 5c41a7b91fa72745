"""Integration: the grouped LoRA ops inside the real vLLM engine give the reference backend's scores.

Runs the benchmark's reference and offline-engine phases on the tiny profile with
the plugin switched on (KIDSART_FAST_LORA_OPS=1), plus the engine with vLLM's own
ops, on the same images: RAIL scores agree within 1e-3 on every image x dimension,
and each image is preprocessed and encoded once, not once per dimension.
"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_fast_lora_ops_match_reference_and_stock_ops(tiny_profile, monkeypatch, tmp_path):
    from loadtest.bench import run_bench

    monkeypatch.setenv("KIDSART_FAST_LORA_OPS", "1")
    images = 3
    summary = run_bench(profile="tiny", images=images, out=tmp_path / "bench.json",
                        phases=("reference", "engine"), stock_ops=True)
    details = summary["details"]
    assert details["engine"]["fast_lora_ops"] is True
    assert details["engine_stock"]["fast_lora_ops"] is False
    parity = summary["max_abs_score_diff_vs_reference"]
    assert parity["engine"] < 1e-3, parity
    assert parity["engine_stock_ops"] < 1e-3, parity
    counts = summary["image_path_counts"]["engine"]
    assert counts["preprocess"] == images and counts["encode"] == images, counts
