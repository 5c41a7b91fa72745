"""`kidsart serve` whose engine cannot stay up: past engine.max_outage_s it says so and exits 2.

A profile extending tiny sets engine.max_outage_s to 30 s. Once the stack scores, every engine replica
Ray Serve starts is SIGKILLed as soon as it appears (an engine that cannot stay up): /readyz says the
outage has passed max_outage_s and the service is stopping, and the command exits with code 2, leaving
no process behind. (A single engine killed once and replaced by Ray Serve, same scores after, is
tests/test_engine_outage.py on the session's live stack.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import descendants, drawing, engine_replicas, free_port, readyz, stop_live_stack, wait_for

# own_ray: its own `kidsart serve` runs after the live stack is stopped (two engines on 2 cores slowed both)
pytestmark = [pytest.mark.integration, pytest.mark.own_ray]

KIDSART = str(Path(sys.executable).with_name("kidsart"))


def _score(port: int, image: Path) -> dict:
    result = subprocess.run(
        [KIDSART, "score", str(image), "--url", f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class _ReplicaKiller(threading.Thread):
    """SIGKILLs every engine replica process under `root` (and so what runs under it) as soon as it appears."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.killed = 0

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in engine_replicas(self.root):
                try:
                    os.kill(pid, signal.SIGKILL)
                    self.killed += 1
                except ProcessLookupError:
                    continue
            self.stop.wait(0.2)


def test_serve_gives_up_after_max_outage_and_exits_2(tmp_path):
    stop_live_stack()
    profile = tmp_path / "outage.yaml"
    profile.write_text("extends: tiny\nengine:\n  max_outage_s: 30\n", encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    image = tmp_path / "a.png"
    drawing(23).save(image)
    env = {k: v for k, v in os.environ.items() if k not in ("KIDSART_API_KEY", "KIDSART_API_KEYS")}  # keyless, loopback
    with log_path.open("wb") as log_handle:
        process = subprocess.Popen(
            [KIDSART, "serve", "--profile", str(profile), "--port", str(port)],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env=env,
        )
    killer = _ReplicaKiller(process.pid)
    family: list = []
    try:
        wait_for(lambda: readyz(url)[0] == 200 or process.poll() is not None, 300, "the stack to be ready")
        assert process.poll() is None, log_path.read_text()[-3000:]
        _score(port, image)
        family = descendants(process.pid)

        # no replica can stay up: past max_outage_s /readyz says the service stops, and it exits 2
        gave_up_started = time.monotonic()
        killer.start()
        gave_up = wait_for(
            lambda: (lambda r: r if "stopping" in r[1] else None)(readyz(url)),
            300,
            "/readyz to say the outage passed max_outage_s",
        )
        assert gave_up[0] == 503
        wait_for(lambda: process.poll() is not None, 120, "kidsart serve to exit")
        assert process.returncode == 2, log_path.read_text()[-3000:]
        gave_up_after = time.monotonic() - gave_up_started
    finally:
        killer.stop.set()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
    log = log_path.read_text(errors="replace")
    assert "max_outage_s=30" in log and "stopping" in log
    left = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"processes left after exit: {[(p.pid, p.name()) for p in left]}"
    print(
        f"\nkidsart serve: engine replicas killed as they start ({killer.killed} kills): /readyz 503 "
        f"{gave_up[1][:160]!r}, exit code {process.returncode} after {gave_up_after:.0f} s"
    )
