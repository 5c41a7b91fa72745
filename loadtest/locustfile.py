"""Locust users for the kidsart router: artworks of several sizes to /v1/score and the OpenAI chat route.

Run headless through `make loadtest` / `kidsart loadtest` (loadtest/run_locust.py),
or directly:  locust -f loadtest/locustfile.py --host http://127.0.0.1:8600

Request names in locust's statistics:
  /v1/score                          JSON {"image": base64, "id": ...}, all nine dimensions
  /v1/chat/completions [rubric]      OpenAI chat, model="kidsartbench" (all dimensions)
  /v1/chat/completions [dimension]   OpenAI chat, model=<one dimension>
  SHED <name>                        the router refused with 429/503 + Retry-After (load shedding)

Environment:
  KIDSART_LOCUST_SHED_OK   1 (default): a 429/503 carrying Retry-After is load shedding, counted
                           under "SHED ..." and not as a failure; 0: it is a failure (nominal runs).
  KIDSART_LOCUST_TIMEOUT   client timeout in seconds (default 60); a timeout is always a failure.
  KIDSART_LOCUST_WAIT      max think time in seconds between a user's requests (default 0.2).
  KIDSART_LOCUST_IMAGES    distinct artworks per size (default 32: repeats would hit vLLM's
                           prefix cache and overstate throughput).

This file runs in locust's own process (gevent): it must not import ray or vLLM.
"""
from __future__ import annotations

import base64
import os
import random
import time

from locust import HttpUser, between, events, task

SIZES = [(224, 224), (400, 300), (640, 480), (300, 500), (1024, 768), (1600, 1200)]
RUBRIC_MODEL = os.environ.get("KIDSART_LOCUST_RUBRIC", "kidsartbench")
SHED_OK = os.environ.get("KIDSART_LOCUST_SHED_OK", "1") != "0"
TIMEOUT = float(os.environ.get("KIDSART_LOCUST_TIMEOUT", "60"))
WAIT = float(os.environ.get("KIDSART_LOCUST_WAIT", "0.2"))
PER_SIZE = int(os.environ.get("KIDSART_LOCUST_IMAGES", "32"))
DIMENSIONS = [
    "realism", "deformation", "imagination", "color_richness", "color_contrast",
    "line_combination", "line_texture", "picture_organization", "transformation",
]


def _artworks() -> list[tuple[str, bytes]]:
    from loadtest.bench import synthetic_artwork

    images = []
    for s, size in enumerate(SIZES):
        for k in range(PER_SIZE):
            seed = 7_000_000 + s * 1000 + k
            images.append((f"{size[0]}x{size[1]}", synthetic_artwork(seed, size)))
    return images


ARTWORKS = _artworks()
B64 = [(label, base64.b64encode(data).decode("ascii"), "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png") for label, data in ARTWORKS]


def _shed(response) -> bool:
    return response.status_code in (429, 503) and "retry-after" in {k.lower() for k in response.headers}


class ScoringUser(HttpUser):
    """One client scoring artworks back to back with a short think time."""

    wait_time = between(0, WAIT)

    def _post(self, path: str, name: str, payload: dict, check) -> None:
        started = time.perf_counter()
        with self.client.post(path, json=payload, name=name, timeout=TIMEOUT, catch_response=True) as response:
            if response.status_code == 200:
                try:
                    problem = check(response.json())
                except ValueError:
                    problem = "response is not JSON"
                if problem:
                    response.failure(problem)
                else:
                    response.success()
            elif _shed(response) and SHED_OK:
                response.success()
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
                response.failure(f"HTTP {response.status_code}{' Retry-After ' + retry if retry else ''}: {response.text[:120]}")

    @task(6)
    def score(self) -> None:
        label, b64, _ = random.choice(B64)
        self._post(
            "/v1/score", "/v1/score", {"image": b64, "id": f"locust-{label}"},
            lambda body: None if len(body.get("scores", {})) >= 1 else "no scores in the answer",
        )

    @task(2)
    def chat_rubric(self) -> None:
        _, b64, mime = random.choice(B64)
        self._post("/v1/chat/completions", "/v1/chat/completions [rubric]", _chat(RUBRIC_MODEL, b64, mime), _check_chat)

    @task(1)
    def chat_dimension(self) -> None:
        _, b64, mime = random.choice(B64)
        dim = random.choice(DIMENSIONS)
        self._post("/v1/chat/completions", "/v1/chat/completions [dimension]", _chat(dim, b64, mime), _check_chat)


def _chat(model: str, b64: str, mime: str) -> dict:
    return {
        "model": model,
        "messages": [{
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{b64}"}},
                {"type": "text", "text": "Score this artwork."},
            ],
        }],
    }


def _check_chat(body: dict) -> str | None:
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return "no choices[0].message.content in the answer"
    return None if "scores" in content else "the chat answer carries no scores"
