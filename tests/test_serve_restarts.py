"""`kidsart serve` with a real vLLM engine SIGKILLed twice: restarted once, then it gives up and exits 2.

A profile extending tiny allows two restart attempts. The first kill is restarted and
the same router scores again; before the second kill's restart the test takes the
engine's port, so the last attempt fails: /readyz stays 503 naming the reason and the
command exits with code 2 (every attempt logged).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import descendants, drawing, free_port, readyz

pytestmark = pytest.mark.integration

KIDSART = str(Path(sys.executable).with_name("kidsart"))
ENGINE_MODULE = "vllm.entrypoints.openai.api_server"


def _readyz(port: int) -> tuple[int, str]:
    return readyz(f"http://127.0.0.1:{port}")


def _until(predicate, timeout: float, what: str, process: subprocess.Popen, log_path: Path, poll: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process.poll() is not None and what != "kidsart serve to exit":
            pytest.fail(f"kidsart serve exited ({process.returncode}) waiting for {what}:\n{log_path.read_text()[-3000:]}")
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{log_path.read_text()[-3000:]}")


def _engine_pid(serve_pid: int) -> int | None:
    """The vLLM API server's main process (the one whose parent is not itself a vLLM server)."""
    servers = {p.pid: p for p in descendants(serve_pid) if ENGINE_MODULE in " ".join(_cmdline(p))}
    mains = [pid for pid, p in servers.items() if p.ppid() not in servers]
    return mains[0] if len(mains) == 1 else None


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # a process that ended (or became a zombie) while being listed has no command line
        return []


def _score(port: int, image: Path) -> dict:
    result = subprocess.run([KIDSART, "score", str(image), "--url", f"http://127.0.0.1:{port}"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_serve_restarts_a_killed_engine_then_gives_up_and_exits_2(tmp_path):
    profile = tmp_path / "restarts.yaml"
    profile.write_text("extends: tiny\nengine:\n  restart_attempts: 2\n  restart_backoff_s: 3\n"
                       "  restart_reset_s: 3600\n", encoding="utf-8")
    port, engine_port = free_port(), free_port()
    log_path = tmp_path / "serve.log"
    image = tmp_path / "a.png"
    drawing(23).save(image)
    env = {k: v for k, v in os.environ.items() if k not in ("KIDSART_API_KEY", "KIDSART_API_KEYS")}  # keyless, loopback
    with log_path.open("wb") as log_handle:
        process = subprocess.Popen([KIDSART, "serve", "--profile", str(profile), "--port", str(port),
                                    "--engine-port", str(engine_port)], stdout=log_handle, stderr=subprocess.STDOUT,
                                   cwd=tmp_path, env=env)
    blocker = None
    try:
        _until(lambda: _readyz(port)[0] == 200, 300, "the stack to be ready", process, log_path)
        first = _score(port, image)
        # 1. the engine dies: /readyz 503 naming the restart, then the same router serves again
        old_engine = _until(lambda: _engine_pid(process.pid), 30, "the engine's process", process, log_path)
        killed = time.monotonic()
        os.kill(old_engine, signal.SIGKILL)
        during = _until(lambda: (lambda r: r if r[0] == 503 else None)(_readyz(port)), 30, "/readyz 503", process, log_path)
        _until(lambda: _readyz(port)[0] == 200, 300, "the restarted engine", process, log_path)
        back_after = time.monotonic() - killed
        again = _score(port, image)
        assert again["scores"].keys() == first["scores"].keys()
        for dim, entry in first["scores"].items():
            assert again["scores"][dim]["score"] == pytest.approx(entry["score"], abs=1e-3)  # same adapters, new engine
        new_engine = _until(lambda: _engine_pid(process.pid), 30, "the new engine's process", process, log_path)
        assert new_engine != old_engine

        # 2. killed again with its port taken: the one attempt left fails; 503 with the reason; exit 2
        os.kill(new_engine, signal.SIGKILL)
        blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # SO_REUSEADDR as servers set it: the router's old connections in TIME_WAIT do not stop the bind,
        # while a listening socket on the port still makes the engine's own bind fail
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

        def take_port() -> bool:
            try:
                blocker.bind(("127.0.0.1", engine_port))
            except OSError:
                return False  # the dead engine's process group still holds it for a moment
            blocker.listen(1)
            return True

        _until(take_port, 5, "the dead engine's port", process, log_path, poll=0.05)
        gave_up = _until(lambda: (lambda r: r if "gave up" in r[1] else None)(_readyz(port)), 120,
                         "/readyz to say the restarts are spent", process, log_path)
        assert gave_up[0] == 503
        _until(lambda: process.poll() is not None, 120, "kidsart serve to exit", process, log_path)
        assert process.returncode == 2, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
        if blocker is not None:
            blocker.close()
    log = log_path.read_text(errors="replace")
    assert "(attempt 1 of 2)" in log and "(attempt 2 of 2)" in log
    assert "gave up after 2 restart attempt(s)" in log
    assert "engine" in during[1]
    print(f"\nkidsart serve: engine SIGKILLed, serving again after {back_after:.1f} s (same router); "
          f"second kill with its port taken: /readyz 503 {gave_up[1][:160]!r}, exit code {process.returncode}")
