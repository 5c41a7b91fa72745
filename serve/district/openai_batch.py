"""The district job on an OpenAI batch input file, and the Batch API's output and error files beside its CSV.

`kidsart score-district BATCH.jsonl` (or `--input-format openai-batch`) reads the file the
OpenAI Batch API takes: its endpoint is the url of the first line that parses (`/v1/score` or
`/v1/chat/completions`); every line `serve.batch.lines.read_lines` refuses is listed as skipped
with its reason; every other line is one input keyed by its custom_id. Only where the line
is (its byte offset) and what it asks are kept: its image is read again from the file when it
is hashed and when it is sent (`line_image`), so the data URLs are never all in memory.

Once the run's rubric, dimensions and feedback are known, `check_lines` makes each line that
asks for something else (other dimensions, feedback or not, an unknown model) an error row
naming the difference and the option to use, never a silently different answer.

`--openai-batch-output FILE` (`write_batch_files`): one output line per answered line, in input
order, with the body the sync route gives (`ScoreAnswer`, or a `ChatCompletion` carrying it);
refused lines and error rows go to `<FILE stem>.errors.jsonl`, as the Batch API's error file.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from adapters.datafiles import atomic_write
from adapters.errors import InputError
from adapters.images import decode_base64_image
from serve.batch.lines import LineError, LineRequest, read_lines
from serve.batch.output import answered_line, jsonl, line_id, refused_line
from serve.chat import image_and_text, model_dimensions
from serve.errors import MalformedRequestError, status_for_kind
from serve.protocol import (
    BatchInputLine,
    ChatCompletion,
    ChatCompletionRequest,
    ErrorBody,
    ErrorDetail,
    ScoreAnswer,
    ScoreRequest,
)

if TYPE_CHECKING:
    from adapters.rubric import Rubric
    from serve.district.inputs import InputItem

SCORE_ENDPOINT = "/v1/score"
CHAT_ENDPOINT = "/v1/chat/completions"
DIFFERS_FROM_RUN = "differs_from_run"  # the error type of a line asking for something else than the run scores
# statuses of error rows the router never answered (else status_for_kind of their type, 400 by default)
LOCAL_STATUSES = {DIFFERS_FROM_RUN: 422, "invalid_response": 502}


@dataclass(frozen=True)
class BatchLine:
    """Where an input of an OpenAI batch file is (its line's number and byte offset) and what the line asks."""

    line: int
    offset: int
    endpoint: str
    model: str | None = None  # a chat line's model: the rubric (all dimensions) or one dimension
    dimensions: tuple[str, ...] | None = None  # a score line's `dimensions` (None: all)
    feedback: bool = False
    request_id: str | None = None  # a score line's `id`, which the sync route echoes in its answer


@dataclass(frozen=True)
class BatchEntry:
    """One line to score: its custom_id, its description, where it is, and why it cannot be sent (if so)."""

    custom_id: str
    description: str
    line: BatchLine
    error: InputError | None = None


def batch_endpoint(path: Path) -> str | None:
    """The url of the first line of `path` that is a batch request, or None when no line is."""
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                return BatchInputLine.model_validate_json(raw).url
            except ValidationError:
                continue
    return None


def read_batch_file(path: Path, endpoint: str) -> tuple[list[BatchEntry], list[LineError]]:
    """Every line of the file in order: the entries to score and the lines refused (as the Batch API would)."""
    entries: list[BatchEntry] = []
    refused: list[LineError] = []
    for read in read_lines(path, endpoint, sys.maxsize):
        if isinstance(read, LineError):
            refused.append(read)
            continue
        entries.append(_entry(read, endpoint))
    return entries, refused


def _entry(read: LineRequest, endpoint: str) -> BatchEntry:
    try:
        _, asks = _image_and_asks(endpoint, read.body)
    except InputError as exc:  # a chat line without one data-URL image: an error row
        line = BatchLine(line=read.line, offset=read.offset, endpoint=endpoint)
        return BatchEntry(read.custom_id, "", line, _naming(exc, read.custom_id))
    description = asks.pop("description")
    return BatchEntry(read.custom_id, description, BatchLine(line=read.line, offset=read.offset, **asks))


def _image_and_asks(endpoint: str, body: dict) -> tuple[str, dict]:
    """A line body's image (base64 or a data URL) and what the line asks (BatchLine's fields and its
    description); raises RequestValidationFailed for a chat line without one data-URL image."""
    if endpoint == SCORE_ENDPOINT:
        score = ScoreRequest.model_validate(body)
        dimensions = tuple(score.dimensions) if score.dimensions else None
        asks = {"dimensions": dimensions, "feedback": score.feedback, "request_id": score.id}
        return score.image, {"endpoint": endpoint, "description": score.description or "", **asks}
    chat = ChatCompletionRequest.model_validate(body)
    image, text = image_and_text(chat.messages)
    return image, {"endpoint": endpoint, "description": text or "", "model": chat.model, "feedback": chat.feedback}


def _naming(exc: InputError, custom_id: str) -> InputError:
    """The same error, its message naming the line's custom_id."""
    return type(exc)(f"custom_id {custom_id!r}: {exc}")


def line_image(path: Path, offset: int) -> bytes:
    """The image of the line at byte `offset` of the batch file, read again and decoded. Raises InputError
    (its kind: invalid_image for bad base64 or a remote URL as `image`, invalid_request for a chat line without one
    data-URL image, malformed_request when the line changed since it was read) and OSError."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        raw = handle.readline()
    try:
        value = BatchInputLine.model_validate(json.loads(raw))
        image, _ = _image_and_asks(value.url, value.body)
    except (ValueError, ValidationError) as exc:  # pydantic's ValidationError is a ValueError too
        raise MalformedRequestError(
            f"the line at byte {offset} of {path} is no longer a batch request: the file changed during the run"
        ) from exc
    except InputError as exc:
        raise _naming(exc, value.custom_id) from exc
    try:
        return decode_base64_image(image)
    except InputError as exc:
        raise _naming(exc, value.custom_id) from exc


def check_lines(items: list[InputItem], rubric: Rubric, dimensions: list[str], feedback: bool) -> None:
    """Give each batch line that asks for something else than this run scores (its dimensions, feedback, its
    model) a local error naming the difference and the option to use. A chat line's text is its description
    only for rubrics that read descriptions (as the chat route)."""
    for item in items:
        line = item.batch
        if line is None or item.local_error_type:
            continue
        if line.endpoint == CHAT_ENDPOINT and not rubric.uses_description:
            item.description = ""
        problem = _difference(line, rubric, dimensions, feedback)
        if problem is not None:
            item.local_error_type, item.local_error = problem[0], f"custom_id {item.key!r}: {problem[1]}"


def _difference(line: BatchLine, rubric: Rubric, dimensions: list[str], feedback: bool) -> tuple[str, str] | None:
    """(error type, message) when the line asks for something else than the run, else None."""
    try:
        if line.endpoint == CHAT_ENDPOINT:
            asked = model_dimensions(line.model, rubric.name, rubric.dimension_names)
        else:
            asked = list(line.dimensions) if line.dimensions else None
        names = [d.name for d in rubric.select(asked)]
    except InputError as exc:  # an unknown model or dimension: the route's own refusal
        return exc.kind, str(exc)
    if set(names) != set(dimensions):
        every = set(names) == set(rubric.dimension_names)
        option = "in a run without --dimensions" if every else f"in a run with --dimensions {','.join(names)}"
        return (
            DIFFERS_FROM_RUN,
            f"the line asks for dimensions {names}, this run scores {dimensions}: score it {option}",
        )
    if line.feedback and not feedback:
        return DIFFERS_FROM_RUN, "the line asks for feedback, this run writes none: score it in a run with --feedback"
    if feedback and not line.feedback:
        return (
            DIFFERS_FROM_RUN,
            "the line asks for no feedback, this run writes it: score it in a run without --feedback",
        )
    return None


def errors_path(output: Path) -> Path:
    """Where the error file of `output` goes: `<stem>.errors.jsonl` beside it."""
    return output.with_name(f"{output.stem}.errors.jsonl")


def write_batch_files(
    output: Path,
    source: str,
    items: list[InputItem],
    records: dict[str, dict],
    refused: list[LineError],
    rubric: Rubric,
) -> list[Path]:
    """The output file (every answered line, in input order) and, when there are errors, the error file (refused
    lines and error rows, in input order); a line still pending is in neither. Line ids are stable per input file
    (`source`)."""
    answered, errors = [], [(e.line, refused_line(source, e)) for e in refused]
    for item in items:
        line, record = item.batch, records.get(item.key)
        if line is None or record is None or record.get("sha256", "") != item.sha256:
            continue
        if record["status"] == "ok":
            answered.append(answered_line(source, item.key, 200, _answer_body(source, item.key, line, record, rubric)))
            continue
        kind = record.get("error_type", "error")
        status = record.get("http_status") or 0
        if status < 400:  # not the router's error answer: a local error, or an answer this client could not use
            status = LOCAL_STATUSES.get(kind) or status_for_kind(kind)
        body = ErrorBody(error=ErrorDetail(message=record.get("error", ""), type=kind, code=status)).model_dump()
        errors.append((line.line, answered_line(source, item.key, status, body)))
    errors.sort(key=lambda pair: pair[0])
    output.parent.mkdir(parents=True, exist_ok=True)
    files = [atomic_write(output, lambda tmp: tmp.write_text(jsonl(answered), encoding="utf-8"))]
    error_file = errors_path(output)
    if errors:
        text = jsonl([line for _, line in errors])
        files.append(atomic_write(error_file, lambda tmp: tmp.write_text(text, encoding="utf-8")))
    else:
        error_file.unlink(missing_ok=True)  # from an earlier run of the same output
    return files


def _answer_body(source: str, custom_id: str, line: BatchLine, record: dict, rubric: Rubric) -> dict:
    """What the sync route answers to the line: its ScoreAnswer, or for a chat line the ChatCompletion carrying it
    (with a stable chatcmpl- id, and no usage: prompt tokens are not counted here)."""
    if line.endpoint == SCORE_ENDPOINT:
        answer = ScoreAnswer.of(rubric, line.request_id or custom_id, record["scores"], record.get("feedback"))
        return answer.model_dump(mode="json", exclude_none=True)
    chat_id = "chatcmpl-" + line_id(source, custom_id).removeprefix("batch_req_")
    answer = ScoreAnswer.of(rubric, chat_id, record["scores"], record.get("feedback"))
    return ChatCompletion.of(answer, line.model, chat_id, None).model_dump(mode="json", exclude_none=True)
