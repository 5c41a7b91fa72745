"""Locust under test: a headless run whose every request is logged (start, end, status, Retry-After) to JSONL."""

from __future__ import annotations

import json
import subprocess

USERS = 4


def requests_logged(path) -> list[dict]:
    """The requests a locust run has logged so far (loadtest/locustfile.py writes one JSON line each)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def start_locust(url: str, tmp_path, name: str, users: int = USERS):
    """A locust process against `url` (stopped by the caller) and the path of its request log."""
    from loadtest.run_locust import Scenario, locust_process

    log = tmp_path / name / "requests.jsonl"
    process = locust_process(
        url,
        Scenario(users=users, spawn_rate=users, run_time="900s", shed_ok=False),
        tmp_path / name,
        {"KIDSART_LOCUST_REQUESTS": str(log), "KIDSART_LOCUST_IMAGES": "4"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, log


def kill(*processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
