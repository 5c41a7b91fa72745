"""The benchmark's and load test's bookkeeping (no engine started)."""

from __future__ import annotations

import json

import pytest

from loadtest.bench_inputs import BenchInputError, copy_images_dir, synthetic_artwork
from loadtest.bench_report import HEADLINE, format_summary, summarise
from loadtest.bench_router import percentile
from loadtest.run_locust import images_per_second, read_stats
from loadtest.token_accounting import PromptLayout, counters_from_offline, counters_from_prometheus, token_figures


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


LAYOUT = PromptLayout(
    prompt={"realism": 100, "deformation": 110}, fixed_prefix={"realism": 70, "deformation": 75}, image_tokens=20
)
FLOOR = {"lora": 10.0, "base": 9.5}


def _counters(images: int, hits_per_image: float = 128) -> dict:
    return {
        "prompt_tokens": 210.0 * images,
        "prefix_cache_queries": 210.0 * images,
        "prefix_cache_hits": hits_per_image * images,
        "prefilled_tokens": (210 - hits_per_image) * images,
        "requests": 2.0 * images,
    }


def _run(img_s: float, scores: dict, round_index: int, **extra) -> dict:
    return {
        "img_s": img_s,
        "seconds": 1.0,
        "scores": scores,
        "round": round_index,
        "background_cpu_share": 0.01,
        **extra,
    }


def _runs() -> dict:
    truth = {"a.png": {"realism": 3.0, "deformation": 2.0}}
    off = {"a.png": {"realism": 3.0004, "deformation": 2.0}}
    base_scores = {"a.png": {"realism": 1.0, "deformation": 5.0}}
    return {
        "reference": [_run(v, truth, i) for i, v in enumerate([1.0, 0.8, 1.2])],
        "engine": [
            _run(v, off, i, counters=_counters(1), image_path={"decode": 0, "preprocess": 1, "encode": 1})
            for i, v in enumerate([4.0, 3.0, 5.0])
        ],
        "engine_base": [_run(v, base_scores, i, counters=_counters(1)) for i, v in enumerate([5.0, 4.4, 6.0])],
        "router": [
            _run(v, truth, i, p50_ms=900.0 + i, p95_ms=1500.0 + i, counters=_counters(1))
            for i, v in enumerate([3.6, 2.0, 9.0])
        ],
        "gemm": [100.0, 90.0, 110.0],
    }


def test_summary_keeps_the_headline_and_takes_medians():
    summary = summarise(_runs(), {"router": {"concurrency": 8}}, LAYOUT, FLOOR, block_size=32)
    assert list(summary)[:9] == list(HEADLINE)
    assert summary["reference_img_s"] == 1.0 and summary["engine_img_s"] == 4.0 and summary["router_img_s"] == 3.6
    assert summary["router_vs_reference"] == pytest.approx(3.6)
    assert summary["router_vs_engine"] == pytest.approx(0.9)
    assert summary["lora_overhead"] == pytest.approx(5.0 / 4.0)
    assert summary["p50_ms"] == 900.0  # from the median router run, not the fastest
    assert summary["ratios_by_round"]["router_vs_reference"] == pytest.approx([3.6, 2.5, 7.5])
    assert summary["gemm_gflops"] == 100.0
    assert summary["engine_ceiling_fraction"] == pytest.approx(4.0 * 10.0 / 100.0)
    assert summary["router_ceiling_fraction"] == pytest.approx(3.6 * 10.0 / 100.0)
    assert summary["router_concurrency"] == 8
    summary["conditions"] = {"repeats": 3}
    assert "router_img_s" in format_summary(summary)
    json.dumps(summary)


