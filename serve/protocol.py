"""The router's requests and answers, one definition each (as vLLM's `protocol.py`).

The router builds every answer from these models and FastAPI publishes them in
`/openapi.json`; every client of ours (`serve.client`, the district job, the locust users,
the benchmark's router phase) parses answers with them. Nothing else builds or parses a
score answer by hand.

- `ScoreRequest` -> `ScoreAnswer` (`POST /v1/score`): per dimension a `DimensionScore`; for
  a rubric with points (creativity5), each dimension's `points` and the fixed fields
  `total` / `total_max` (the district CSV keeps its column `total_100`);
- `ModelListing` (`GET /v1/models`): the rubric model, one model per dimension, the
  feedback adapter and the input limits;
- `ChatCompletionRequest` -> `ChatCompletion` (`POST /v1/chat/completions`): the subset of
  OpenAI's chat API we accept and give; the assistant message's content is a `ScoreAnswer`
  as JSON;
- `PromoteRequest` -> `AdapterSetStatus` (`POST /v1/admin/adapters/promote`, `.../rollback`,
  `GET /v1/admin/adapters`): the served adapter set (`ServedSet`), its generation and history;
- `ErrorBody`: every error, in OpenAI's shape, so the `openai` client raises its own
  exception class with our message.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.calibration import Calibration
from adapters.datafiles import StrictModel
from adapters.feedback import FEEDBACK_MODULE
from adapters.limits import InputLimits

MAX_DESCRIPTION_CHARS = 4000


class ScoreRequest(StrictModel):
    """JSON body of POST /v1/score (multipart takes the same fields, the image as a file field `image`)."""

    image: str = Field(description="The artwork as base64 or a data:image/...;base64 URL.")
    dimensions: list[str] | None = Field(default=None, max_length=64, description="Dimensions to score (default: all).")
    id: str | None = Field(default=None, max_length=256, description="Caller's identifier, echoed back.")
    description: str | None = Field(
        default=None,
        max_length=MAX_DESCRIPTION_CHARS,
        description="Text description of the artwork (read by rubrics that ask for it, and by the feedback adapter).",
    )
    feedback: bool = Field(
        default=False, description="Also return a teacher's comment from the deployment's feedback adapter."
    )


class DimensionScore(StrictModel):
    """One dimension's RAIL score."""

    score: float = Field(description="Expected level sum_k k * p(k) over the score tokens (1..5).")
    probs: list[float] = Field(description="p(1)..p(5): the model's distribution over the levels (sums to 1).")
    std: float = Field(ge=0.0, description="Standard deviation of that distribution (how unsure the model is).")
    adapter: str = Field(description="The adapter that scored it, name@version.")
    points: float | None = Field(default=None, description="For rubrics with points: this dimension's points.")
    interval: list[float] | None = Field(
        default=None,
        min_length=2,
        max_length=2,
        description="[low, high]: where the teacher's level lies with probability `interval_level` (split-conformal, "
        "measured by `kidsart calibrate`); absent when the deployment is not calibrated for this adapter.",
    )
    interval_level: float | None = Field(default=None, description="The coverage the interval was built for.")


class Feedback(StrictModel):
    """A teacher's comment written by the feedback adapter, with the scores in its prompt."""

    text: str = Field(description="The comment.")
    adapter: str = Field(description="The feedback adapter, name@version.")


class ScoreAnswer(StrictModel):
    """Answer of POST /v1/score (and the content of a chat completion's message)."""

    id: str = Field(description="The request's `id`, or one made by the router.")
    rubric: str = Field(description="The rubric scored.")
    scores: dict[str, DimensionScore] = Field(description="Dimension -> its score, for every dimension asked for.")
    total: float | None = Field(
        default=None, description="For rubrics with points, when every dimension was scored: the sum of the points."
    )
    total_max: float | None = Field(default=None, description="The most `total` can be (e.g. 100).")
    feedback: Feedback | None = Field(default=None, description="The comment, when `feedback` was asked.")

    @classmethod
    def of(cls, rubric, request_id: str, scores: dict[str, dict], feedback: dict | None = None) -> ScoreAnswer:
        """The answer for `scores` (dimension -> score, probs, std, adapter) on `rubric`, with its points and total."""
        scores, total = rubric.with_points(scores)
        return cls(
            id=request_id,
            rubric=rubric.name,
            scores=scores,
            feedback=feedback,
            total=total,
            total_max=rubric.total_max if total is not None else None,
        )

    def missing(self, dimensions: list[str]) -> list[str]:
        """The dimensions asked for that the answer lacks."""
        return [d for d in dimensions if d not in self.scores]


