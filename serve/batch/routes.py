"""The router's side of the Files and Batch APIs: each route's work, done through the batch runner's handle.

`serve.router.ScoringRouter` declares the routes (keyed like every `/v1/*` route) and hands
each request here with its owner (the key's digest); answers are the protocol's objects.
An upload streams from the request into the runner in chunks (never whole in memory); a
download streams back the same way. Errors the runner raises come back as the typed errors
they are, so the router answers them with their statuses.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import StreamingResponse

from adapters.errors import KidsArtError
from serve.batch.runner import CHUNK_BYTES
from serve.errors import FileTooLargeError, MalformedRequestError, RequestValidationFailed
from serve.http_parts import json_answer, parse_json, validated
from serve.protocol import BatchCreateRequest, BatchList, BatchObject, FileDeleted, FileObject

MAX_PAGE = 100


class BatchRoutes:
    def __init__(self, runner, max_file_bytes: int):
        self.runner = runner
        self.max_file_bytes = max_file_bytes

    async def _call(self, method: str, *args):
        """A runner call; the runner's typed error raised here as itself (Ray wraps it)."""
        try:
            return await getattr(self.runner, method).remote(*args)
        except Exception as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, KidsArtError):
                raise cause from None
            raise

    async def create_file(self, owner: str, request: Request):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_file_bytes + 64 * 1024:
            raise FileTooLargeError(f"the upload is {declared} bytes; batch.max_file_bytes is {self.max_file_bytes}")
        try:
            form = await request.form(max_files=1, max_fields=4)
        except Exception as exc:  # starlette raises several types for broken multipart
            raise MalformedRequestError(f"the multipart body could not be parsed: {exc}") from exc
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose != "batch":
            raise RequestValidationFailed(f"purpose must be 'batch', not {purpose!r}")
        if upload is None or isinstance(upload, str):
            raise RequestValidationFailed("the upload needs a file field named 'file' (a JSONL file)")
        upload_id = await self._call("begin_upload", owner)
        try:
            while chunk := await upload.read(CHUNK_BYTES):
                await self._call("append_upload", upload_id, chunk)
            stored = await self._call("finish_upload", upload_id, upload.filename or "upload.jsonl")
        except BaseException:
            await self._call("abort_upload", upload_id)
            raise
        return json_answer(FileObject.model_validate(stored))

    async def get_file(self, owner: str, file_id: str):
        return json_answer(FileObject.model_validate(await self._call("get_file", owner, file_id)))

    async def file_content(self, owner: str, file_id: str):
        await self._call("get_file", owner, file_id)  # 404 before the stream starts

        async def chunks():
            offset = 0
            while chunk := await self._call("read_file", owner, file_id, offset):
                offset += len(chunk)
                yield chunk

        return StreamingResponse(chunks(), media_type="application/jsonl")

    async def delete_file(self, owner: str, file_id: str):
        return json_answer(FileDeleted.model_validate(await self._call("delete_file", owner, file_id)))

    async def create_batch(self, owner: str, body: bytes):
        parsed = validated(BatchCreateRequest, parse_json(body) if body else None, "batch request")
        return json_answer(BatchObject.model_validate(await self._call("create_batch", owner, parsed.model_dump())))

    async def get_batch(self, owner: str, batch_id: str):
        return json_answer(BatchObject.model_validate(await self._call("get_batch", owner, batch_id)))

    async def cancel_batch(self, owner: str, batch_id: str):
        return json_answer(BatchObject.model_validate(await self._call("cancel_batch", owner, batch_id)))

    async def list_batches(self, owner: str, after: str | None, limit: str | None):
        try:
            count = 20 if limit is None else int(limit)
        except ValueError as exc:
            raise RequestValidationFailed(f"limit must be a whole number, not {limit!r}") from exc
        if not 1 <= count <= MAX_PAGE:
            raise RequestValidationFailed(f"limit must be between 1 and {MAX_PAGE}")
        return json_answer(BatchList.model_validate(await self._call("list_batches", owner, after, count)))