def test_parity_covers_every_run_but_not_the_base_model():
    parity = summarise(_runs(), {}, LAYOUT, FLOOR, block_size=32)["max_abs_score_diff_vs_reference"]
    assert parity["engine"] == pytest.approx(4e-4)
    assert parity["router"] == 0.0 and parity["reference_runs"] == 0.0
    assert "engine_base" not in parity
    summary = summarise(_runs(), {}, LAYOUT, FLOOR, block_size=32)
    assert summary["parity_tolerance"] == 1e-3 and summary["parity_ok"] is True
    runs = _runs()
    runs["router"][1]["scores"] = {"a.png": {"realism": 3.01, "deformation": 2.0}}
    assert summarise(runs, {}, LAYOUT, FLOOR, block_size=32)["parity_ok"] is False
    assert summarise(runs, {}, LAYOUT, FLOOR, block_size=32, dtype="bfloat16")["parity_ok"] is True


def test_token_figures_from_counter_deltas():
    figures = token_figures(_counters(4, hits_per_image=128), LAYOUT, images=4, block_size=32)
    assert figures["prompt_tokens_per_image"] == 210
    assert figures["prefilled_tokens_per_image"] == 82
    assert figures["prefix_cache_hit_rate"] == pytest.approx(128 / 145)
    assert figures["cacheable_prefix_tokens_per_image"] == 64 + 64
    assert figures["prompt_tokens_match_reference"] is True
    assert token_figures(dict(_counters(4), prompt_tokens=1.0), LAYOUT, 4, 32)["prompt_tokens_match_reference"] is False
    assert LAYOUT.requests() == [(70, 30), (75, 35)]


def test_summary_tokens_come_from_the_engine_counters():
    summary = summarise(_runs(), {}, LAYOUT, FLOOR, block_size=32)
    assert summary["prompt_tokens_per_image"] == 210
    assert summary["prefilled_tokens_per_image"] == 82
    assert summary["prefilled_tokens_target_per_image"] == 2 * (20 + 40)
    assert summary["token_accounting"]["reference"]["prefilled_tokens_per_image"] == 210


def test_missing_phases_give_none():
    summary = summarise({}, {}, LAYOUT, FLOOR, block_size=None)
    assert summary["router_vs_engine"] is None and summary["reference_img_s"] is None


PROMETHEUS = """# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 1777.0
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 928.0
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1777.0
# TYPE vllm:request_prefill_kv_computed_tokens histogram
vllm:request_prefill_kv_computed_tokens_bucket{engine="0",le="+Inf",model_name="m"} 36.0
vllm:request_prefill_kv_computed_tokens_count{engine="0",model_name="m"} 36.0
vllm:request_prefill_kv_computed_tokens_sum{engine="0",model_name="m"} 849.0
"""


def test_counters_read_alike_from_the_server_and_the_offline_engine():
    from vllm.v1.metrics.reader import Counter, Histogram

    server = counters_from_prometheus(PROMETHEUS)
    offline = counters_from_offline(
        [
            Counter(name="vllm:prompt_tokens", labels={}, value=1777),
            Counter(name="vllm:prefix_cache_hits", labels={}, value=928),
            Counter(name="vllm:prefix_cache_queries", labels={}, value=1777),
            Histogram(name="vllm:request_prefill_kv_computed_tokens", labels={}, count=36, sum=849.0, buckets={}),
        ]
    )
    assert (
        server
        == offline
        == {
            "prompt_tokens": 1777,
            "prefix_cache_queries": 1777,
            "prefix_cache_hits": 928,
            "prefilled_tokens": 849,
            "requests": 36,
        }
    )


def test_images_dir_is_checked(tmp_path):
    with pytest.raises(BenchInputError, match="not a folder"):
        copy_images_dir(tmp_path / "nope", tmp_path / "out", 10**7, 10**8)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BenchInputError, match="no image files"):
        copy_images_dir(empty, tmp_path / "out", 10**7, 10**8)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "b.png").write_bytes(synthetic_artwork(2, (300, 200)))
    (mine / "a.jpg").write_bytes(synthetic_artwork(1, (300, 200)))
    (mine / "notes.txt").write_text("not an image")
    copies = copy_images_dir(mine, tmp_path / "out", 10**7, 10**8)
    assert [p.name for p in copies] == ["0000-a.jpg", "0001-b.png"]
    (mine / "c.png").write_bytes(b"not a png")
    with pytest.raises(BenchInputError, match="c.png"):
        copy_images_dir(mine, tmp_path / "out2", 10**7, 10**8)


