"""The engine supervisor without vLLM: a fake engine whose process is a real child process that can die."""
import contextlib
import subprocess
import sys
import time

from adapters.profiles import load_profile
from serve.engine import EngineStartError
from serve.supervisor import EngineSupervisor, read_status


class FakeEngine:
    """EngineProcess's start/stop/process, with `sleep`-like children; `fail_starts` starts fail first."""

    def __init__(self, fail_starts: int = 0):
        self.process = None
        self.fail_starts = fail_starts
        self.starts = 0

    def start(self, should_stop=None):
        self.starts += 1
        if self.fail_starts:
            self.fail_starts -= 1
            raise EngineStartError("vLLM engine exited with code 1 during start-up")
        self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        return self

    def stop(self, timeout: float = 30.0):
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()


def _settings(**changes):
    return load_profile("tiny").engine.model_copy(update={"restart_backoff_s": 0.1, "restart_backoff_max_s": 0.4, **changes})


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def _supervised(status_path, **settings):
    """A started fake engine under a started supervisor; both stopped on the way out."""
    engine = FakeEngine().start()
    supervisor = EngineSupervisor(engine, _settings(**settings), status_path, poll_s=0.05).start()
    try:
        yield engine, supervisor
    finally:
        supervisor.stop()
        engine.stop()


def test_a_dead_engine_is_restarted_and_the_status_file_says_so(tmp_path):
    with _supervised(tmp_path / "status.json", restart_attempts=3) as (engine, supervisor):
        assert read_status(tmp_path / "status.json")["state"] == "running"
        engine.process.kill()
        assert _wait(lambda: supervisor.restarts == 1)
        assert engine.process.poll() is None and engine.starts == 2
        status = read_status(tmp_path / "status.json")
        assert status["state"] == "running" and "exited with code -9" in status["reason"]
        assert supervisor.failed is None


def test_after_the_attempts_are_spent_it_gives_up_with_the_reason(tmp_path):
    with _supervised(tmp_path / "status.json", restart_attempts=2) as (engine, supervisor):
        engine.fail_starts = 5
        engine.process.kill()
        assert _wait(lambda: supervisor.failed is not None)
        assert engine.starts == 3  # the first start, then exactly two attempts
        assert "gave up after 2 restart attempt(s)" in supervisor.failed
        status = read_status(tmp_path / "status.json")
        assert status["state"] == "failed" and status["attempt"] == 2 and "during start-up" in status["reason"]


def test_no_restarts_when_told_so_and_stop_interrupts_a_backoff(tmp_path):
    engine = FakeEngine().start()
    supervisor = EngineSupervisor(engine, _settings(restart_attempts=0), tmp_path / "s.json", poll_s=0.05).start()
    engine.process.kill()
    assert _wait(lambda: supervisor.failed is not None) and engine.starts == 1
    supervisor.stop()
    slow = FakeEngine().start()
    waiting = EngineSupervisor(slow, _settings(restart_attempts=3, restart_backoff_s=30), tmp_path / "t.json", poll_s=0.05).start()
    slow.process.kill()
    assert _wait(lambda: (read_status(tmp_path / "t.json") or {}).get("state") == "restarting")
    started = time.monotonic()
    waiting.stop()
    assert time.monotonic() - started < 5 and slow.starts == 1  # stopping does not wait out the 30 s backoff
