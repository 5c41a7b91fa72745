"""The router phase of `kidsart bench`: the whole stack (vLLM server + Ray Serve router) over HTTP.

Set-up starts the stack (or targets `--url`), warms it, and sweeps the client
concurrency on other images to pick the best. Each measured run then posts every
image to `POST /v1/score` at that concurrency. Diagnostic run `engine_http`: the
router's own fan-out code (serve.scoring.EngineScorer) in-process against the
same vLLM server, without Ray Serve, so the two can be told apart.

When the stack is ours, the engine runs with VLLM_SERVER_DEV_MODE=1: before each
measured run its caches are reset through the dev endpoints (a reset that fails
fails the benchmark) and primed with one warm-up image, and the prefix-cache and
prefill counters are read from its `/metrics` before and after.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import os
import tempfile
import time
from pathlib import Path

import httpx

from loadtest.bench_worker import BenchPhaseError, clear_counts
from serve.client import auth_headers
from serve.vllm_plugin.engine_auth import ENGINE_KEY_ENV, engine_headers

log = logging.getLogger("kidsart.bench")

RESET_ENDPOINTS = ("/reset_prefix_cache", "/reset_mm_cache", "/reset_encoder_cache")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def http_run(send, images: list[bytes], concurrency: int) -> dict:
    """Score every image with `concurrency` clients; per-image latency and throughput."""
    queue: asyncio.Queue = asyncio.Queue()
    for i, data in enumerate(images):
        queue.put_nowait((i, data))
    latencies: list[float] = [0.0] * len(images)
    results: list = [None] * len(images)
    errors: list[str] = []

    async def worker() -> None:
        while True:
            try:
                i, data = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            try:
                results[i] = await send(i, data)
            except Exception as exc:  # counted: a run with failures fails the benchmark
                errors.append(f"{exc.__class__.__name__}: {exc}"[:300])
            latencies[i] = time.perf_counter() - t0

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency, "img_s": len(images) / elapsed, "seconds": elapsed,
        "p50_ms": 1000 * percentile(latencies, 0.50), "p95_ms": 1000 * percentile(latencies, 0.95),
        "errors": errors[:5], "failed": len(errors), "results": results,
    }


def reset_server_caches(engine_url: str, api_key: str | None) -> None:
    """Clear the vLLM server's prefix, processor and encoder caches; any failure is an error."""
    for path in RESET_ENDPOINTS:
        try:
            response = httpx.post(f"{engine_url}{path}", timeout=30, headers=engine_headers(api_key))
        except httpx.HTTPError as exc:
            raise BenchPhaseError(f"cache reset {path} at {engine_url} failed: {exc.__class__.__name__}: {exc}") from exc
        if response.status_code != 200:
            raise BenchPhaseError(
                f"cache reset {path} at {engine_url} answered {response.status_code}: {response.text[:200]} "
                "(is the engine running with VLLM_SERVER_DEV_MODE=1?)"
            )


def read_server_counters(engine_url: str, api_key: str | None) -> dict[str, float]:
    from loadtest.token_accounting import counters_from_prometheus

    response = httpx.get(f"{engine_url}/metrics", timeout=30, headers=engine_headers(api_key))
    if response.status_code != 200:
        raise BenchPhaseError(f"the engine's /metrics answered {response.status_code}")
    return counters_from_prometheus(response.text)