class _Response:
    """What a DeploymentHandle call returns: `.result(timeout_s=...)` gives the answer or raises the replica's error."""

    def __init__(self, answer):
        self.answer = answer

    def result(self, timeout_s=None):
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


class _Handle:
    """An engine deployment handle whose methods answer (or raise) as given, recording the calls."""

    def __init__(self, **answers):
        self.calls = []
        for name, answer in answers.items():
            setattr(self, name, _Method(self.calls, name, answer))


class _Method:
    def __init__(self, calls: list, name: str, answer):
        self.calls, self.name, self.answer = calls, name, answer

    def remote(self):
        self.calls.append(self.name)
        return _Response(self.answer)


def _probe(handle):
    from loadtest.bench_router import EngineProbe

    probe = EngineProbe.__new__(EngineProbe)  # without Ray: the handle is the fake's
    probe.handle = handle
    probe.running = lambda: 1
    return probe


def test_a_failed_cache_reset_fails_the_benchmark():
    from loadtest.bench_worker import BenchPhaseError

    refused = _probe(
        _Handle(reset_caches=RuntimeError("vLLM refused to reset its prefix cache (requests still running?)"))
    )
    with pytest.raises(BenchPhaseError, match="engine reset_caches failed: RuntimeError: vLLM refused to reset"):
        refused.reset_caches()
    fine = _probe(_Handle(reset_caches="replica-a", metrics_text=("replica-a", PROMETHEUS)))
    fine.reset_caches()
    assert fine.counters() == counters_from_prometheus(PROMETHEUS)  # vLLM's counters, read through the replica
    assert set(fine.handle.calls) == {"reset_caches", "metrics_text"}


def test_every_replica_is_reset_and_counted_however_ray_serve_routes_the_calls():
    """Two replicas; Ray Serve's routing sends the first calls to the same one: calls go on until both answered,
    and the counters are their sum."""
    from loadtest.token_accounting import counters_from_prometheus

    routed = iter(["a", "a", "a", "b", "a", "b"] * 10)

    class Routed:
        def __init__(self, calls, name, text=None):
            self.calls, self.name, self.text = calls, name, text

        def remote(self):
            self.calls.append(self.name)
            replica = next(routed)
            return _Response((replica, self.text) if self.text else replica)

    handle = _Handle()
    handle.reset_caches = Routed(handle.calls, "reset_caches")
    handle.metrics_text = Routed(handle.calls, "metrics_text", PROMETHEUS)
    probe = _probe(handle)
    probe.running = lambda: 2
    probe.reset_caches()
    assert handle.calls.count("reset_caches") == 4  # a round of two calls reached only "a"; the second reached "b"
    single = counters_from_prometheus(PROMETHEUS)
    assert probe.counters() == {name: 2 * value for name, value in single.items()}


def test_locust_images_per_second_uses_elapsed_time_and_complete_answers(tmp_path):
    timing = tmp_path / "timing.json"
    timing.write_text(
        json.dumps(
            {
                "first_request_start": 100.0,
                "last_response_end": 140.0,
                "complete_full_images": 30,
                "complete_single_dimension": 18,
                "dimensions": 9,
            }
        )
    )
    figures = images_per_second(timing)
    assert figures["elapsed_s"] == 40.0 and figures["images_s"] == pytest.approx(32 / 40)
    assert images_per_second(tmp_path / "missing.json")["images_s"] is None
    # five served dimensions (the creativity rubric): a one-dimension answer is a fifth of an image
    timing.write_text(
        json.dumps(
            {
                "first_request_start": 100.0,
                "last_response_end": 140.0,
                "complete_full_images": 30,
                "complete_single_dimension": 10,
                "dimensions": 5,
            }
        )
    )
    assert images_per_second(timing)["images_s"] == pytest.approx(32 / 40)


