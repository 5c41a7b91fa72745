"""An engine killed under load: Ray Serve replaces its replica; the router sheds only with 503s, or not at all.

1. One engine replica (the session's live stack, keys on), while locust users and a district job score
   through the router: the replica's vLLM engine process (EngineCore) is SIGKILLed, as the OOM killer
   would. /readyz turns 503 naming the engine, Ray Serve starts a new replica, /readyz is 200 again
   without anything restarted by hand and the new replica gives an image the scores the old one gave;
   locust's only failures are 503s with Retry-After inside the outage, every request after it
   succeeds, and the district job ends 0 with every input once.
2. Two engine replicas: one's engine is SIGKILLed under locust load and no request fails (calls that
   were on it are sent again and reach the other) while the other replica serves alone for
   ONE_REPLICA_S (Ray Serve placing the second replica again is case 1's replacement, not waited for).
The figures are printed (docs/security.md, Reliability).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import drawing, engine_replicas, own_stack, readyz, wait_for
from tests.district_helpers import REPO, cli, journal_keys, journal_lines
from tests.locust_helpers import USERS, kill, requests_logged, start_locust

pytestmark = pytest.mark.integration

AFTER_RECOVERY_S = 20.0
ONE_REPLICA_S = 30.0  # two-replica case: load kept on the one replica left after the kill
KIDSART = str(Path(sys.executable).with_name("kidsart"))


def _scores(url: str, image: Path) -> dict[str, float]:
    """The router's scores of one image, through `kidsart score` (the stack's key from the environment)."""
    result = subprocess.run([KIDSART, "score", str(image), "--url", url], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return {dim: entry["score"] for dim, entry in json.loads(result.stdout)["scores"].items()}


def _one_engine_core() -> int:
    replicas = engine_replicas()
    cores = [core for cores in replicas.values() for core in cores]
    assert cores, f"no vLLM EngineCore process under the engine replicas {replicas}"
    return cores[0]


def test_engine_killed_during_locust_and_a_district_run(live_stack, tmp_path):
    from train.district import make_district

    url = live_stack.url
    root = tmp_path / "district"
    info = make_district(root, seed=31, schools=1, grades=2, classes=2, images=80, broken=0, duplicates=0)
    out = tmp_path / "district-out"
    district_log = (tmp_path / "district.log").open("w", encoding="utf-8")
    district = subprocess.Popen(
        cli(str(root), "--out", str(out), "--url", url, "--concurrency", "4", "--no-report"),
        cwd=REPO,
        env={**os.environ, "KIDSART_LOG_LEVEL": "WARNING"},
        stdout=district_log,
        stderr=subprocess.STDOUT,
    )
    image = tmp_path / "same.png"
    drawing(23).save(image)
    before = _scores(url, image)
    locust, requests_log = start_locust(url, tmp_path, "locust")
    old_replicas = set(engine_replicas())
    try:
        wait_for(
            lambda: sum(r["outcome"] == "ok" for r in requests_logged(requests_log)) >= 8 and journal_lines(out) >= 5,
            240,
            "locust and the district job to be scoring",
        )
        killed_at = time.time()
        os.kill(_one_engine_core(), signal.SIGKILL)
        outage_answer = wait_for(lambda: (lambda s: s if s[0] == 503 else None)(readyz(url)), 60, "/readyz to turn 503")
        wait_for(lambda: readyz(url)[0] == 200, 300, "/readyz to be 200 again")
        recovered_at = time.time()
        assert set(engine_replicas()).isdisjoint(old_replicas)  # a new replica, placed by Ray Serve
        after_replacement = _scores(url, image)
        time.sleep(AFTER_RECOVERY_S)
        locust.send_signal(signal.SIGTERM)
        locust.wait(timeout=120)
        district.wait(timeout=600)
    finally:
        kill(locust, district)
        district_log.close()
    district_output = (tmp_path / "district.log").read_text(encoding="utf-8")

    # /readyz said why while the engine was down; the new replica serves the same adapters
    assert "engine" in outage_answer[1], outage_answer
    assert after_replacement.keys() == before.keys()
    for dim, score in before.items():
        assert after_replacement[dim] == pytest.approx(score, abs=1e-5), dim
    # locust: failures only inside the outage, and only 503 + Retry-After
    answered = requests_logged(requests_log)
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

    print(
        f"\nengine SIGKILLed under load ({USERS} locust users + a district job of {len(frame)} images), one replica: "
        f"/readyz 200 again after {recovered_at - killed_at:.1f} s (a new replica by Ray Serve); locust "
        f"{len(answered)} requests, {len(failures)} 503s all inside the outage, {len(after)} after recovery all 200; "
        f"district {len(frame)} rows, each once"
    )


@pytest.mark.own_ray
def test_two_replicas_one_engine_killed_fails_no_request(tiny_profile, tmp_path):
    engine = tiny_profile.engine.model_copy(update={"num_replicas": 2, "num_cpus": 1.0})
    profile = tiny_profile.model_copy(update={"engine": engine})
    with own_stack(profile, tmp_path / "logs") as stack:
        assert stack.engine_replicas()[0] == 2 and len(engine_replicas()) == 2
        locust, requests_log = start_locust(stack.url, tmp_path, "locust-two")
        try:
            wait_for(
                lambda: sum(r["outcome"] == "ok" for r in requests_logged(requests_log)) >= 8,
                240,
                "locust to be scoring",
            )
            killed_at = time.time()
            os.kill(_one_engine_core(), signal.SIGKILL)
            wait_for(lambda: stack.engine_replicas()[0] == 1, 60, "Ray Serve to count one running replica")
            time.sleep(ONE_REPLICA_S)
            alone_until = time.time()
            locust.send_signal(signal.SIGTERM)
            locust.wait(timeout=120)
        finally:
            kill(locust)
    answered = requests_logged(requests_log)
    during = [r for r in answered if r["start"] >= killed_at - 5 and r["end"] <= alone_until]
    failures = [r for r in answered if r["outcome"] != "ok"]
    assert not failures, f"{len(failures)} failed requests with a healthy second replica: {failures[:5]}"
    assert len(during) >= 10, f"too few requests around the kill ({len(during)}) to show anything"
    print(
        f"\ntwo engine replicas, one engine SIGKILLed under {USERS} locust users: {len(answered)} requests, "
        f"{len(during)} in the {alone_until - killed_at:.0f} s after the kill with one replica left, 0 failed"
    )
