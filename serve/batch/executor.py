"""One batch from `validating` to `completed`, `failed` or `cancelled`, on the district job's journal.

`BatchExecutor.run(batch_id)` is idempotent: run again after a crash at any moment, it picks up
where the batch's journal (`runs/<batch id>/journal.jsonl`, fsync'd per answered line) says it
was, so no line is lost or answered twice. Lines are read and checked (`serve.batch.lines`);
each valid one is scored through `score_line(endpoint, body) -> (status, body)`, the sync
route's own handling (the router's `score_line` in the service, a fake in unit tests); lines
with the same body are scored once (the district job's duplicates) and each gets its own
answer. 429 and 503 answers (the service busy or an engine restarting) are retried with the
one retry policy; every other answer is final and goes to the output file (200) or the error
file. Cancelling stops new lines, keeps the answered ones and writes the files with them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

from serve.batch.lines import LineError, LineRequest, read_lines
from serve.batch.output import answered_line, jsonl, line_id, refused_line
from serve.batch.store import BatchStore, now
from serve.district.journal import Journal
from serve.errors import RETRYABLE_STATUSES
from serve.protocol import BatchError, BatchErrors, BatchOutputLine

log = logging.getLogger(__name__)

ScoreLine = Callable[[str, dict], Awaitable[tuple[int, dict]]]
MAX_LISTED_ERRORS = 20  # a failed batch names at most this many line errors in its `errors`


def body_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


__all__ = ["BatchExecutor", "body_hash", "line_id"]  # line_id: defined in serve.batch.output, kept importable here


class BatchExecutor:
    def __init__(
        self,
        store: BatchStore,
        score_line: ScoreLine,
        *,
        max_lines: int,
        concurrency: int = 8,
        retry_delay_s: float = 1.0,
        seed: int = 0,
    ):
        self.store = store
        self.score_line = score_line
        self.max_lines = max_lines
        self.concurrency = concurrency
        self.retry_delay_s = retry_delay_s
        self._rng = random.Random(seed)
        self._cancelled: set[str] = set()

    def cancel(self, batch_id: str) -> None:
        """Stop sending new lines of this batch (its state is set to `cancelling` by the caller)."""
        self._cancelled.add(batch_id)

    def _cancelling(self, batch_id: str) -> bool:
        if batch_id in self._cancelled:
            return True
        batch = self.store.get_batch(None, batch_id)
        return batch is not None and batch.status == "cancelling"

    async def run(self, batch_id: str) -> None:
        batch = self.store.get_batch(None, batch_id)
        owner = self.store.owner_of(batch_id)
        source = self.store.get_file(owner, batch.input_file_id)
        if source is None:
            self.store.update_batch(
                batch_id,
                status="failed",
                failed_at=now(),
                errors=BatchErrors(
                    data=[
                        BatchError(
                            code="invalid_input_file", message=f"input file {batch.input_file_id} does not exist"
                        )
                    ]
                ),
            )
            return
        requests, refused = [], []
        for item in read_lines(self.store.file_path(source.id), batch.endpoint, self.max_lines):
            (requests if isinstance(item, LineRequest) else refused).append(item)
        counts = {"total": len(requests) + len(refused), "failed": len(refused)}
        if not requests:
            errors = [BatchError(code=e.code, message=e.message, line=e.line) for e in refused[:MAX_LISTED_ERRORS]]
            if not errors:
                errors = [BatchError(code="empty_file", message=f"input file {source.id} has no request line")]
            error_file = self._write_file(owner, batch_id, "error", [refused_line(batch_id, e) for e in refused])
            self.store.update_batch(
                batch_id,
                status="failed",
                failed_at=now(),
                errors=BatchErrors(data=errors),
                error_file_id=error_file,
                request_counts={**counts, "completed": 0},
            )
            return
        if batch.status == "validating":
            batch = self.store.update_batch(
                batch_id, status="in_progress", in_progress_at=now(), request_counts={**counts, "completed": 0}
            )
        with Journal(self.store.run_dir(batch_id)) as journal:
            await self._answer_all(batch_id, batch.endpoint, requests, journal, counts)
            answered = dict(journal.records)
        self._finish(batch_id, owner, requests, refused, answered)

    async def _answer_all(
        self, batch_id: str, endpoint: str, requests: list[LineRequest], journal: Journal, counts: dict
    ) -> None:
        pending = [r for r in requests if r.custom_id not in journal.records]
        by_body: dict[str, asyncio.Future] = {}  # one scoring per distinct body; duplicates share its answer
        gate = asyncio.Semaphore(self.concurrency)
        progress = {"done": len(requests) - len(pending)}

        async def answer(request: LineRequest) -> None:
            digest = body_hash(request.body)
            if self._cancelling(batch_id):
                return
            reused = journal.find_content(digest, "")
            if reused is None:
                if digest not in by_body:
                    by_body[digest] = asyncio.ensure_future(self._score(endpoint, request.body, gate, batch_id))
                status, body = await by_body[digest]
            else:
                status, body = reused["status_code"], reused["body"]
            if status is None:  # cancelled while waiting for a retry
                return
            journal.append(
                [
                    {
                        "key": request.custom_id,
                        "sha256": digest,
                        "description": "",
                        "status_code": status,
                        "body": body,
                        "status": "ok" if status == 200 else "error",
                    }
                ]
            )
            progress["done"] += 1
            if progress["done"] % 8 == 0 or progress["done"] == len(requests):
                self._update_counts(batch_id, journal, counts)

        await asyncio.gather(*(answer(r) for r in pending))
        self._update_counts(batch_id, journal, counts)

    async def _score(
        self, endpoint: str, body: dict, gate: asyncio.Semaphore, batch_id: str
    ) -> tuple[int | None, dict]:
        """The route's final answer to one body; 429/503 retried (backoff with jitter) until cancelled."""
        attempt = 0
        while True:
            async with gate:
                if self._cancelling(batch_id):
                    return None, {}
                status, answer = await self.score_line(endpoint, body)
            if status not in RETRYABLE_STATUSES:
                return status, answer
            attempt += 1
            delay = min(30.0, self.retry_delay_s * 2 ** min(attempt - 1, 5)) * (0.5 + self._rng.random())
            log.warning(
                "batch %s: a line answered %d; retrying in %.1f s (attempt %d)", batch_id, status, delay, attempt
            )
            await asyncio.sleep(delay)

    def _update_counts(self, batch_id: str, journal: Journal, counts: dict) -> None:
        ok = sum(1 for r in journal.records.values() if r["status_code"] == 200)
        failed = counts["failed"] + sum(1 for r in journal.records.values() if r["status_code"] != 200)
        self.store.update_batch(batch_id, request_counts={"total": counts["total"], "completed": ok, "failed": failed})

    def _finish(
        self,
        batch_id: str,
        owner: str,
        requests: list[LineRequest],
        refused: list[LineError],
        answered: dict[str, dict],
    ) -> None:
        """Output and error files in input order; the batch completed, or cancelled when it was cancelling."""
        cancelling = self._cancelling(batch_id)
        self.store.update_batch(
            batch_id,
            status="cancelling" if cancelling else "finalizing",
            **({} if cancelling else {"finalizing_at": now()}),
        )
        output, errors = [], [refused_line(batch_id, e) for e in refused]
        for request in requests:
            record = answered.get(request.custom_id)
            if record is None:
                continue  # not answered: cancelled before it was sent
            line = answered_line(batch_id, request.custom_id, record["status_code"], record["body"])
            (output if record["status_code"] == 200 else errors).append(line)
        output_id = self._write_file(owner, batch_id, "output", output) if output else None
        error_id = self._write_file(owner, batch_id, "error", errors) if errors else None
        end = (
            {"status": "cancelled", "cancelled_at": now()}
            if cancelling
            else {"status": "completed", "completed_at": now()}
        )
        self.store.update_batch(batch_id, output_file_id=output_id, error_file_id=error_id, **end)
        self._cancelled.discard(batch_id)

    def _write_file(self, owner: str, batch_id: str, kind: str, lines: list[BatchOutputLine]) -> str | None:
        if not lines:
            return None
        path: Path = self.store.new_upload_path()
        path.write_text(jsonl(lines), encoding="utf-8")
        return self.store.add_file(owner, f"{batch_id}_{kind}.jsonl", "batch_output", path, None).id