def test_locust_success_needs_the_protocols_answer_with_every_requested_dimension():
    from loadtest.answers import check_chat, check_score

    entry = {"score": 3.1, "probs": [0.1, 0.2, 0.3, 0.2, 0.2], "std": 1.2, "adapter": "realism@abc"}
    both = {"id": "a", "rubric": "kidsartbench", "scores": {"realism": entry, "deformation": entry}}
    assert check_score(both, ["realism", "deformation"]) is None
    one = {**both, "scores": {"realism": entry}}
    assert "deformation" in check_score(one, ["realism", "deformation"])
    assert check_score({"scores": {"realism": {"score": 3.1}}}, ["realism"]).startswith("not a score answer")
    chat = {
        "id": "c",
        "created": 1,
        "model": "realism",
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10},
        "choices": [{"message": {"role": "assistant", "content": json.dumps(one)}}],
    }
    assert check_chat(chat, ["realism"]) is None
    assert "deformation" in check_chat(chat, ["realism", "deformation"])
    assert check_chat({"choices": []}, ["realism"]).startswith("not a chat completion")


def test_read_locust_stats(tmp_path):
    header = (
        "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,Min Response Time,"
        "Max Response Time,Average Content Size,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,"
        "100%\n"
    )
    rows = [
        "POST,/v1/score,60,0,900,950,500,2000,800,1.0,0,900,1000,1100,1200,1400,1600,1800,1900,2000,2000,2000",
        "POST,/v1/chat/completions "
        "[rubric],20,1,900,950,500,2000,800,0.3,0,900,1000,1100,1200,1400,1600,1800,1900,2000,2000,2000",
        "POST,/v1/chat/completions "
        "[dimension],18,0,300,300,100,600,200,0.3,0,300,300,300,300,300,500,600,600,600,600,600",
        "SHED,/v1/score 429,40,0,5,5,1,20,100,0.7,0,5,5,5,5,5,10,20,20,20,20,20",
        ",Aggregated,138,1,800,800,1,2000,600,2.3,0,800,900,1000,1100,1300,1500,1800,1900,2000,2000,2000",
    ]
    (tmp_path / "locust_stats.csv").write_text(header + "\n".join(rows) + "\n")
    stats = read_stats(tmp_path / "locust")
    assert stats["requests"] == 98 and stats["failures"] == 1 and stats["shed"] == 40
    assert stats["ok_full_images"] == 79 - 40 and stats["ok_single_dimension"] == 18
    assert stats["p95_ms"] == 1500 and stats["p99_ms"] == 1900


def test_the_locustfile_reads_the_served_dimensions_with_the_project_client(tmp_path):
    """A short headless locust run (its own process, gevent) against the fake router: the start listener
    reads the rubric and dimensions through serve.client, and /v1/score answers pass only when every one of
    the router's nine dimensions is in them (the fake router has no chat route: those rows fail, 404)."""
    from loadtest.run_locust import Scenario, run_locust
    from tests.conftest import free_port
    from tests.district_fake_router import DIMS, FakeRouter

    with FakeRouter(free_port()) as router:
        stats = run_locust(
            router.url,
            Scenario(users=2, spawn_rate=2, run_time="4s", shed_ok=False, timeout_s=10),
            tmp_path,
            extra_env={"KIDSART_LOCUST_IMAGES": "1", "KIDSART_API_KEY": ""},
        )
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["dimensions"] == len(DIMS)
    score = stats["per_name"]["POST /v1/score"]
    assert score["requests"] > 0 and score["failures"] == 0, stats["per_name"]
    assert stats["ok_full_images"] >= score["requests"]
