"""Locust users for the kidsart router: artworks of several sizes to /v1/score and the OpenAI chat route.

Run headless through `make loadtest` / `kidsart loadtest` (loadtest/run_locust.py),
or directly:  locust -f loadtest/locustfile.py --host http://127.0.0.1:8600

Request names in locust's statistics:
  /v1/score                          JSON {"image": base64, "id": ...}, every served dimension
  /v1/chat/completions [rubric]      OpenAI chat, model=<the rubric model> (all dimensions)
  /v1/chat/completions [dimension]   OpenAI chat, model=<one dimension>
  SHED <name>                        the router refused with 429/503 + Retry-After (load shedding)

Environment:
  KIDSART_LOCUST_SHED_OK   1 (default): a 429/503 carrying Retry-After is load shedding, counted
                           under "SHED ..." and not as a failure; 0: it is a failure (nominal runs).
  KIDSART_LOCUST_TIMEOUT   client timeout in seconds (default 60); a timeout is always a failure.
  KIDSART_LOCUST_WAIT      max think time in seconds between a user's requests (default 0.2).
  KIDSART_LOCUST_IMAGES    distinct artworks per size (default 32: repeats would hit vLLM's
                           prefix cache and overstate throughput).
  KIDSART_LOCUST_TIMING    if set, a JSON file written at the end: when the first request started,
                           when the last answer came back, and the answers that carried every
                           requested dimension (loadtest.run_locust turns these into images/s).
  KIDSART_LOCUST_REQUESTS  if set, a JSON-lines file with one line per request: wall-clock start and
                           end, name, HTTP status (0: no answer), Retry-After, outcome (ok / shed /
                           failed) and the failure's text (the engine-outage test reads it).

The rubric model and the dimensions come from GET /v1/models when the test starts
(read by the project's client, `serve.client.ServedModels`; KIDSART_LOCUST_RUBRIC overrides the rubric model), so any
rubric and any number of dimensions work. A 200 counts as a success only when every
requested dimension came back: all the dimensions the router serves for
/v1/score and the rubric model, the one named for a dimension model.

This file runs in locust's own process (gevent): it must not import ray or vLLM.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
import time

from locust import HttpUser, between, events, task

from loadtest.answers import check_chat, check_score
from serve.client import RetryPolicy, ScoringClient, auth_headers
from serve.errors import RETRYABLE_STATUSES
from serve.protocol import ChatCompletionRequest, ScoreRequest

SIZES = [(224, 224), (400, 300), (640, 480), (300, 500), (1024, 768), (1600, 1200)]
# The rubric model (all dimensions at once), read from the router when the test starts.
RUBRIC_MODEL = os.environ.get("KIDSART_LOCUST_RUBRIC", "")
SHED_OK = os.environ.get("KIDSART_LOCUST_SHED_OK", "1") != "0"
TIMEOUT = float(os.environ.get("KIDSART_LOCUST_TIMEOUT", "60"))
WAIT = float(os.environ.get("KIDSART_LOCUST_WAIT", "0.2"))
PER_SIZE = int(os.environ.get("KIDSART_LOCUST_IMAGES", "32"))
TIMING_FILE = os.environ.get("KIDSART_LOCUST_TIMING")
REQUESTS_FILE = os.environ.get("KIDSART_LOCUST_REQUESTS")
# The router's API key (kidsart loadtest --api-key, or the caller's environment), sent with locust's own
# timed requests as the project's client sends it.
AUTH = auth_headers()
# The served dimensions, read from the router when the test starts (GET /v1/models).
DIMENSIONS: list[str] = []


class _Timing:
    """First request start, last answer end, and complete answers (all requested dimensions) per kind."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.first_start: float | None = None
        self.last_end: float | None = None
        self.complete = {"full": 0, "single": 0}

    def record(self, started: float, ended: float, complete_kind: str | None) -> None:
        with self.lock:
            self.first_start = started if self.first_start is None else min(self.first_start, started)
            self.last_end = ended if self.last_end is None else max(self.last_end, ended)
            if complete_kind:
                self.complete[complete_kind] += 1


TIMING = _Timing()
_REQUEST_LOG = open(REQUESTS_FILE, "a", encoding="utf-8", buffering=1) if REQUESTS_FILE else None


def _log_request(started: float, ended: float, name: str, response, outcome: str, detail: str = "") -> None:
    if _REQUEST_LOG is not None:
        _REQUEST_LOG.write(
            json.dumps(
                {
                    "start": started,
                    "end": ended,
                    "name": name,
                    "status": response.status_code,
                    "retry_after": response.headers.get("Retry-After"),
                    "outcome": outcome,
                    "detail": detail[:200],
                }
            )
            + "\n"
        )


