"""The OpenAI Batch API measured on one stack: its speed beside the district job's, and what it costs sync traffic.

`kidsart bench-batch --profile tiny` starts the profile's stack once (no keys, loopback,
its Batch API state in a temporary folder) and, with the official `openai` client:

1. **throughput**, per round (the order alternating): the district job (`--url`, its async
   client at its default concurrency) over N synthetic artworks, and a batch of N other
   artworks (`/v1/score` lines), timed from `batches.create` to `completed` (the upload,
   like the district job's discovery, is not counted). Each path scores its own images,
   so no cache serves a repeat. The figure is the batch's images/s over the district job's;
2. **priority**: after an unmeasured locust run (its fixed artworks then sit in vLLM's
   caches for every measured run alike), locust's nominal scenario alone, then again while a large batch runs,
   then alone again; the sync p95 with the batch over the lower p95 of the two runs
   without (the conservative ratio), and how many batch lines were answered meanwhile (the batch goes on, slowly).

It prints the figures and writes them as JSON (docs/batch.md quotes a run).
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import tempfile
import time
from pathlib import Path

log = logging.getLogger("kidsart.batch_bench")

BENCH_FILE_BYTES = 256 * 2**20  # room for the benchmark's files (hundreds of synthetic artworks as data URLs)


def _batch_file(images: list[Path]) -> bytes:
    from serve.protocol import BatchInputLine, ScoreRequest

    lines = []
    for i, path in enumerate(images):
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        url = f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()
        body = ScoreRequest(image=url).model_dump(exclude_none=True, exclude_defaults=True)
        lines.append(BatchInputLine(custom_id=f"img-{i}", url="/v1/score", body=body).model_dump_json())
    return ("\n".join(lines) + "\n").encode()


def _district_images(folder: Path, seed: int, images: int) -> list[Path]:
    from train.district import make_district

    written = make_district(folder, seed=seed, schools=1, grades=2, classes=2, images=images, broken=0, duplicates=0)
    return [folder / name for name in written["images"]]


def _start_batch(client, images: list[Path]) -> str:
    upload = client.files.create(file=("bench.jsonl", _batch_file(images)), purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint="/v1/score", completion_window="24h").id


def _run_batch(client, images: list[Path]) -> dict:
    upload = client.files.create(file=("bench.jsonl", _batch_file(images)), purpose="batch")
    started = time.monotonic()
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/score", completion_window="24h")
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    elapsed = time.monotonic() - started
    if batch.status != "completed" or batch.request_counts.completed != len(images):
        raise RuntimeError(f"batch {batch.id} ended {batch.status} with {batch.request_counts}")
    speed = round(len(images) / elapsed, 2)
    return {"path": "batch", "images": len(images), "seconds": round(elapsed, 1), "img_s": speed}


def _run_district(folder: Path, out: Path, url: str) -> dict:
    from serve.district.job import DistrictJobConfig, run_job

    result = run_job(DistrictJobConfig(input=folder, out=out, report=False, progress=False), url=url)
    summary = result.summary
    if summary["ok"] != summary["inputs"]:
        raise RuntimeError(f"district: {summary['ok']} of {summary['inputs']} scored")
    return {
        "path": "district",
        "images": summary["inputs"],
        "seconds": round(summary["scoring_s"], 1),
        "img_s": round(summary["images_per_s"], 2),
    }


def _locust_p95(url: str, out_dir: Path, run_time: str | None = None) -> dict:
    from loadtest.run_locust import SCENARIOS, run_locust

    scenario = SCENARIOS["nominal"] if run_time is None else SCENARIOS["nominal"].with_changes(run_time=run_time)
    stats = run_locust(url, scenario, out_dir)
    return {k: stats[k] for k in ("requests", "failures", "p50_ms", "p95_ms", "p99_ms", "images_s")}


def run_batch_bench(
    profile: str = "tiny",
    images: int = 64,
    rounds: int = 2,
    priority_lines: int = 400,
    port: int = 8650,
    out: Path = Path("batch-bench.json"),
) -> dict:
    """Measure (see the module docstring); the figures, also written to `out`."""
    import openai

    from adapters.profiles import load_profile
    from serve.stack import Stack

    work = Path(tempfile.mkdtemp(prefix="kidsart-batch-bench-"))
    figures: dict = {"profile": profile, "images": images, "runs": []}
    loaded = load_profile(profile)
    if loaded.batch.max_file_bytes < BENCH_FILE_BYTES:  # the tiny profile keeps uploads small for its tests
        log.info("batch.max_file_bytes raised to %d for the benchmark's files", BENCH_FILE_BYTES)
        loaded = loaded.model_copy(
            update={"batch": loaded.batch.model_copy(update={"max_file_bytes": BENCH_FILE_BYTES})}
        )
    with Stack(loaded, router_port=port, log_dir=work / "logs", home=work / "home") as stack:
        client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="loopback-no-key", max_retries=2, timeout=600)
        _district_images(work / "warm-d", 8800, 16)
        _run_district(work / "warm-d", work / "warm-d-out", stack.url)
        _run_batch(client, _district_images(work / "warm-b", 8801, 16))
        for round_ in range(rounds):
            order = ("district", "batch") if round_ % 2 == 0 else ("batch", "district")
            for i, path in enumerate(order):
                folder = work / f"{path}-{round_}"
                pictures = _district_images(folder, 8900 + 10 * round_ + i, images)
                if path == "district":
                    run = _run_district(folder, work / f"{path}-{round_}-out", stack.url)
                else:
                    run = _run_batch(client, pictures)
                log.info("round %d %-8s %.2f images/s (%d images)", round_ + 1, path, run["img_s"], run["images"])
                figures["runs"].append(run)
        by_path = {p: sorted(r["img_s"] for r in figures["runs"] if r["path"] == p) for p in ("district", "batch")}
        figures["img_s"] = by_path
        figures["batch_vs_district"] = round(
            sum(by_path["batch"]) / len(by_path["batch"]) / (sum(by_path["district"]) / len(by_path["district"])), 3
        )

        # locust sends a fixed set of artworks: a first, unmeasured run puts them in vLLM's caches, so the three
        # measured runs all see warm caches (else the last run, on cached images, looks faster than the first)
        _locust_p95(stack.url, work / "locust-warm-up", run_time="40s")
        alone = _locust_p95(stack.url, work / "locust-alone-1")
        batch_id = _start_batch(client, _district_images(work / "priority", 9100, priority_lines))
        time.sleep(5)  # the batch is running at full speed before the sync traffic starts
        before = client.batches.retrieve(batch_id).request_counts.completed
        during = _locust_p95(stack.url, work / "locust-during")
        answered = client.batches.retrieve(batch_id).request_counts.completed - before
        client.batches.cancel(batch_id)
        while client.batches.retrieve(batch_id).status not in ("cancelled", "completed"):
            time.sleep(0.5)
        again = _locust_p95(stack.url, work / "locust-alone-2")
        baseline = min(alone["p95_ms"], again["p95_ms"])  # the lower: the conservative ratio
        figures["priority"] = {
            "without_batch": [alone, again],
            "with_batch": during,
            "batch_lines_answered_during": answered,
            "p95_ratio": round(during["p95_ms"] / baseline, 3) if baseline else None,
        }
    Path(out).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return figures
