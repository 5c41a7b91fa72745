"""When a load-test answer counts as a success: it is the protocol's answer, with every requested dimension.

Kept apart from the locustfile so it can be tested without importing locust (whose
gevent monkey-patching must not enter a process that also runs Ray or vLLM); the answers
are parsed with the router's own models (serve.protocol), which import neither.
"""

from __future__ import annotations

from pydantic import ValidationError

from serve.protocol import ChatCompletion, ScoreAnswer


def check_score(body, wanted: list[str]) -> str | None:
    """None when `body` is a score answer with every wanted dimension, else what is wrong."""
    try:
        answer = ScoreAnswer.model_validate(body)
    except ValidationError as exc:
        return f"not a score answer: {exc.errors()[0]['msg']}"
    missing = answer.missing(wanted)
    return f"missing dimensions {missing}" if missing else None


def check_chat(body, wanted: list[str]) -> str | None:
    """None when `body` is a chat completion whose content is a score answer with every wanted dimension."""
    try:
        answer = ChatCompletion.model_validate(body).answer()
    except (ValidationError, IndexError) as exc:
        return f"not a chat completion with a score answer: {exc}"[:300]
    missing = answer.missing(wanted)
    return f"missing dimensions {missing}" if missing else None
