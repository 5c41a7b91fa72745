"""The district job as a Ray Data pipeline, for districts beyond one machine.

read + prepare (router mode: the scoring actors read the bytes themselves, the router
normalises; engine mode: a separate stage decodes, EXIF-orients, letter-boxes and
PNG-encodes with `adapters.images`, and a corrupt file becomes an error row there)
-> score (actor pool; each actor keeps an asyncio loop and pooled HTTP clients and
runs several batches at once in threads, each batch scored concurrently,
either through router URL(s) or straight against several vLLM engine replicas
with the router's own `EngineScorer`) -> write: the driver consumes the stream and
appends every result to the same fsync'd journal as the local runner, so
`--resume`, exports and the report are identical whichever path ran.

On one machine `ray.init()` starts (or joins, when the stack runs in this process)
a local instance; on a cluster pass `--ray-address auto` (or ray://...) and make
the input folder visible to the workers at the same path (shared storage).
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from itertools import count

from serve.district.client import RetryPolicy, RouterUnavailableError, ScoreClient
from serve.district.journal import Journal
from serve.district.runner import Plan, RunStats, unit_records

log = logging.getLogger(__name__)


class _Prepare:
    """Read each file; in engine mode also decode and prepare it by the prompt format's recipe (errors become error results)."""

    def __init__(self, mode: str, image_size: int, max_bytes: int, max_pixels: int, recipe: str):
        self.mode, self.image_size, self.max_bytes, self.max_pixels = mode, image_size, max_bytes, max_pixels
        self.recipe = recipe

    def __call__(self, batch: dict) -> dict:
        import hashlib
        from pathlib import Path

        from adapters.errors import InputError
        from adapters.images import encode_png, normalize_bytes, png_data_url

        payloads, shas, error_types, errors = [], [], [], []
        for path, key, sha in zip(batch["path"], batch["key"], batch["sha256"]):
            payload, error_type, error = b"", "", ""
            try:
                data = Path(path).read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                if self.mode == "engine":
                    image = normalize_bytes(data, self.image_size, recipe=self.recipe,
                                            max_bytes=self.max_bytes, max_pixels=self.max_pixels)
                    payload = png_data_url(encode_png(image)).encode("ascii")
                else:
                    payload = data
            except OSError as exc:
                error_type, error = "unreadable_file", f"file {key} cannot be read: {exc.strerror or exc}"
            except InputError as exc:
                error_type, error = exc.kind, str(exc)
            payloads.append(payload)
            shas.append(sha)
            error_types.append(error_type)
            errors.append(error)
        return {**batch, "payload": payloads, "sha256": shas, "error_type": error_types, "error": errors}


