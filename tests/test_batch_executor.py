"""A batch run by serve/batch/executor.py against a fake route: files, counts, duplicates, retries, a crash, cancel."""

import asyncio
import json

import pytest

from serve.batch.executor import BatchExecutor
from serve.batch.store import BatchStore
from serve.protocol import BatchCreateRequest, BatchOutputLine


def _line(custom_id: str, image: str = "AAAA") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/score", "body": {"image": image}})


class FakeRoute:
    """The sync route: 200 with a score per image, 400 for image 'bad', 503 for the first `busy` calls."""

    def __init__(self, busy: int = 0, crash_after: int | None = None):
        self.calls: list[dict] = []
        self.busy = busy
        self.crash_after = crash_after

    async def __call__(self, endpoint: str, body: dict) -> tuple[int, dict]:
        await asyncio.sleep(0)
        self.calls.append(body)
        if self.crash_after is not None and len(self.calls) > self.crash_after:
            raise KeyboardInterrupt("the process dies here")
        if self.busy:
            self.busy -= 1
            return 503, {"error": {"message": "restarting", "type": "engine_unavailable", "code": 503}}
        if body["image"] == "bad":
            return 400, {"error": {"message": "not an image", "type": "image_decode_error", "code": 400}}
        return 200, {"id": "x", "rubric": "kidsartbench", "scores": {"realism": {"score": float(len(body["image"]))}}}


def _batch(tmp_path, lines: list[str]):
    store = BatchStore(tmp_path / "home")
    upload = store.new_upload_path()
    upload.write_text("\n".join(lines) + "\n")
    source = store.add_file("key", "in.jsonl", "batch", upload, None)
    batch = store.create_batch(
        "key", BatchCreateRequest(input_file_id=source.id, endpoint="/v1/score", completion_window="24h")
    )
    return store, batch


def _read(store: BatchStore, file_id: str | None) -> list[BatchOutputLine]:
    if file_id is None:
        return []
    text = store.file_path(file_id).read_text()
    return [BatchOutputLine.model_validate_json(line) for line in text.splitlines()]


def test_every_line_is_answered_once_good_to_output_bad_to_errors_duplicates_scored_once(tmp_path):
    lines = [_line("a", "AAAA"), "not json", _line("b", "bad"), _line("c", "AAAA"), _line("d", "BBBBBB")]
    store, batch = _batch(tmp_path, lines)
    route = FakeRoute(busy=2)
    asyncio.run(BatchExecutor(store, route, max_lines=100, retry_delay_s=0.01).run(batch.id))
    done = store.get_batch("key", batch.id)
    assert done.status == "completed" and done.completed_at and done.finalizing_at
    assert done.request_counts.model_dump() == {"total": 5, "completed": 3, "failed": 2}
    output = _read(store, done.output_file_id)
    assert [o.custom_id for o in output] == ["a", "c", "d"]  # input order
    assert output[2].response.status_code == 200 and output[2].response.body["scores"]["realism"]["score"] == 6.0
    errors = {e.custom_id: e for e in _read(store, done.error_file_id)}
    assert errors["line-2"].error.code == "invalid_json" and errors["b"].response.status_code == 400
    # three distinct bodies (a and c share one scoring) and the two 503s retried; without sharing it would be 6
    assert len(route.calls) == 3 + 2
    assert store.get_file("key", done.output_file_id).purpose == "batch_output"


def test_a_crash_mid_batch_then_a_resume_answers_every_line_exactly_once(tmp_path):
    lines = [_line(f"l{i}", "A" * (i + 1)) for i in range(12)]
    store, batch = _batch(tmp_path, lines)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(BatchExecutor(store, FakeRoute(crash_after=5), max_lines=100, concurrency=2).run(batch.id))
    assert store.get_batch("key", batch.id).status == "in_progress"
    assert [b.id for b in BatchStore(tmp_path / "home").unfinished()] == [batch.id]  # found again after a restart
    route = FakeRoute()
    asyncio.run(BatchExecutor(BatchStore(tmp_path / "home"), route, max_lines=100).run(batch.id))
    done = store.get_batch("key", batch.id)
    output = _read(store, done.output_file_id)
    assert done.status == "completed" and [o.custom_id for o in output] == [f"l{i}" for i in range(12)]
    assert len(route.calls) <= 12 - 4  # the lines journaled before the crash were not sent again
    journal = (store.run_dir(batch.id) / "journal.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["key"] for line in journal) == sorted(f"l{i}" for i in range(12))


def test_cancel_stops_new_lines_and_keeps_the_answered_ones(tmp_path):
    lines = [_line(f"l{i}", "A" * (i + 1)) for i in range(20)]
    store, batch = _batch(tmp_path, lines)
    executor = BatchExecutor(store, FakeRoute(), max_lines=100, concurrency=1)
    route = executor.score_line

    async def cancelling_route(endpoint, body):
        answer = await route(endpoint, body)
        if len(route.calls) == 5:
            store.update_batch(batch.id, status="cancelling", cancelling_at=1)
            executor.cancel(batch.id)
        return answer

    executor.score_line = cancelling_route
    asyncio.run(executor.run(batch.id))
    done = store.get_batch("key", batch.id)
    output = _read(store, done.output_file_id)
    assert done.status == "cancelled" and done.cancelled_at and len(output) == 5
    assert [o.custom_id for o in output] == [f"l{i}" for i in range(5)]


def test_a_batch_without_a_valid_line_fails_with_the_reasons(tmp_path):
    store, batch = _batch(tmp_path, ["nope", json.dumps({"custom_id": "x"})])
    asyncio.run(BatchExecutor(store, FakeRoute(), max_lines=100).run(batch.id))
    failed = store.get_batch("key", batch.id)
    assert failed.status == "failed" and failed.failed_at
    assert [e.code for e in failed.errors.data] == ["invalid_json", "invalid_request"]
    assert len(_read(store, failed.error_file_id)) == 2 and failed.output_file_id is None
