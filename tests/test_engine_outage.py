"""The vLLM engine SIGKILLed under load: locust and a district job run through the outage.

On the session's live stack (keys on), while locust users score artworks and a
district job scores a generated district through the router:
- the engine's main process is SIGKILLed (a crash, as the OOM killer would do it);
- the stack's supervisor restarts it; /readyz is 503 naming the restart meanwhile, then 200
  again, without the router being restarted;
- locust's only failures are 503s with Retry-After whose request overlapped the outage, and
  every request started after /readyz turned 200 again succeeded;
- the district job completes with every input scored, each exactly once in its journal.
The outage's figures are printed (README, Reliability).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter

import pandas as pd
import pytest

from tests.conftest import readyz
from tests.district_helpers import REPO, cli, journal_keys, journal_lines

pytestmark = pytest.mark.integration

USERS = 4
AFTER_RECOVERY_S = 30.0


def _requests(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _wait(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_engine_killed_during_locust_and_a_district_run(live_stack, tmp_path):
    from loadtest.run_locust import Scenario, locust_process
    from train.district import make_district

    url = live_stack.url
    root = tmp_path / "district"
    info = make_district(root, seed=31, schools=1, grades=2, classes=2, images=80, broken=0, duplicates=0)
    out = tmp_path / "district-out"
    requests_log = tmp_path / "locust" / "requests.jsonl"
    district_log = (tmp_path / "district.log").open("w", encoding="utf-8")
    district = subprocess.Popen(cli(str(root), "--out", str(out), "--url", url, "--concurrency", "4", "--no-report"),
                                cwd=REPO, env={**os.environ, "KIDSART_LOG_LEVEL": "WARNING"},
                                stdout=district_log, stderr=subprocess.STDOUT)
    locust = locust_process(
        url, Scenario(users=USERS, spawn_rate=USERS, run_time="900s", shed_ok=False), tmp_path / "locust",
        {"KIDSART_LOCUST_REQUESTS": str(requests_log), "KIDSART_LOCUST_IMAGES": "4"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    old_pid = live_stack.engine.process.pid
    try:
        _wait(lambda: sum(r["outcome"] == "ok" for r in _requests(requests_log)) >= 8 and journal_lines(out) >= 5,
              240, "locust and the district job to be scoring")
        killed_at = time.time()
        os.kill(old_pid, signal.SIGKILL)
        outage_answer = _wait(lambda: (lambda s: s if s[0] == 503 else None)(readyz(url)), 30, "/readyz to turn 503")
        _wait(lambda: readyz(url)[0] == 200, 300, "/readyz to be 200 again", poll=0.25)
        recovered_at = time.time()
        assert live_stack.engine.process.pid != old_pid  # a new engine behind the same router
        time.sleep(AFTER_RECOVERY_S)
        locust.send_signal(signal.SIGTERM)
        locust.wait(timeout=120)
        district.wait(timeout=600)
    finally:
        for process in (locust, district):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
        district_log.close()
    district_output = (tmp_path / "district.log").read_text(encoding="utf-8")

    # /readyz said why while the engine was down
    assert "engine" in outage_answer[1], outage_answer
    # locust: failures only inside the outage, and only 503 + Retry-After
    answered = _requests(requests_log)
    failures = [r for r in answered if r["outcome"] != "ok"]
    assert failures, "no request saw the outage: the kill came too late or too early"
    wrong = [r for r in failures if r["status"] != 503 or not r["retry_after"]]
    assert not wrong, f"failures other than 503 + Retry-After: {wrong[:5]}"
    outside = [r for r in failures if r["end"] < killed_at or r["start"] > recovered_at]
    assert not outside, f"failures outside the outage [{killed_at:.2f}, {recovered_at:.2f}]: {outside[:5]}"
    after = [r for r in answered if r["start"] > recovered_at]
    assert len(after) >= 10 and all(r["outcome"] == "ok" for r in after), [r for r in after if r["outcome"] != "ok"][:5]

    # the district job went through the same outage: every input scored, each once
    assert district.returncode == 0, district_output[-3000:]
    keys = journal_keys(out)
    assert len(keys) == info["expected_inputs"] and Counter(keys).most_common(1)[0][1] == 1
    frame = pd.read_parquet(out / "scores.parquet")
    assert len(frame) == info["expected_inputs"] and (frame.status == "ok").all(), frame.status.value_counts()
    assert frame.key.is_unique

    print(f"\nengine SIGKILLed under load ({USERS} locust users + a district job of {len(frame)} images): "
          f"/readyz 200 again after {recovered_at - killed_at:.1f} s; locust {len(answered)} requests, "
          f"{len(failures)} 503s all inside the outage, {len(after)} after recovery all 200; "
          f"district {len(frame)} rows, each once")
