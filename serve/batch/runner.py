"""The batch-runner deployment: one replica (on the head node where routers are pinned) owning the Batch API's
files and state under `KIDSART_HOME/batches` and running the batches, however many routers there are.

Router replicas call it through a Ray Serve handle for every `/v1/files` and `/v1/batches`
route (uploads and downloads travel in chunks, so a router on another node needs no shared
disk). It scores lines back through the routers (`ScoringRouter.score_line`, the sync
routes' own handling, below their priority). On start it queues every unfinished batch
again, so killing `kidsart serve` at any moment and starting it again resumes them; batches
run one after another, in creation order.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

from ray import serve

from adapters.errors import KidsArtError
from adapters.profiles import BatchSettings
from serve.batch.executor import BatchExecutor
from serve.batch.store import BatchStore, now
from serve.errors import FileTooLargeError, OverloadedError, UnsupportedRouteError
from serve.protocol import BatchCreateRequest, BatchObject, FileDeleted, FileObject

log = logging.getLogger(__name__)

RUNNER_DEPLOYMENT = "BatchRunner"
CHUNK_BYTES = 4 * 2**20  # uploads and downloads travel between router and runner in chunks of this size


class BatchRunner:
    async def __init__(self, settings: dict, app_name: str, home: str):
        from adapters.logs import setup_logging

        setup_logging()
        self.settings = BatchSettings.model_validate(settings)
        self.app_name = app_name
        self.store = BatchStore(Path(home) / "batches")
        self.executor = BatchExecutor(
            self.store, self._score_line, max_lines=self.settings.max_lines, concurrency=self.settings.concurrency
        )
        self._router = None
        self._uploads: dict[str, tuple[str, object, int]] = {}  # upload id -> (owner, open file, bytes so far)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        for batch in self.store.unfinished():
            log.info("resuming batch %s (%s)", batch.id, batch.status)
            self._queue.put_nowait(batch.id)
        self._worker = asyncio.get_running_loop().create_task(self._run_batches())

    async def _score_line(self, endpoint: str, body: dict) -> tuple[int, dict]:
        if self._router is None:
            from serve.router import ROUTER_DEPLOYMENT

            self._router = serve.get_deployment_handle(ROUTER_DEPLOYMENT, self.app_name)
        try:
            return await self._router.score_line.remote(endpoint, body)
        except Exception as exc:  # no router replica right now (restarting): the executor retries a 503
            log.warning("batch line could not reach a router: %s", type(exc).__name__)
            return 503, {"error": {"message": "no router replica", "type": "router_unavailable", "code": 503}}

    async def _run_batches(self) -> None:
        while True:
            batch_id = await self._queue.get()
            try:
                await self.executor.run(batch_id)
            except Exception:  # one broken batch must not stop the others; it stays unfinished for a restart
                log.exception("batch %s stopped with an error", batch_id)
            self._expire_files()

    def _expire_files(self) -> None:
        for owner, file_id in self.store.expired_files():
            self.store.delete_file(owner, file_id)

    # ---- files ------------------------------------------------------------------------------------------------

    async def begin_upload(self, owner: str) -> str:
        upload_id = uuid.uuid4().hex
        self._uploads[upload_id] = (owner, open(self.store.upload_path(upload_id), "wb"), 0)
        return upload_id

    async def append_upload(self, upload_id: str, chunk: bytes) -> None:
        owner, handle, size = self._uploads[upload_id]
        size += len(chunk)
        if size > self.settings.max_file_bytes:
            self._abort(upload_id)
            raise FileTooLargeError(f"the file is over batch.max_file_bytes={self.settings.max_file_bytes} bytes")
        handle.write(chunk)
        self._uploads[upload_id] = (owner, handle, size)

    async def finish_upload(self, upload_id: str, filename: str) -> dict:
        owner, handle, _ = self._uploads.pop(upload_id)
        handle.close()
        written = self.store.upload_path(upload_id)
        return self.store.add_file(owner, filename, "batch", written, self.settings.file_retention_s).model_dump()

    def _abort(self, upload_id: str) -> None:
        _, handle, _ = self._uploads.pop(upload_id, (None, None, 0))
        if handle is not None:
            handle.close()
            self.store.upload_path(upload_id).unlink(missing_ok=True)

    async def abort_upload(self, upload_id: str) -> None:
        self._abort(upload_id)

    async def get_file(self, owner: str, file_id: str) -> dict:
        return self._file(owner, file_id).model_dump()

    def _file(self, owner: str, file_id: str) -> FileObject:
        found = self.store.get_file(owner, file_id)
        if found is None:
            raise UnsupportedRouteError(f"no file {file_id!r}")
        return found

    async def read_file(self, owner: str, file_id: str, offset: int) -> bytes:
        """Up to CHUNK_BYTES of the file's content from `offset` (empty at the end)."""
        self._file(owner, file_id)
        with open(self.store.file_path(file_id), "rb") as handle:
            handle.seek(offset)
            return handle.read(CHUNK_BYTES)

    async def delete_file(self, owner: str, file_id: str) -> dict:
        if not self.store.delete_file(owner, file_id):
            raise UnsupportedRouteError(f"no file {file_id!r}")
        return FileDeleted(id=file_id, deleted=True).model_dump()

    # ---- batches ----------------------------------------------------------------------------------------------

    async def create_batch(self, owner: str, request: dict) -> dict:
        parsed = BatchCreateRequest.model_validate(request)
        source = self.store.get_file(owner, parsed.input_file_id)
        if source is None or source.purpose != "batch":
            raise UnsupportedRouteError(f"no input file {parsed.input_file_id!r} of purpose batch")
        if self.store.open_batches(owner) >= self.settings.max_open_batches_per_key:
            raise OverloadedError(
                f"this key already has {self.settings.max_open_batches_per_key} unfinished "
                "batches (batch.max_open_batches_per_key); wait for one to end"
            )
        batch = self.store.create_batch(owner, parsed)
        self._queue.put_nowait(batch.id)
        return batch.model_dump()

    async def get_batch(self, owner: str, batch_id: str) -> dict:
        return self._batch(owner, batch_id).model_dump()

    def _batch(self, owner: str, batch_id: str) -> BatchObject:
        found = self.store.get_batch(owner, batch_id)
        if found is None:
            raise UnsupportedRouteError(f"no batch {batch_id!r}")
        return found

    async def cancel_batch(self, owner: str, batch_id: str) -> dict:
        batch = self._batch(owner, batch_id)
        if batch.status in ("validating", "in_progress", "finalizing"):
            batch = self.store.update_batch(batch_id, status="cancelling", cancelling_at=now())
            self.executor.cancel(batch_id)
        return batch.model_dump()

    async def list_batches(self, owner: str, after: str | None, limit: int) -> dict:
        return self.store.list_batches(owner, after, limit).model_dump()

    async def check_health(self) -> None:
        if self._worker.done():
            raise KidsArtError("the batch worker stopped")


def runner_options(resources: dict[str, float]) -> dict:
    """The batch runner's Ray Serve options: one replica, no CPU reservation, the routers' custom resources (so it
    stays on the head node with them), in the names a Serve config file uses."""
    actor: dict = {"num_cpus": 0}
    if resources:
        actor["resources"] = dict(resources)
    return {"name": RUNNER_DEPLOYMENT, "num_replicas": 1, "max_ongoing_requests": 1000, "ray_actor_options": actor}


def runner_deployment(settings: BatchSettings, app_name: str, resources: dict[str, float], home: Path):
    """The bound batch-runner deployment; its files and state under `home`/batches (the data directory)."""
    return (
        serve.deployment(BatchRunner)
        .options(**runner_options(resources))
        .bind(settings.model_dump(), app_name, str(home))
    )
