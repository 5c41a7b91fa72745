"""Typed serving errors and their HTTP status codes, in one place.

Every error the router returns has the OpenAI error shape
`{"error": {"message": ..., "type": ..., "code": <status>}}` so that the official
`openai` client raises its matching exception class with our message.
"""

from __future__ import annotations

from adapters.errors import (
    ConfigError,
    FeedbackNotDeployedError,
    ImageDecodeError,
    ImageTooLargeError,
    InputError,
    KidsArtError,
    ScoreDistributionError,
    UnknownDimensionError,
)
from serve.protocol import ErrorBody, ErrorDetail


class MalformedRequestError(InputError):
    """The body is not valid JSON / multipart, or a field has the wrong type."""

    kind = "malformed_request"


class RequestValidationFailed(InputError):
    """The body parsed but a field is missing or not allowed."""

    kind = "invalid_request"


class UnsupportedModelError(InputError):
    """The OpenAI `model` is neither the rubric nor one of its dimensions."""

    kind = "model_not_found"


class UnauthorizedError(KidsArtError):
    """No valid API key in `Authorization: Bearer <key>`."""

    kind = "unauthorized"


class ForbiddenError(KidsArtError):
    """A valid key without the right to this route (a scoring key on an admin route)."""

    kind = "forbidden"


class AdapterSetConflictError(InputError):
    """The served adapter set cannot change that way now: nothing to roll back to, or it changed meanwhile."""

    kind = "adapter_set_conflict"


class InvalidAdapterSetError(InputError):
    """A deployment set offered for promotion does not load, or cannot replace the served one in place."""

    kind = "invalid_adapter_set"


class BodyTooLargeError(ImageTooLargeError):
    """The request body passed the limit while it was being read (refused before it is all in memory)."""

    kind = "body_too_large"


class FileTooLargeError(InputError):
    """An upload to /v1/files over the profile's `batch.max_file_bytes`."""

    kind = "file_too_large"


class BodyTimeoutError(InputError):
    """The request body arrived too slowly (a trickled upload); cut off after the stated time."""

    kind = "body_timeout"


class UnsupportedRouteError(InputError):
    """No such route under /v1."""

    kind = "not_found"


class OverloadedError(KidsArtError):
    """The router's bounded queue is full; retry after the Retry-After delay."""

    kind = "overloaded"


class EngineUnavailableError(KidsArtError):
    """The vLLM engine cannot be reached (starting, restarting or down)."""

    kind = "engine_unavailable"


class EngineResponseError(KidsArtError):
    """The engine answered, but with an error or something unusable."""

    kind = "engine_error"


# Most specific first: the first matching class decides the status.
STATUS_BY_ERROR: list[tuple[type[Exception], int]] = [
    (UnauthorizedError, 401),
    (ForbiddenError, 403),
    (AdapterSetConflictError, 409),
    (InvalidAdapterSetError, 422),
    (BodyTimeoutError, 408),
    (ImageTooLargeError, 413),
    (FileTooLargeError, 413),
    (ImageDecodeError, 400),
    (MalformedRequestError, 400),
    (UnknownDimensionError, 422),
    (FeedbackNotDeployedError, 422),
    (RequestValidationFailed, 422),
    (UnsupportedModelError, 404),
    (UnsupportedRouteError, 404),
    (InputError, 400),
    (OverloadedError, 429),
    (EngineUnavailableError, 503),
    (EngineResponseError, 502),
    (ScoreDistributionError, 502),
    (ConfigError, 500),
    (KidsArtError, 500),
]

RETRYABLE_STATUSES = {429, 503}


def status_for(error: Exception) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(error, cls):
            return status
    return 500


def error_body(error: Exception) -> dict:
    kind = getattr(error, "kind", "internal_error")
    status = status_for(error)
    message = str(error) if isinstance(error, KidsArtError) else "internal error"
    return ErrorBody(error=ErrorDetail(message=message, type=kind, code=status)).model_dump()


def status_for_kind(kind: str, default: int = 400) -> int:
    """The HTTP status of an error known only by its kind (a journal record's `error_type`); `default` for kinds
    the router never answers with (e.g. the district job's local `missing_file`)."""
    for cls, status in STATUS_BY_ERROR:
        if cls.kind == kind:
            return status
    return default
