"""The lines of a batch's output and error files (OpenAI's shapes), one builder each.

Used by the Batch API (`serve.batch.executor`) and by the district job's
`--openai-batch-output` (`serve.district.openai_batch`), so both write the same lines: an
answered line carries the route's status and body (200 in the output file, any other status
in the error file); a line refused before scoring carries only its error code and message.
"""

from __future__ import annotations

import hashlib

from serve.batch.lines import LineError
from serve.protocol import BatchLineError, BatchLineResponse, BatchOutputLine


def line_id(batch_id: str, custom_id: str) -> str:
    """A line's stable id in its batch (also its response's request_id)."""
    return "batch_req_" + hashlib.sha256(f"{batch_id}/{custom_id}".encode()).hexdigest()[:24]


def answered_line(batch_id: str, custom_id: str, status_code: int, body: dict) -> BatchOutputLine:
    """A line the route answered: its status and the route's body (an answer, or an ErrorBody)."""
    return BatchOutputLine(
        id=line_id(batch_id, custom_id),
        custom_id=custom_id,
        response=BatchLineResponse(status_code=status_code, request_id=line_id(batch_id, custom_id), body=body),
    )


def refused_line(batch_id: str, error: LineError) -> BatchOutputLine:
    """A line refused before scoring (serve.batch.lines), named by its custom_id or, without one, `line-<n>`."""
    custom_id = error.custom_id or f"line-{error.line}"
    return BatchOutputLine(
        id=line_id(batch_id, custom_id),
        custom_id=custom_id,
        error=BatchLineError(code=error.code, message=error.message),
    )


def jsonl(lines: list[BatchOutputLine]) -> str:
    """The lines as a JSONL file's text."""
    return "".join(line.model_dump_json() + "\n" for line in lines)
