"""The district job as a Ray Data pipeline, for districts beyond one machine.

score (actor pool; each actor reads its batch's files, keeps an asyncio loop and its
clients and runs several batches at once in threads, each batch scored concurrently)
-> write: the driver consumes the stream and appends every result to the same fsync'd
journal as the local runner, so `--resume`, exports and the report are identical
whichever path ran.

Two ways to score, chosen by the CLI:
- handles (`--pipeline ray` without `--url`): inside the cluster that serves the
  application, each actor prepares its images and calls the engine deployment through
  Ray Serve handles with the router's own code (serve.district.handles);
- a router URL (`--url`, from outside the cluster): each actor posts to the router.

On one machine `ray.init()` starts (or joins, when the stack runs in this process)
a local instance; on a cluster pass `--ray-address auto` (or the head's address) and
make the input folder visible to the workers at the same path (shared storage).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from itertools import count

from serve.district.client import RetryPolicy, ScoreClient
from serve.district.journal import Journal
from serve.district.runner import Plan, RunStats, unit_records

log = logging.getLogger(__name__)


def _read(batch: dict) -> dict:
    """Read each input's image (a file, or its batch line at `offset` >= 0); one that cannot be read becomes an
    error result (the router decodes and checks the rest)."""
    import hashlib

    from serve.district.inputs import InputReadError, read_input_bytes

    payloads, shas, error_types, errors = [], [], [], []
    for path, offset, key, sha in zip(batch["path"], batch["offset"], batch["key"], batch["sha256"], strict=True):
        payload, error_type, error = b"", "", ""
        try:
            payload = read_input_bytes(str(path), int(offset) if offset >= 0 else None, key=str(key))
            sha = hashlib.sha256(payload).hexdigest()
        except InputReadError as exc:
            error_type, error = exc.kind, str(exc)
        payloads.append(payload)
        shas.append(sha)
        error_types.append(error_type)
        errors.append(error)
    return {**batch, "payload": payloads, "sha256": shas, "error_type": error_types, "error": errors}


class _Score:
    """Actor: an event loop in a thread, scoring clients on it (handles or HTTP), one batch scored concurrently
    per call."""

    def __init__(
        self,
        urls: list[str],
        dimensions: list[str] | None,
        policy: RetryPolicy,
        connections: int,
        feedback: bool = False,
        runtime: dict | None = None,
    ):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True, name="district-score-loop").start()
        self.dimensions, self.policy, self.feedback = dimensions, policy, feedback
        self._next = count()
        self.clients = asyncio.run_coroutine_threadsafe(
            self._make_clients(urls, connections, runtime), self.loop
        ).result()

    async def _make_clients(self, urls, connections, runtime):
        if runtime is not None:
            from serve.district.handles import HandleScoreClient

            return [HandleScoreClient(runtime, dimensions=self.dimensions, policy=self.policy, feedback=self.feedback)]
        return [
            ScoreClient(
                url, dimensions=self.dimensions, policy=self.policy, max_connections=connections, feedback=self.feedback
            )
            for url in urls
        ]

    async def _score_batch(self, batch: dict) -> list[dict]:
        batch.update(await asyncio.to_thread(_read, batch))

        async def one(i: int) -> dict:
            if batch["error_type"][i]:
                return {"status": "error", "error_type": str(batch["error_type"][i]), "error": str(batch["error"][i])}
            client = self.clients[next(self._next) % len(self.clients)]
            payload, key, description = bytes(batch["payload"][i]), str(batch["key"][i]), str(batch["description"][i])
            return await client.score(payload, request_id=key, description=description)

        return await asyncio.gather(*(one(i) for i in range(len(batch["key"]))))

    def __call__(self, batch: dict) -> dict:
        import json

        results = asyncio.run_coroutine_threadsafe(self._score_batch(batch), self.loop).result()
        return {
            "unit": batch["unit"],
            "sha256": batch["sha256"],
            "sent": [not error_type for error_type in batch["error_type"]],
            "result": [json.dumps(r, allow_nan=False) for r in results],
        }


def score_with_ray(
    plan: Plan,
    journal: Journal,
    *,
    urls: list[str],
    dimensions: list[str] | None,
    policy: RetryPolicy,
    actors: int = 2,
    batch_size: int = 16,
    actor_concurrency: int = 4,
    ray_address: str | None = None,
    progress=None,
    feedback: bool = False,
    runtime: dict | None = None,
) -> RunStats:
    """Score the plan's units with Ray Data, through the router at `urls`, or with handles when `runtime` (what
    the application serves, serve.district.handles.served_runtime) is given; the driver journals every result as
    it streams in."""
    import json

    connect_ray(ray_address)
    stats = RunStats(
        local_errors=sum(1 for r in plan.immediate if r.get("source") == "local"),
        reused=sum(1 for r in plan.immediate if r.get("source") == "reused"),
    )
    started = time.monotonic()

    def commit(records: list[dict]) -> None:
        journal.append(records)
        for record in records:
            if record["status"] == "error":
                stats.error_types[record.get("error_type", "error")] += 1
        if progress is not None:
            progress.update(len(records))

    commit(plan.immediate)
    if plan.units:
        asyncio.run(_wait_ready(urls, policy, runtime))
        rows = [
            {
                "unit": i,
                "path": u.first.path,
                "offset": u.first.batch.offset if u.first.batch else -1,  # -1: a file
                "key": u.first.key,
                "sha256": u.first.sha256,
                "description": u.first.description,
            }
            for i, u in enumerate(plan.units)
        ]
        dataset = _dataset(
            rows,
            urls=urls,
            dimensions=dimensions,
            policy=policy,
            actors=actors,
            batch_size=batch_size,
            actor_concurrency=actor_concurrency,
            feedback=feedback,
            runtime=runtime,
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            if stats.first_result_s is None:
                stats.first_result_s = time.monotonic() - started
            records = []
            answers = zip(batch["unit"], batch["sha256"], batch["sent"], batch["result"], strict=True)
            for unit_index, sha, sent, result_json in answers:
                result = json.loads(str(result_json))
                unit = plan.units[int(unit_index)]
                records.extend(unit_records(unit, result, str(sha)))
                stats.requests += int(bool(sent))
                stats.scored += 1 if result["status"] == "ok" else 0
                stats.reused += len(unit.items) - 1
            commit(records)
    stats.elapsed_s = time.monotonic() - started
    return stats


def _dataset(
    rows: list[dict],
    *,
    urls: list[str],
    dimensions,
    policy: RetryPolicy,
    actors: int,
    batch_size: int,
    actor_concurrency: int,
    feedback: bool,
    runtime: dict | None,
):
    """The Ray Data pipeline over the units' rows: score them in `actors` actors, `actor_concurrency` batches at
    once each."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch_size, 200)))
    connections = batch_size * actor_concurrency
    dataset = dataset.map_batches(
        _Score,
        fn_constructor_args=(urls, dimensions, policy, connections, feedback, runtime),
        batch_size=batch_size,
        batch_format="numpy",
        num_cpus=0,
        compute=ray.data.ActorPoolStrategy(
            size=actors,
            max_tasks_in_flight_per_actor=actor_concurrency + 2,
            max_concurrent_calls_per_actor=actor_concurrency,
            enable_true_multi_threading=True,
        ),
    )
    return dataset


def connect_ray(ray_address: str | None) -> None:
    """Join the Ray cluster at `ray_address` (or this process's instance, or a new local one)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False)


async def _wait_ready(urls: list[str], policy: RetryPolicy, runtime: dict | None) -> None:
    if runtime is not None:
        from serve.district.handles import HandleScoreClient

        client = HandleScoreClient(runtime, policy=policy)
        try:
            await client.wait_ready()
        finally:
            await client.aclose()
        return
    for url in urls:
        async with ScoreClient(url, policy=policy) as client:
            await client.wait_ready()