class ModelCard(StrictModel):
    id: str = Field(description="The rubric's name (all its dimensions) or one dimension's.")
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time of the listing.")
    owned_by: str = "kidsart"
    description: str = Field(description="What the model scores.")
    adapter: str | None = Field(default=None, description="A dimension's adapter, name@version.")


class ModelListing(StrictModel):
    """Answer of GET /v1/models: OpenAI's listing plus what a client without a profile needs."""

    object: Literal["list"] = "list"
    data: list[ModelCard]
    feedback_adapter: str | None = Field(default=None, description="The feedback adapter, or None (feedback: 422).")
    limits: InputLimits = Field(description="Image size and input limits the router applies.")


class ErrorDetail(StrictModel):
    message: str = Field(description="What went wrong, for a person.")
    type: str = Field(description="The error's kind (e.g. image_too_large, engine_unavailable).")
    code: int = Field(description="The HTTP status.")


class ErrorBody(StrictModel):
    """Every error answer (OpenAI's shape)."""

    error: ErrorDetail


class ImageURL(BaseModel):
    url: str = Field(description="A data URL (data:image/...;base64,...); remote URLs are refused.")


class ContentPart(BaseModel):
    """A part of a user message: text, or the artwork as an image_url."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="'text' or 'image_url' (other parts are ignored).")
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat request the router reads; other OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="The rubric's name (every dimension) or one dimension's.")
    messages: list[ChatMessage] = Field(
        min_length=1,
        description="Exactly one image_url part in the user messages; their text is the artwork's description.",
    )
    feedback: bool = Field(
        default=False, description="Also write a teacher's comment (the openai client's extra_body)."
    )


class ChatResponseMessage(StrictModel):
    role: Literal["assistant"] = "assistant"
    content: str = Field(description="A ScoreAnswer as JSON.")


class ChatChoice(StrictModel):
    index: int = 0
    message: ChatResponseMessage
    finish_reason: Literal["stop"] = "stop"
    logprobs: None = None


class Usage(StrictModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(StrictModel):
    """Answer of POST /v1/chat/completions."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = Field(
        default=None,
        description="Tokens of the prompts and the scores (absent in the district job's OpenAI batch output file, "
        "which does not count prompt tokens).",
    )

    @classmethod
    def of(cls, answer: ScoreAnswer, model: str, request_id: str, prompt_tokens: int | None) -> ChatCompletion:
        """The chat answer carrying `answer` (as JSON in the assistant's message) for `model`; its usage counts
        `prompt_tokens` and one completion token per score (no usage when `prompt_tokens` is None)."""
        usage = None
        if prompt_tokens is not None:
            usage = Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=len(answer.scores),
                total_tokens=prompt_tokens + len(answer.scores),
            )
        message = ChatResponseMessage(content=answer.model_dump_json(exclude_none=True))
        return cls(
            id=request_id, created=int(time.time()), model=model, choices=[ChatChoice(message=message)], usage=usage
        )

    def answer(self) -> ScoreAnswer:
        return ScoreAnswer.model_validate_json(self.choices[0].message.content)


# ---- the OpenAI Files and Batch APIs (serve/batch) -------------------------------------------------------------

BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]
BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/score")


class FileObject(StrictModel):
    """An uploaded file (POST /v1/files, GET /v1/files/{id}), or a batch's output or error file."""

    id: str
    object: Literal["file"] = "file"
    bytes: int = Field(ge=0, description="Size in bytes.")
    created_at: int = Field(description="Unix time of the upload.")
    expires_at: int | None = Field(default=None, description="Unix time after which the file is deleted.")
    filename: str
    purpose: Literal["batch", "batch_output"] = Field(
        description="batch: an input; batch_output: a batch's output or error file."
    )
    status: Literal["processed"] = "processed"


