"""Integration: the benchmark on the tiny profile, real vLLM engine and reference backend.

Runs the reference and offline-engine phases (grouped LoRA ops on, KIDSART_FAST_LORA_OPS=1,
and vLLM's own ops) on the same images, one round (interleaving: test_bench_unit): RAIL scores agree
within 1e-3 on every image x dimension and run, each image is preprocessed and
encoded once, the engine saw exactly the reference's prompt tokens, and its
counters show the fixed prefixes served from the prefix cache.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_bench_engine_matches_reference_and_reports_its_tokens(tiny_profile, monkeypatch, tmp_path):
    from loadtest.bench import run_bench

    monkeypatch.setenv("KIDSART_FAST_LORA_OPS", "1")
    images = 3
    summary = run_bench(
        profile="tiny",
        images=images,
        out=tmp_path / "bench.json",
        phases=("reference", "engine"),
        stock_ops=True,
        repeats=1,  # each round starts every engine again: one keeps make test within its budget
    )
    phases = summary["details"]["phases"]
    assert phases["engine"]["fast_lora_ops"] is True and phases["engine_stock"]["fast_lora_ops"] is False
    assert [len(runs) for runs in summary["runs_img_s"].values()] == [1, 1, 1, 1]
    parity = summary["max_abs_score_diff_vs_reference"]
    assert parity["engine"] < 1e-3 and parity["engine_stock"] < 1e-3, parity
    counts = summary["image_path_counts"]["engine"]
    assert counts["preprocess"] == images and counts["encode"] == images, counts
    tokens = summary["token_accounting"]["engine"]
    assert tokens["prompt_tokens_match_reference"] is True
    assert tokens["requests"] == tokens["requests_expected"] == images * 9
    assert summary["prefix_cache_hit_rate"] >= 0.8
    assert summary["prefilled_tokens_per_image"] <= summary["prefilled_tokens_target_per_image"]
    assert summary["gemm_gflops"] > 0 and 0 < summary["engine_ceiling_fraction"] < 1
    for run in summary["details"]["runs"]["engine"]:
        # The counters agree with what each RequestOutput says it took from the cache.
        assert run["cached_tokens_from_outputs"] == run["counters"]["prefix_cache_hits"]
