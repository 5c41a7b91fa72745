"""The batch runner's limits, outside Ray: an upload over `max_file_bytes` is refused (413 kind) and leaves no
file; one more batch than `max_open_batches_per_key` is a 429 kind for that key only; other keys see nothing."""

import asyncio

import pytest

from serve.batch.runner import BatchRunner
from serve.errors import FileTooLargeError, OverloadedError, UnsupportedRouteError, status_for

LINE = b'{"custom_id": "a", "method": "POST", "url": "/v1/score", "body": {"image": "aGVsbG8="}}\n'


async def _runner(tmp_path, **limits) -> BatchRunner:
    runner = BatchRunner.__new__(BatchRunner)  # its __init__ is async (Ray Serve awaits it): awaited here
    await BatchRunner.__init__(
        runner, {"max_file_bytes": 2**20, "max_open_batches_per_key": 1, **limits}, "kidsart", str(tmp_path)
    )

    async def busy(endpoint, body):  # the service stays busy: the batches stay open
        return 503, {"error": {"message": "busy", "type": "engine_unavailable", "code": 503}}

    runner._score_line = busy
    runner.executor.score_line = busy
    return runner


async def _upload(runner, owner: str, data: bytes) -> dict:
    upload = await runner.begin_upload(owner)
    await runner.append_upload(upload, data)
    return await runner.finish_upload(upload, "f.jsonl")


def test_open_batches_per_key_and_file_size_are_limited(tmp_path):
    async def scenario():
        runner = await _runner(tmp_path)
        try:
            upload = await runner.begin_upload("k1")
            with pytest.raises(FileTooLargeError) as too_big:
                await runner.append_upload(upload, b"x" * (2**20 + 1))
            assert status_for(too_big.value) == 413
            assert not list((tmp_path / "batches" / "files").iterdir())  # the partial upload is gone

            source = await _upload(runner, "k1", LINE)
            request = {"input_file_id": source["id"], "endpoint": "/v1/score", "completion_window": "24h"}
            await runner.create_batch("k1", request)
            with pytest.raises(OverloadedError, match="max_open_batches_per_key") as refused:
                await runner.create_batch("k1", request)
            assert status_for(refused.value) == 429
            with pytest.raises(UnsupportedRouteError):  # another key: the file does not exist for it
                await runner.create_batch("k2", request)
            other = await _upload(runner, "k2", LINE)
            await runner.create_batch("k2", {**request, "input_file_id": other["id"]})  # its own limit
        finally:
            runner._worker.cancel()

    asyncio.run(scenario())
