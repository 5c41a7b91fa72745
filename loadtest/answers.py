"""When a load-test answer counts as a success: every requested dimension came back with a score.

Kept apart from the locustfile so it can be tested without importing locust (whose
gevent monkey-patching must not enter a process that also runs Ray or vLLM).
"""
from __future__ import annotations

import json


def missing_dimensions(scores, wanted: list[str]) -> str | None:
    """None when `scores` has a numeric score for every wanted dimension, else what is missing."""
    if not isinstance(scores, dict):
        return "no scores in the answer"
    missing = [d for d in wanted if not isinstance((scores.get(d) or {}).get("score"), (int, float))]
    return f"missing dimensions {missing}" if missing else None


def check_chat(body: dict, wanted: list[str]) -> str | None:
    try:
        content = json.loads(body["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError, ValueError):
        return "no JSON choices[0].message.content in the answer"
    return missing_dimensions(content.get("scores") if isinstance(content, dict) else None, wanted)
