"""Run the stack in the foreground: SIGINT (Ctrl-C) or SIGTERM stops engine and router."""
from __future__ import annotations

import logging
import signal
import threading

from adapters.profiles import load_profile
from serve.stack import Stack

log = logging.getLogger(__name__)


def run_foreground(
    profile_name: str, router_port: int | None = None, engine_port: int | None = None, deployment: str | None = None
) -> None:
    stop = threading.Event()

    def request_stop(signum, _frame) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = Stack(load_profile(profile_name, deployment), router_port=router_port, engine_port=engine_port)
    try:
        stack.start()
        # ray.init installs its own SIGTERM handler in the driver; take it back so a
        # SIGTERM stops engine and router in order instead of exiting past them.
        for sig in previous:
            signal.signal(sig, request_stop)
        log.info("serving %s (deployment %s, prompt format %s) on %s (engine %s); Ctrl-C to stop", profile_name,
                 stack.deployment.source, stack.deployment.prompt_format.name, stack.url, stack.engine.url)
        while not stop.wait(1.0):
            if stack.engine.process is not None and stack.engine.process.poll() is not None:
                log.error("the vLLM engine exited with code %s; stopping", stack.engine.process.returncode)
                break
    finally:
        # ignore further signals while shutting down so a second Ctrl-C cannot leave orphans
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
