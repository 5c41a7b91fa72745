"""Clean up after a `score-district --profile` run that was killed (SIGKILL) while it owned a stack.

The vLLM engine runs in its own process group, so it survives a SIGKILL of the
command that started it and would keep its port. The command therefore records
the engine's process id in `<out>/stack.json` while it runs; the next run into the
same folder ends that process group first, but only if that process id still is a
vLLM server on the recorded port (never anything else). Ray's own processes
started by the command share its fate and need no such care.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)

STACK_FILE = "stack.json"


def remember_stack(out: Path, stack) -> None:
    process = getattr(stack.engine, "process", None)
    if process is None:
        return
    info = {"engine_pid": process.pid, "engine_port": stack.profile.engine.port, "router_port": stack.profile.router.port}
    tmp = Path(out) / f".{STACK_FILE}.tmp"
    tmp.write_text(json.dumps(info), encoding="utf-8")
    os.replace(tmp, Path(out) / STACK_FILE)


def forget_stack(out: Path) -> None:
    (Path(out) / STACK_FILE).unlink(missing_ok=True)


def _is_our_engine(pid: int, port: int) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    text = [a.decode(errors="replace") for a in args]
    return "vllm.entrypoints.openai.api_server" in text and "--port" in text and str(port) in text


def reap_orphaned_engine(out: Path) -> None:
    path = Path(out) / STACK_FILE
    if not path.exists():
        return
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        pid, port = int(info["engine_pid"]), int(info["engine_port"])
    except (ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return
    if _is_our_engine(pid, port):
        log.warning("ending the vLLM engine (pid %d, port %d) left behind by a killed run into %s", pid, port, out)
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError) as exc:
            log.warning("could not end process group %d: %s", pid, exc)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    path.unlink(missing_ok=True)
