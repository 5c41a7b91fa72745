"""Keep the stack's vLLM engine alive: restart it with backoff when its process dies.

`Stack.start` runs an `EngineSupervisor` thread beside the engine. When the engine's
process exits (a crash, the OOM killer, a SIGKILL):

- the router stays up: requests in flight and new ones end with 503 + Retry-After
  (`serve.scoring.EngineScorer` cannot reach the engine) and /readyz turns 503,
  naming the restart in progress (read from the status file below);
- the supervisor waits `restart_backoff_s * 2**(attempt-1)` (capped at
  `restart_backoff_max_s`) and starts the engine again on the same port with the
  same key, so the router serves again without being restarted; every attempt is
  logged. A restarted engine that stays up `restart_reset_s` clears the count;
- after `restart_attempts` failed restarts in a row it gives up: the status file
  says so (the router's /readyz keeps answering 503 with that reason) and
  `failed` holds it, on which `kidsart serve` exits non-zero.

The status file (JSON: state, attempt, reason) is how the router replicas, in other
processes, learn what the supervisor is doing without any call between them.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from adapters.profiles import EngineSettings
from serve.engine import EngineProcess, EngineStartError

log = logging.getLogger(__name__)


def write_status(path: Path, state: str, reason: str, attempt: int = 0) -> None:
    """Replace the status file atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"state": state, "reason": reason, "attempt": attempt, "time": time.time()}), encoding="utf-8")
    os.replace(tmp, path)


def read_status(path: str | Path | None) -> dict | None:
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class EngineSupervisor:
    """A daemon thread that restarts `engine` when its process exits (see the module docstring)."""

    def __init__(self, engine: EngineProcess, settings: EngineSettings, status_path: Path, poll_s: float = 0.5):
        self.engine, self.settings, self.status_path, self.poll_s = engine, settings, Path(status_path), poll_s
        self.failed: str | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "EngineSupervisor":
        write_status(self.status_path, "running", "the engine is running")
        self._thread = threading.Thread(target=self._run, name="engine-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        attempts, up_since = 0, time.monotonic()
        while not self._stop.wait(self.poll_s):
            process = self.engine.process
            if process is None or process.poll() is None:
                if attempts and time.monotonic() - up_since > self.settings.restart_reset_s:
                    log.info("the restarted engine has been up %.0f s; restart count cleared", self.settings.restart_reset_s)
                    attempts = 0
                continue
            reason = f"the vLLM engine exited with code {process.returncode}"
            log.error("%s", reason)
            attempts = self._restart(reason, attempts)
            if attempts is None:
                return
            up_since = time.monotonic()

    def _restart(self, reason: str, attempts: int) -> int | None:
        """Restart until one works (the attempt count so far) or the attempts are spent (None)."""
        self.engine.stop(timeout=5.0)  # reap what is left of the dead engine's process group
        while not self._stop.is_set():
            if attempts >= self.settings.restart_attempts:
                self.failed = f"{reason}; gave up after {attempts} restart attempt(s)"
                log.error("%s", self.failed)
                write_status(self.status_path, "failed", self.failed, attempts)
                return None
            attempts += 1
            delay = min(self.settings.restart_backoff_max_s, self.settings.restart_backoff_s * 2 ** (attempts - 1))
            log.warning("restarting the vLLM engine in %.1f s (attempt %d of %d): %s", delay, attempts,
                        self.settings.restart_attempts, reason)
            write_status(self.status_path, "restarting", f"{reason}; restart attempt {attempts} of "
                         f"{self.settings.restart_attempts}", attempts)
            if self._stop.wait(delay):
                return None
            try:
                self.engine.start(should_stop=self._stop.is_set)
            except EngineStartError as exc:
                reason = f"restart attempt {attempts} failed: {exc}"
                log.error("%s", reason)
                self.engine.stop(timeout=5.0)
                continue
            self.restarts += 1
            log.info("the vLLM engine is back after restart attempt %d", attempts)
            write_status(self.status_path, "running", f"restarted after: {reason}", attempts)
            return attempts
        return None
