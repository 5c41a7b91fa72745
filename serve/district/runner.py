"""Run a district job: plan what is left, score it through the router, journal every result.

Planning (also what makes `--resume` exact): an input whose key and content hash
are in the journal is done; an input with a local problem (missing, unreadable,
empty, too large) gets an error record at once; an input whose content (and
description) was already scored under another key reuses that result; everything
else is grouped by content, so each distinct image is sent once and all its paths
get a record. Records are committed in groups by one writer (one fsync per group)
and the progress bar moves only after the fsync.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from serve.district.client import RetryPolicy, ScoreClient
from serve.district.inputs import InputItem, InputReadError, read_input_bytes
from serve.district.journal import Journal

log = logging.getLogger(__name__)


@dataclass
class Unit:
    """One distinct image to score (content + description) and the input keys that share it."""

    items: list[InputItem]

    @property
    def first(self) -> InputItem:
        return self.items[0]


@dataclass
class Plan:
    already_done: int
    immediate: list[dict]
    units: list[Unit]

    @property
    def pending_inputs(self) -> int:
        return len(self.immediate) + sum(len(u.items) for u in self.units)


@dataclass
class RunStats:
    """What happened in this invocation (not counting what earlier runs did)."""

    scored: int = 0
    requests: int = 0
    reused: int = 0
    local_errors: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    first_result_s: float | None = None
    error_types: Counter = field(default_factory=Counter)


def _base_record(item: InputItem) -> dict:
    return {"key": item.key, "sha256": item.sha256, "description": item.description}


def plan_work(items: list[InputItem], journal: Journal) -> Plan:
    already_done = 0
    immediate: list[dict] = []
    groups: dict[tuple[str, str], Unit] = {}
    units: list[Unit] = []
    for item in items:
        if journal.is_done(item.key, item.sha256):
            already_done += 1
            continue
        if item.local_error_type:
            immediate.append(
                {
                    **_base_record(item),
                    "status": "error",
                    "source": "local",
                    "error_type": item.local_error_type,
                    "error": item.local_error,
                    "t": time.time(),
                }
            )
            continue
        previous = journal.find_content(item.sha256, item.description)
        if previous is not None:
            record = {k: v for k, v in previous.items() if k not in ("key", "t", "source", "reused_from")}
            immediate.append(
                {**record, **_base_record(item), "source": "reused", "reused_from": previous["key"], "t": time.time()}
            )
            continue
        content = (item.sha256, item.description)
        if content in groups:
            groups[content].items.append(item)
        else:
            groups[content] = Unit(items=[item])
            units.append(groups[content])
    return Plan(already_done=already_done, immediate=immediate, units=units)


def unit_records(unit: Unit, result: dict, sha256: str) -> list[dict]:
    """Journal records for every input of a unit from one scoring result."""
    now = time.time()
    records = []
    for index, item in enumerate(unit.items):
        record = {**_base_record(item), **result, "sha256": sha256, "t": now, "source": "router"}
        if index:
            record["source"] = "reused"
            record["reused_from"] = unit.first.key
        records.append(record)
    return records


def read_unit_bytes(unit: Unit) -> tuple[bytes | None, str, dict | None]:
    """(data, sha256, error_result): read the input's image again (its file, or its batch line) and hash what is
    sent."""
    import hashlib

    try:
        data = read_input_bytes(unit.first)
    except InputReadError as exc:
        return None, unit.first.sha256, {"status": "error", "error_type": exc.kind, "error": str(exc)}
    sha = hashlib.sha256(data).hexdigest()
    if sha != unit.first.sha256:
        log.warning("%s changed since it was discovered; scoring its current content", unit.first.key)
    return data, sha, None


class _Committer:
    """Single writer: gathers finished records, appends them in one fsync'd block, then counts them."""

    def __init__(self, journal: Journal, progress, stats: RunStats):
        self.journal = journal
        self.progress = progress
        self.stats = stats
        self.queue: asyncio.Queue = asyncio.Queue()

    def put(self, records: list[dict]) -> None:
        self.queue.put_nowait(records)

    async def run(self) -> None:
        done = False
        while not done:
            batch = [await self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            if batch[-1] is None:
                done = True
                batch.pop()
            records = [record for records in batch if records is not None for record in records]
            if not records:
                continue
            await asyncio.to_thread(self.journal.append, records)
            for record in records:
                if record["status"] == "error":
                    self.stats.error_types[record.get("error_type", "error")] += 1
            if self.progress is not None:
                self.progress.update(len(records))
                if self.stats.error_types:
                    self.progress.set_postfix(errors=sum(self.stats.error_types.values()), refresh=False)

    async def close(self) -> None:
        self.queue.put_nowait(None)


async def score_units_async(
    plan: Plan,
    journal: Journal,
    url: str,
    *,
    concurrency: int,
    dimensions: list[str] | None,
    policy: RetryPolicy,
    progress=None,
    feedback: bool = False,
) -> RunStats:
    stats = RunStats(
        local_errors=sum(1 for r in plan.immediate if r.get("source") == "local"),
        reused=sum(1 for r in plan.immediate if r.get("source") == "reused"),
    )
    committer = _Committer(journal, progress, stats)
    started = time.monotonic()
    queue: asyncio.Queue[Unit] = asyncio.Queue()
    for unit in plan.units:
        queue.put_nowait(unit)
    async with ScoreClient(
        url, dimensions=dimensions, policy=policy, max_connections=concurrency, feedback=feedback
    ) as client:
        writer = asyncio.create_task(committer.run())
        try:
            if plan.immediate:
                committer.put(plan.immediate)
            if plan.units:
                await client.wait_ready()

            async def worker() -> None:
                while True:
                    try:
                        unit = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    data, sha, error = await asyncio.to_thread(read_unit_bytes, unit)
                    if error is None:
                        result = await client.score(data, request_id=unit.first.key, description=unit.first.description)
                        stats.requests += 1
                    else:
                        result = error
                    records = unit_records(unit, result, sha)
                    stats.scored += 1 if result["status"] == "ok" else 0
                    stats.reused += len(records) - 1
                    committer.put(records)

            async with asyncio.TaskGroup() as group:
                for _ in range(max(1, min(concurrency, len(plan.units)))):
                    group.create_task(worker())
        finally:
            await committer.close()
            await writer
            stats.retries = client.retries
            stats.elapsed_s = time.monotonic() - started
    return stats


def score_units(
    plan: Plan,
    journal: Journal,
    url: str,
    *,
    concurrency: int,
    dimensions: list[str] | None,
    policy: RetryPolicy,
    progress=None,
    feedback: bool = False,
) -> RunStats:
    """Synchronous entry point; exceptions from any worker surface here (the journal keeps what finished)."""
    try:
        return asyncio.run(
            score_units_async(
                plan,
                journal,
                url,
                concurrency=concurrency,
                dimensions=dimensions,
                policy=policy,
                progress=progress,
                feedback=feedback,
            )
        )
    except ExceptionGroup as group:  # TaskGroup wraps worker errors; surface the first one
        raise group.exceptions[0] from None