class _Score:
    """Actor: an event loop in a thread, HTTP clients on it, one batch scored concurrently per call."""

    def __init__(self, mode: str, urls: list[str], dimensions: list[str] | None, policy: RetryPolicy,
                 runtime: dict | None, connections: int, feedback: bool = False):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True, name="district-score-loop").start()
        self.mode, self.dimensions, self.policy, self.feedback = mode, dimensions, policy, feedback
        self._rng = random.Random(policy.seed)
        self._next = count()
        self.clients = asyncio.run_coroutine_threadsafe(self._make_clients(urls, runtime, connections), self.loop).result()

    async def _make_clients(self, urls, runtime, connections):
        if self.mode == "router":
            return [ScoreClient(url, dimensions=self.dimensions, policy=self.policy, max_connections=connections,
                                feedback=self.feedback) for url in urls]
        from serve.scoring import EngineScorer, RouterRuntime

        return [EngineScorer(RouterRuntime(**{**runtime, "engine_url": url})) for url in urls]

    async def _score_engine(self, scorer, data_url: str, key: str, description: str) -> dict:
        """Score through an engine directly; an unavailable engine is retried by the clients' one policy."""
        from adapters.errors import InputError
        from serve.client import engine_retrying
        from serve.errors import EngineUnavailableError

        try:
            async for attempt in engine_retrying(self.policy, self._rng, key, (EngineUnavailableError,)):
                with attempt:
                    scores, _ = await scorer.score(data_url, self.dimensions or None, description or None)
                    result = {"status": "ok", "scores": scores, "rubric": scorer.rubric.name}
                    if self.feedback:
                        result["feedback"] = await scorer.feedback(data_url, scores, description or None)
                    return result
        except EngineUnavailableError as exc:
            raise RouterUnavailableError(f"engine {scorer.runtime.engine_url} unavailable for "
                                         f"{self.policy.max_outage_s:.0f} s: {exc}") from exc
        except InputError as exc:
            return {"status": "error", "error_type": exc.kind, "error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - an engine answer that cannot be read is this input's error
            return {"status": "error", "error_type": getattr(exc, "kind", "scoring_error"), "error": str(exc)}
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _score_batch(self, batch: dict) -> list[dict]:
        if "payload" not in batch:  # router mode: read the original bytes here
            prepared = await asyncio.to_thread(_Prepare("router", 0, 0, 0, ""), batch)
            batch.update(prepared)

        async def one(i: int) -> dict:
            if batch["error_type"][i]:
                return {"status": "error", "error_type": str(batch["error_type"][i]), "error": str(batch["error"][i])}
            client = self.clients[next(self._next) % len(self.clients)]
            payload, key, description = bytes(batch["payload"][i]), str(batch["key"][i]), str(batch["description"][i])
            if self.mode == "router":
                return await client.score(payload, request_id=key, description=description)
            return await self._score_engine(client, payload.decode("ascii"), key, description)

        return await asyncio.gather(*(one(i) for i in range(len(batch["key"]))))

    def __call__(self, batch: dict) -> dict:
        import json

        results = asyncio.run_coroutine_threadsafe(self._score_batch(batch), self.loop).result()
        return {"unit": batch["unit"], "sha256": batch["sha256"],
                "result": [json.dumps(r, allow_nan=False) for r in results]}


def score_with_ray(plan: Plan, journal: Journal, *, mode: str, urls: list[str], dimensions: list[str] | None,
                   policy: RetryPolicy, runtime: dict | None = None, actors: int = 2,
                   batch_size: int = 16, actor_concurrency: int = 4, ray_address: str | None = None,
                   progress=None, feedback: bool = False) -> RunStats:
    """Score the plan's units with Ray Data; the driver journals every result as it streams in."""
    import json

    import ray

    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    stats = RunStats(local_errors=sum(1 for r in plan.immediate if r.get("source") == "local"),
                     reused=sum(1 for r in plan.immediate if r.get("source") == "reused"))
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
        if mode == "router":
            for url in urls:
                asyncio.run(_wait_ready(url, policy))
        rows = [{"unit": i, "path": u.first.path, "key": u.first.key, "sha256": u.first.sha256,
                 "description": u.first.description} for i, u in enumerate(plan.units)]
        dataset = _dataset(rows, mode=mode, urls=urls, dimensions=dimensions, policy=policy, runtime=runtime,
                           actors=actors, batch_size=batch_size, actor_concurrency=actor_concurrency, feedback=feedback)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            if stats.first_result_s is None:
                stats.first_result_s = time.monotonic() - started
            records = []
            for unit_index, sha, result_json in zip(batch["unit"], batch["sha256"], batch["result"]):
                result = json.loads(str(result_json))
                unit = plan.units[int(unit_index)]
                records.extend(unit_records(unit, result, str(sha)))
                stats.requests += 1 if not result.get("error_type") in ("unreadable_file",) else 0
                stats.scored += 1 if result["status"] == "ok" else 0
                stats.reused += len(unit.items) - 1
            commit(records)
    stats.elapsed_s = time.monotonic() - started
    return stats


def _dataset(rows: list[dict], *, mode: str, urls: list[str], dimensions, policy: RetryPolicy, runtime: dict | None,
             actors: int, batch_size: int, actor_concurrency: int, feedback: bool):
    """The Ray Data pipeline over the units' rows: (engine mode) prepare the images in a small actor pool, then
    score them in `actors` actors, `actor_concurrency` batches at once each."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.verbose_stats_logs = False
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch_size, 200)))
    if mode == "engine":
        # The engine is asked in the deployment's prompt format (its image recipe), at the profile's size
        # and limits, as the router would
        limits = runtime["limits"]
        prepare_args = (mode, limits["image_size"], limits["max_image_bytes"], limits["max_image_pixels"],
                        runtime["prompt_format"]["image_recipe"])
        dataset = dataset.map_batches(
            _Prepare, fn_constructor_args=prepare_args, batch_size=batch_size,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2), num_cpus=0.5,
        )
    connections = batch_size * actor_concurrency
    dataset = dataset.map_batches(
        _Score, fn_constructor_args=(mode, urls, dimensions, policy, runtime, connections, feedback),
        batch_size=batch_size, batch_format="numpy", num_cpus=0,
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=actor_concurrency + 2,
                                           max_concurrent_calls_per_actor=actor_concurrency,
                                           enable_true_multi_threading=True),
    )
    return dataset


async def _wait_ready(url: str, policy: RetryPolicy) -> None:
    async with ScoreClient(url, policy=policy) as client:
        await client.wait_ready()
