"""The benchmark's and load test's bookkeeping (no engine started)."""
from __future__ import annotations

import json

from loadtest.bench import format_summary, percentile, summarise, synthetic_artwork
from loadtest.run_locust import _run_seconds, read_stats


def test_synthetic_artworks_are_deterministic_and_sized():
    import io

    from PIL import Image

    a, b = synthetic_artwork(5, (400, 300)), synthetic_artwork(5, (400, 300))
    assert a == b
    assert Image.open(io.BytesIO(a)).size == (400, 300)
    assert synthetic_artwork(6, (400, 300)) != a


def test_percentile():
    assert percentile([3, 1, 2], 0.5) == 2
    assert abs(percentile([1, 2, 3, 4], 0.95) - 3.85) < 1e-9


def test_summary_keys_and_ratios():
    scores = {"a.png": {"realism": 3.0}}
    results = {
        "reference": {"img_s": 1.0, "seconds": 4, "latencies_s": [1, 1], "scores": scores},
        "engine": {
            "engine": {"img_s": 4.0, "seconds": 1, "scores": {"a.png": {"realism": 3.0004}}, "image_path": {"decode": 0, "preprocess": 1, "encode": 1}},
            "engine_base": {"img_s": 5.0, "seconds": 1, "scores": scores, "image_path": None},
            "fast_lora_ops": True,
        },
        "router": {"router": {"sweep": [], "final": {"img_s": 3.6, "p50_ms": 900.0, "p95_ms": 1500.0, "concurrency": 8,
                                                     "failed": 0, "scores": scores, "image_path": None}}},
    }
    summary = summarise(results)
    assert list(summary)[:9] == [
        "reference_img_s", "engine_img_s", "engine_base_img_s", "router_img_s", "router_vs_reference",
        "router_vs_engine", "lora_overhead", "p50_ms", "p95_ms",
    ]
    assert summary["router_vs_reference"] == 3.6
    assert summary["router_vs_engine"] == 0.9
    assert summary["lora_overhead"] == 1.25
    assert abs(summary["max_abs_score_diff_vs_reference"]["engine"] - 4e-4) < 1e-9
    summary["conditions"] = {}
    assert "router_img_s" in format_summary(summary)
    json.dumps(summary)


def test_missing_phases_give_none():
    summary = summarise({})
    assert summary["router_vs_engine"] is None and summary["reference_img_s"] is None


def test_read_locust_stats(tmp_path):
    header = "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
    rows = [
        "POST,/v1/score,60,0,900,950,500,2000,800,1.0,0,900,1000,1100,1200,1400,1600,1800,1900,2000,2000,2000",
        "POST,/v1/chat/completions [rubric],20,1,900,950,500,2000,800,0.3,0,900,1000,1100,1200,1400,1600,1800,1900,2000,2000,2000",
        "POST,/v1/chat/completions [dimension],18,0,300,300,100,600,200,0.3,0,300,300,300,300,300,500,600,600,600,600,600",
        "SHED,/v1/score 429,40,0,5,5,1,20,100,0.7,0,5,5,5,5,5,10,20,20,20,20,20",
        ",Aggregated,138,1,800,800,1,2000,600,2.3,0,800,900,1000,1100,1300,1500,1800,1900,2000,2000,2000",
    ]
    (tmp_path / "locust_stats.csv").write_text(header + "\n".join(rows) + "\n")
    stats = read_stats(tmp_path / "locust")
    assert stats["requests"] == 98 and stats["failures"] == 1 and stats["shed"] == 40
    assert stats["ok_full_images"] == 79 - 40 and stats["ok_single_dimension"] == 18
    assert stats["p95_ms"] == 1500 and stats["p99_ms"] == 1900
    assert _run_seconds("1m30s") == 90 and _run_seconds("45s") == 45
