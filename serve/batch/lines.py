"""A batch input file, line by line: what can be sent, and what goes to the error file with its reason.

Read here, before any scoring: a line that is not JSON, not a batch request object, for
another endpoint than the batch's, with a `custom_id` seen before in the file, or whose body
is not the endpoint's request (`serve.protocol.ScoreRequest`, `ChatCompletionRequest`). What
only the route can judge (an unknown model or dimension, no image, a remote URL, an image
over the limits) is judged by the route itself when the line is scored, and its error
answer goes to the error file the same way. A bad line never fails the batch; a batch with
no valid line ends `failed` with the reasons.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from serve.protocol import BatchInputLine, ChatCompletionRequest, ScoreRequest

BODY_MODELS = {"/v1/score": ScoreRequest, "/v1/chat/completions": ChatCompletionRequest}


@dataclass(frozen=True)
class LineRequest:
    """A line to score: its number in the file (1-based), its custom_id, its body and the byte offset of the
    line's start in the file (to read it again later without keeping its body)."""

    line: int
    custom_id: str
    body: dict
    offset: int


@dataclass(frozen=True)
class LineError:
    """A line refused before scoring: its number, its custom_id when it had one, why."""

    line: int
    custom_id: str | None
    code: str
    message: str


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}" for e in exc.errors())


def read_lines(path: Path, endpoint: str, max_lines: int) -> Iterator[LineRequest | LineError]:
    """Every line of the file, in order, as a request to score or an error; blank lines are skipped. Past
    `max_lines` requests, each further line is an error (`too_many_lines`)."""
    seen: set[str] = set()
    accepted = 0
    offset = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                yield LineError(number, None, "invalid_json", f"line {number} is not JSON: {exc}")
                continue
            custom_id = value.get("custom_id") if isinstance(value, dict) else None
            custom_id = custom_id if isinstance(custom_id, str) else None
            try:
                request = BatchInputLine.model_validate(value)
            except ValidationError as exc:
                yield LineError(number, custom_id, "invalid_request", f"line {number}: {_problems(exc)}")
                continue
            if request.url != endpoint:
                yield LineError(
                    number,
                    custom_id,
                    "wrong_endpoint",
                    f"line {number} is for {request.url}; this batch's endpoint is {endpoint}",
                )
                continue
            if request.custom_id in seen:
                yield LineError(
                    number,
                    custom_id,
                    "duplicate_custom_id",
                    f"line {number}: custom_id {request.custom_id!r} is used by an earlier line",
                )
                continue
            seen.add(request.custom_id)
            try:
                BODY_MODELS[endpoint].model_validate(request.body)
            except ValidationError as exc:
                yield LineError(number, custom_id, "invalid_body", f"line {number}: {_problems(exc)}")
                continue
            if accepted >= max_lines:
                yield LineError(
                    number, custom_id, "too_many_lines", f"line {number}: the batch's limit is {max_lines} requests"
                )
                continue
            accepted += 1
            yield LineRequest(number, request.custom_id, request.body, start)