class RouterWorker:
    def __init__(self, spec: dict):
        from adapters.profiles import load_profile

        self.images = [Path(p) for p in spec["images"]]
        warm = [Path(p) for p in spec["warm"]]
        sweep = [Path(p) for p in spec["sweep"]]
        concurrency = spec["concurrency"]
        self.stats_dir = Path(spec["stats_dir"]) if spec.get("stats_dir") else None
        profile = load_profile(spec["profile"], spec.get("deployment"))
        env = dict(profile.engine.env)
        env["VLLM_SERVER_DEV_MODE"] = "1"  # the cache-reset endpoints
        if self.stats_dir:
            env["KIDSART_MM_STATS"] = str(self.stats_dir)
        self.profile = profile.model_copy(update={"engine": profile.engine.model_copy(update={"env": env})})
        self.stack = None
        self.engine_url = spec.get("engine_url")
        self.engine_key = os.environ.get(ENGINE_KEY_ENV) or None  # an engine started elsewhere: its operator's key
        self.router_url = spec.get("router_url")
        if self.router_url is None:
            from serve.stack import Stack

            self.stack = Stack(
                self.profile, router_port=spec["router_port"], engine_port=spec["engine_port"],
                log_dir=Path(tempfile.mkdtemp(prefix="kidsart-bench-logs-")),
            )
            self.stack.start()
            self.router_url = self.stack.url
            self.engine_url = self.stack.engine.url
            self.engine_key = self.stack.engine.api_key
        self.scorer = None
        try:
            self._warm_and_sweep(warm, sweep, concurrency)
        except BaseException:
            self.close()
            raise

    def _warm_and_sweep(self, warm: list[Path], sweep: list[Path], concurrency: list[int]) -> None:
        self.raw = {p: p.read_bytes() for p in [*self.images, *warm, *sweep]}
        self.warm = warm
        self.client = httpx.AsyncClient(
            base_url=self.router_url, timeout=600, headers=auth_headers(),
            limits=httpx.Limits(max_connections=max(concurrency) * 2, max_keepalive_connections=max(concurrency) * 2),
        )
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(http_run(self._send, [self.raw[p] for p in warm], len(warm)))
        sweep_runs = []
        per_level = max(1, len(sweep) // len(concurrency))
        for level, c in enumerate(concurrency):
            # Fresh images per level (and cleared caches when the engine is known): a repeated
            # image would be served from vLLM's caches.
            if self.engine_url:
                reset_server_caches(self.engine_url, self.engine_key)
            subset = sweep[level * per_level:(level + 1) * per_level]
            run = self.loop.run_until_complete(http_run(self._send, [self.raw[p] for p in subset], c))
            run.pop("results")
            if run["failed"]:
                raise BenchPhaseError(f"router sweep at concurrency {c}: {run['failed']} requests failed: {run['errors']}")
            sweep_runs.append(run)
            log.info("router sweep: concurrency %d -> %.2f images/s", c, run["img_s"])
        self.concurrency = max(sweep_runs, key=lambda r: r["img_s"])["concurrency"]
        self.info = {
            "router_url": self.router_url, "engine_url": self.engine_url, "sweep": sweep_runs,
            "concurrency": self.concurrency, "engine_caches_reset": self.engine_url is not None,
        }

    async def _send(self, i: int, data: bytes) -> dict:
        body = {"image": base64.b64encode(data).decode("ascii"), "id": str(i)}
        response = await self.client.post("/v1/score", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        scores = response.json()["scores"]
        return scores

    async def _send_direct(self, i: int, data: bytes) -> dict:
        from adapters.images import encode_png, normalize_bytes, png_data_url

        def prepare() -> str:
            recipe = self.scorer.runtime.prompt_format.image_recipe
            return png_data_url(encode_png(normalize_bytes(data, self.profile.image_size, recipe=recipe)))

        data_url = await asyncio.to_thread(prepare)
        scores, _ = await self.scorer.score(data_url)
        return scores

    def ready(self, timeout_s: float = 120.0) -> dict:
        """After a pause (SIGSTOP): wait until the router (and through it the engine) is ready again."""
        from serve.stack import StackStartError, wait_router_ready

        try:
            return {"ready": True, "waited_s": wait_router_ready(self.router_url, timeout_s)}
        except StackStartError as exc:
            raise BenchPhaseError(f"after a pause: {exc}") from exc

    def handle(self, command: dict) -> dict:
        op = command.get("op", "run")
        if op == "engine_http":
            if self.engine_url is None:
                raise BenchPhaseError("engine_http needs the engine's URL (start the stack here or pass --engine-url)")
            if self.scorer is None:
                from serve.scoring import EngineScorer
                from serve.stack import router_runtime

                deployment = self.stack.deployment if self.stack else None
                if deployment is None:
                    from adapters.manifest import load_profile_deployment

                    deployment = load_profile_deployment(self.profile)
                self.scorer = EngineScorer(router_runtime(self.profile, deployment, self.engine_url, self.engine_key))
            send = self._send_direct
        else:
            send = self._send
        before = None
        if self.engine_url:
            reset_server_caches(self.engine_url, self.engine_key)
            self.loop.run_until_complete(http_run(send, [self.raw[self.warm[0]]], 1))  # steady state
            before = read_server_counters(self.engine_url, self.engine_key)
        clear_counts(self.stats_dir)
        run = self.loop.run_until_complete(http_run(send, [self.raw[p] for p in self.images], self.concurrency))
        if run["failed"]:
            raise BenchPhaseError(f"{op}: {run['failed']} of {len(self.images)} requests failed: {run['errors']}")
        if before is not None:
            from loadtest.token_accounting import counter_delta

            run["counters"] = counter_delta(before, read_server_counters(self.engine_url, self.engine_key))
        from serve.vllm_plugin import mm_stats

        run["image_path"] = mm_stats.read_counts(self.stats_dir) if self.stats_dir else None
        results = run.pop("results")
        run["scores"] = {p.name: {dim: v["score"] for dim, v in r.items()} for p, r in zip(self.images, results)}
        return run

    def close(self) -> None:
        try:
            loop = getattr(self, "loop", None)
            if loop is not None:
                if self.scorer is not None:
                    loop.run_until_complete(self.scorer.aclose())
                loop.run_until_complete(self.client.aclose())
                loop.close()
        finally:
            if self.stack is not None:
                self.stack.stop()
