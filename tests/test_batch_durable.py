"""A batch survives `kidsart serve` SIGKILLed mid-batch: started again on the same KIDSART_HOME, the batch runner
resumes it and every line is answered exactly once (the output file and the journal say so). The restarted
service then stops on SIGTERM leaving no process and no port (SIGINT goes to the same handler,
serve/foreground.py).

Everything the first service started (Ray's processes, the replicas, the vLLM engine) is SIGKILLed with it, as a
machine losing power would: nothing of the first run can go on writing while the second one runs.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.conftest import descendants, drawing, free_port, png_bytes, readyz, still_running, stop_live_stack, wait_for

# own_ray: its own `kidsart serve` runs after the live stack is stopped (two engines on 2 cores slowed both)
pytestmark = [pytest.mark.integration, pytest.mark.own_ray]

KIDSART = str(Path(sys.executable).with_name("kidsart"))
LINES = 24


def _start(home: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("KIDSART_API_KEY", "KIDSART_API_KEYS")}  # loopback
    env["KIDSART_HOME"] = str(home)
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [KIDSART, "serve", "--port", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=home,
            env=env,
            start_new_session=True,
        )

    def ready() -> bool:
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        return readyz(f"http://127.0.0.1:{port}")[0] == 200

    wait_for(ready, 300, "kidsart serve to be ready", poll=1.0)
    return process


def _journal_keys(home: Path, batch_id: str) -> list[str]:
    path = home / "batches" / "runs" / batch_id / "journal.jsonl"
    if not path.exists():
        return []
    keys = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            keys.append(json.loads(line)["key"])
        except (ValueError, KeyError):
            continue  # a line torn by the kill: the journal ignores it too
    return keys


def test_a_batch_resumes_after_serve_is_killed_and_answers_each_line_once(tmp_path):
    stop_live_stack()
    home, log = tmp_path / "home", tmp_path / "serve.log"
    home.mkdir()
    port = free_port()
    lines = [
        {
            "custom_id": f"pupil-{i:02d}",
            "method": "POST",
            "url": "/v1/score",
            "body": {"image": "data:image/png;base64," + base64.b64encode(png_bytes(drawing(7300 + i))).decode()},
        }
        for i in range(LINES)
    ]
    first = _start(home, port, log)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused-on-loopback", max_retries=0)
    try:
        upload = client.files.create(
            file=("district.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode()), purpose="batch"
        )
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/score", completion_window="24h")
        wait_for(lambda: len(_journal_keys(home, batch.id)) >= 3, 180, "three answered lines", poll=0.2)
        family = {p.pid for p in descendants(first.pid)} | {first.pid}
        os.killpg(first.pid, signal.SIGKILL)
        for pid in still_running(family):  # whatever left the process group (Ray's own sessions) goes down with it
            os.kill(pid, signal.SIGKILL)
        first.wait(timeout=30)
        wait_for(lambda: not still_running(family), 30, "every process of the first service to end")
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    answered_before = len(set(_journal_keys(home, batch.id)))
    assert answered_before < LINES, "the batch ended before the kill: nothing was resumed"

    second = _start(home, port, log)
    seen: set[int] = set()
    try:
        done = wait_for(
            lambda: (lambda b: b if b.status in ("completed", "failed", "cancelled") else None)(
                client.batches.retrieve(batch.id)
            ),
            300,
            "the resumed batch to finish",
            poll=1.0,
        )
        assert done.status == "completed", done
        counts = done.request_counts
        assert (counts.total, counts.completed, counts.failed) == (LINES, LINES, 0)
        output = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
        assert [o["custom_id"] for o in output] == [x["custom_id"] for x in lines]  # each line once, in input order
        assert all(o["response"]["status_code"] == 200 and len(o["response"]["body"]["scores"]) == 9 for o in output)
        keys = _journal_keys(home, batch.id)
        assert sorted(keys) == sorted(x["custom_id"] for x in lines)  # none answered twice across the restart
        seen = {p.pid for p in descendants(second.pid)}
        assert len(seen) >= 3 and any("EngineCore" in p.name() for p in descendants(second.pid) if p.is_running())
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=120)
        assert second.returncode == 0
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGKILL)
    wait_for(lambda: not still_running(seen), 20, "every process of the restarted service to end", poll=1.0)
    assert readyz(f"http://127.0.0.1:{port}")[0] == 0  # nothing listens any more
    print(
        f"\nbatch of {LINES} lines: kidsart serve SIGKILLed after {answered_before} answered, restarted: "
        f"{len(output)} answered once each"
    )