@events.test_start.add_listener
def _read_dimensions(environment, **_kwargs) -> None:
    """The rubric model and its dimensions, as the project's client reads them from the router."""
    global RUBRIC_MODEL
    with ScoringClient(environment.host, policy=RetryPolicy(max_outage_s=30.0, max_delay_s=5.0)) as client:
        served = client.served()
    RUBRIC_MODEL = RUBRIC_MODEL or served.rubric
    DIMENSIONS[:] = [d for d in served.dimensions if d != RUBRIC_MODEL]
    if not DIMENSIONS:
        raise RuntimeError(f"{environment.host}/v1/models lists no dimensions for {RUBRIC_MODEL!r}")


@events.quitting.add_listener
def _write_timing(environment, **_kwargs) -> None:
    if TIMING_FILE:
        with open(TIMING_FILE, "w", encoding="utf-8") as handle:
            json.dump(
                {
                    "first_request_start": TIMING.first_start,
                    "last_response_end": TIMING.last_end,
                    "complete_full_images": TIMING.complete["full"],
                    "complete_single_dimension": TIMING.complete["single"],
                    "dimensions": len(DIMENSIONS),
                },
                handle,
            )


def _artworks() -> list[tuple[str, bytes]]:
    from loadtest.bench_inputs import synthetic_artwork

    images = []
    for s, size in enumerate(SIZES):
        for k in range(PER_SIZE):
            seed = 7_000_000 + s * 1000 + k
            images.append((f"{size[0]}x{size[1]}", synthetic_artwork(seed, size)))
    return images


ARTWORKS = _artworks()
B64 = [
    (label, base64.b64encode(data).decode("ascii"), "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png")
    for label, data in ARTWORKS
]


def _shed(response) -> bool:
    return response.status_code in RETRYABLE_STATUSES and "retry-after" in {k.lower() for k in response.headers}


class ScoringUser(HttpUser):
    """One client scoring artworks back to back with a short think time."""

    wait_time = between(0, WAIT)

    def _post(self, path: str, name: str, payload: dict, check, kind: str) -> None:
        started = time.perf_counter()
        wall_start = time.time()
        complete, outcome, detail = None, "failed", ""
        with self.client.post(
            path, json=payload, name=name, timeout=TIMEOUT, catch_response=True, headers=AUTH
        ) as response:
            if response.status_code == 200:
                try:
                    problem = check(response.json())
                except ValueError:
                    problem = "response is not JSON"
                if problem:
                    response.failure(problem)
                    detail = problem
                else:
                    response.success()
                    complete, outcome = kind, "ok"
            elif _shed(response) and SHED_OK:
                response.success()
                outcome = "shed"
                events.request.fire(
                    request_type="SHED",
                    name=f"{name} {response.status_code}",
                    response_time=1000 * (time.perf_counter() - started),
                    response_length=len(response.content or b""),
                    exception=None,
                    context={},
                )
            else:
                retry = response.headers.get("Retry-After")
                detail = f"HTTP {response.status_code}{' Retry-After ' + retry if retry else ''}: {response.text[:120]}"
                response.failure(detail)
        ended = time.time()
        TIMING.record(wall_start, ended, complete)
        _log_request(wall_start, ended, name, response, outcome, detail)

    @task(6)
    def score(self) -> None:
        label, b64, _ = random.choice(B64)
        self._post(
            "/v1/score",
            "/v1/score",
            ScoreRequest(image=b64, id=f"locust-{label}").model_dump(exclude_none=True, exclude_defaults=True),
            lambda body: check_score(body, DIMENSIONS),
            "full",
        )

    @task(2)
    def chat_rubric(self) -> None:
        _, b64, mime = random.choice(B64)
        self._post(
            "/v1/chat/completions",
            "/v1/chat/completions [rubric]",
            _chat(RUBRIC_MODEL, b64, mime),
            lambda body: check_chat(body, DIMENSIONS),
            "full",
        )

    @task(1)
    def chat_dimension(self) -> None:
        _, b64, mime = random.choice(B64)
        dim = random.choice(DIMENSIONS)
        self._post(
            "/v1/chat/completions",
            "/v1/chat/completions [dimension]",
            _chat(dim, b64, mime),
            lambda body: check_chat(body, [dim]),
            "single",
        )


def _chat(model: str, b64: str, mime: str) -> dict:
    """An OpenAI chat request with the artwork as a data URL (serve.protocol.ChatCompletionRequest)."""
    request = ChatCompletionRequest(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{b64}"}},
                    {"type": "text", "text": "Score this artwork."},
                ],
            }
        ],
    )
    return request.model_dump(exclude_none=True)
