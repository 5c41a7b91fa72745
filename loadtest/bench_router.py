"""The router phase of `kidsart bench`: the whole stack (engine replica + Ray Serve router) over HTTP.

Set-up starts the stack (or targets `--url`), warms it, and sweeps the client
concurrency on other images to pick the best. Each measured run then posts every
image to `POST /v1/score` at that concurrency.

When the stack is ours, this process is its Ray driver: before each measured run the
engine replica's caches are reset through its handle (a reset that fails fails the
benchmark) and primed with one warm-up image, and vLLM's prefix-cache and prefill
counters are read from the replica before and after.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from pathlib import Path

import httpx

from loadtest.bench_worker import BenchPhaseError, clear_counts
from serve.client import auth_headers, parse_answer, score_payload
from serve.protocol import ScoreAnswer

log = logging.getLogger("kidsart.bench")


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
        "concurrency": concurrency,
        "img_s": len(images) / elapsed,
        "seconds": elapsed,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p95_ms": 1000 * percentile(latencies, 0.95),
        "errors": errors[:5],
        "failed": len(errors),
        "results": results,
    }


class EngineProbe:
    """The engine replicas of a stack started here, through a Ray handle: cache resets and vLLM's counters.

    Ray Serve sends each call to one replica of its choosing, so a call meant for every replica is sent in rounds
    until each running replica has answered once (replicas answer with their id)."""

    ROUNDS = 20

    def __init__(self):
        from ray import serve

        from serve.scoring import APP_NAME, ENGINE_DEPLOYMENT, engine_status

        self.handle = serve.get_deployment_handle(ENGINE_DEPLOYMENT, APP_NAME)
        self.running = lambda: engine_status(APP_NAME)[0]

    def _on_every_replica(self, method: str) -> dict:
        """replica id -> its answer to `method`, from every running replica; any failure is a BenchPhaseError."""
        running = self.running()
        answers: dict = {}
        try:
            for _ in range(self.ROUNDS):
                for response in [getattr(self.handle, method).remote() for _ in range(2 * running)]:
                    answer = response.result(timeout_s=60)
                    replica, value = answer if isinstance(answer, tuple) else (answer, None)
                    answers.setdefault(replica, value)
                if len(answers) >= running:
                    return answers
        except Exception as exc:  # Ray's wrapped replica error: the benchmark cannot go on
            raise BenchPhaseError(f"engine {method} failed: {exc.__class__.__name__}: {exc}"[:500]) from exc
        raise BenchPhaseError(f"engine {method}: {len(answers)} of {running} replicas answered in {self.ROUNDS} rounds")

    def reset_caches(self) -> None:
        """Clear every replica's prefix, processor and encoder caches."""
        self._on_every_replica("reset_caches")

    def counters(self) -> dict[str, float]:
        """vLLM's counters summed over the replicas."""
        from loadtest.token_accounting import counters_from_prometheus

        total: dict[str, float] = {}
        for text in self._on_every_replica("metrics_text").values():
            for name, value in counters_from_prometheus(text).items():
                total[name] = total.get(name, 0.0) + value
        return total


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
        if self.stats_dir:
            env["KIDSART_MM_STATS"] = str(self.stats_dir)
        self.profile = profile.model_copy(update={"engine": profile.engine.model_copy(update={"env": env})})
        self.stack = None
        self.engine: EngineProbe | None = None  # known only for a stack started here
        self.router_url = spec.get("router_url")
        if self.router_url is None:
            from serve.stack import Stack

            self.stack = Stack(
                self.profile,
                router_port=spec["router_port"],
                log_dir=Path(tempfile.mkdtemp(prefix="kidsart-bench-logs-")),
            )
            self.stack.start()
            self.router_url = self.stack.url
            self.engine = EngineProbe()
        try:
            self._warm_and_sweep(warm, sweep, concurrency)
        except BaseException:
            self.close()
            raise

    def _warm_and_sweep(self, warm: list[Path], sweep: list[Path], concurrency: list[int]) -> None:
        self.raw = {p: p.read_bytes() for p in [*self.images, *warm, *sweep]}
        self.warm = warm
        self.client = httpx.AsyncClient(
            base_url=self.router_url,
            timeout=600,
            headers=auth_headers(),
            limits=httpx.Limits(max_connections=max(concurrency) * 2, max_keepalive_connections=max(concurrency) * 2),
        )
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(http_run(self._send, [self.raw[p] for p in warm], len(warm)))
        sweep_runs = []
        per_level = max(1, len(sweep) // len(concurrency))
        for level, c in enumerate(concurrency):
            # Fresh images per level (and cleared caches when the engine is ours): a repeated
            # image would be served from vLLM's caches.
            if self.engine:
                self.engine.reset_caches()
            subset = sweep[level * per_level : (level + 1) * per_level]
            run = self.loop.run_until_complete(http_run(self._send, [self.raw[p] for p in subset], c))
            run.pop("results")
            if run["failed"]:
                raise BenchPhaseError(
                    f"router sweep at concurrency {c}: {run['failed']} requests failed: {run['errors']}"
                )
            sweep_runs.append(run)
            log.info("router sweep: concurrency %d -> %.2f images/s", c, run["img_s"])
        self.concurrency = max(sweep_runs, key=lambda r: r["img_s"])["concurrency"]
        self.info = {
            "router_url": self.router_url,
            "sweep": sweep_runs,
            "concurrency": self.concurrency,
            "engine_caches_reset": self.engine is not None,
            "engine_replicas": self.stack.engine_replicas()[0] if self.stack else None,
        }

    async def _send(self, i: int, data: bytes) -> dict:
        response = await self.client.post("/v1/score", json=score_payload(data, request_id=str(i)))
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        return parse_answer(ScoreAnswer, response.json(), "POST /v1/score").scores

    def ready(self, timeout_s: float = 120.0) -> dict:
        """After a pause (SIGSTOP): wait until the router (and through it the engine) is ready again."""
        from serve.stack import StackStartError, wait_router_ready

        try:
            return {"ready": True, "waited_s": wait_router_ready(self.router_url, timeout_s)}
        except StackStartError as exc:
            raise BenchPhaseError(f"after a pause: {exc}") from exc

    def handle(self, command: dict) -> dict:
        before = None
        if self.engine:
            self.engine.reset_caches()
            self.loop.run_until_complete(http_run(self._send, [self.raw[self.warm[0]]], 1))  # steady state
            before = self.engine.counters()
        clear_counts(self.stats_dir)
        run = self.loop.run_until_complete(http_run(self._send, [self.raw[p] for p in self.images], self.concurrency))
        if run["failed"]:
            raise BenchPhaseError(f"router: {run['failed']} of {len(self.images)} requests failed: {run['errors']}")
        if before is not None:
            from loadtest.token_accounting import counter_delta

            run["counters"] = counter_delta(before, self.engine.counters())
        from serve.vllm_plugin import mm_stats

        run["image_path"] = mm_stats.read_counts(self.stats_dir) if self.stats_dir else None
        results = run.pop("results")
        run["scores"] = {
            p.name: {dim: v.score for dim, v in r.items()} for p, r in zip(self.images, results, strict=True)
        }
        return run

    def close(self) -> None:
        try:
            loop = getattr(self, "loop", None)
            if loop is not None:
                loop.run_until_complete(self.client.aclose())
                loop.close()
        finally:
            if self.stack is not None:
                self.stack.stop()