class FileDeleted(StrictModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class BatchCreateRequest(StrictModel):
    """Body of POST /v1/batches."""

    input_file_id: str = Field(description="An uploaded file of purpose batch: one request per JSONL line.")
    endpoint: Literal["/v1/chat/completions", "/v1/score"] = Field(description="The route every line is sent to.")
    completion_window: Literal["24h"] = Field(description="The only window offered, as OpenAI's.")
    metadata: dict[str, str] | None = Field(default=None, max_length=16, description="Up to 16 key-value pairs.")


class BatchRequestCounts(StrictModel):
    total: int = 0
    completed: int = 0
    failed: int = 0


class BatchError(StrictModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(StrictModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class BatchObject(StrictModel):
    """A batch (POST /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel)."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts = Field(default_factory=BatchRequestCounts)
    metadata: dict[str, str] | None = None


class BatchList(StrictModel):
    """GET /v1/batches: newest first, `after` an id, at most `limit`."""

    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class BatchInputLine(BaseModel):
    """One line of a batch input file."""

    model_config = ConfigDict(extra="forbid")

    custom_id: str = Field(min_length=1, max_length=512, description="The caller's id of the line, unique per file.")
    method: Literal["POST"] = "POST"
    url: Literal["/v1/chat/completions", "/v1/score"] = Field(description="Must be the batch's endpoint.")
    body: dict = Field(description="What the sync route takes: a ChatCompletionRequest or a ScoreRequest.")


class BatchLineResponse(StrictModel):
    status_code: int
    request_id: str
    body: dict


class BatchLineError(StrictModel):
    code: str
    message: str


class BatchOutputLine(StrictModel):
    """One line of a batch's output file (answered lines) or error file (refused lines)."""

    id: str
    custom_id: str
    response: BatchLineResponse | None = None
    error: BatchLineError | None = None


# ---- the served adapter set (admin routes; serve.adapter_sets) ------------------------------------------------


class ServedSet(StrictModel):
    """What routers and engines need to serve one deployment set (resolved from its YAML by `served_set`)."""

    name: str = Field(description="The deployment set's name.")
    source: str = Field(description="Its YAML file (on a cluster: a path every node reads).")
    base_hash: str = Field(description="The base's content hash.")
    rubric: str = Field(description="Rubric name.")
    prompt_format: str = Field(description="Prompt format name.")
    adapters: dict[str, str] = Field(description="Served dimension -> adapter label (name@version).")
    feedback_adapter: str | None = Field(default=None, description="The feedback adapter's label, if any.")
    modules: dict[str, str] = Field(description=f"Dimension (and {FEEDBACK_MODULE!r}) -> content-addressed module.")
    lora_paths: dict[str, str] = Field(description="Module name -> adapter folder.")
    calibration: Calibration | None = Field(default=None, description="The set's intervals for its adapters.")


class PromoteRequest(StrictModel):
    """JSON body of POST /v1/admin/adapters/promote."""

    deployment: str = Field(
        min_length=1,
        max_length=4096,
        description="Path of the deployment-set YAML to serve, as the router's and engines' nodes read it.",
    )


class AdapterSetChange(StrictModel):
    """One promotion or rollback."""

    generation: int = Field(description="The generation this change made.")
    action: Literal["promote", "rollback"]
    set: str = Field(description="The set served after it (its name).")
    source: str = Field(description="That set's YAML.")
    by: str = Field(description="Who changed it (the admin key's digest prefix, or 'anonymous' on loopback).")
    at: float = Field(description="When (Unix time).")


class AdapterSetStatus(StrictModel):
    """GET /v1/admin/adapters and the answer of a promote or rollback: what is served now, and since when."""

    generation: int = Field(description="0: the set the service started with; each change adds one or more.")
    set: ServedSet
    history: list[AdapterSetChange] = Field(default_factory=list, description="Changes, oldest first.")
