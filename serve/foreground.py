"""Run the stack in the foreground: SIGINT (Ctrl-C) or SIGTERM stops engine replicas and router.

A dead engine fails its replica's health check and Ray Serve replaces the replica. Ray Serve
keeps trying for ever, so the bound is ours: when no engine replica has been healthy for
`engine.max_outage_s` (read from Ray Serve's status), /readyz says so for FAILED_HOLD_S, then
the stack stops and `kidsart serve` exits non-zero.
"""

from __future__ import annotations

import logging
import signal
import threading

from adapters.errors import KidsArtError
from adapters.profiles import load_profile
from serve.stack import Stack

log = logging.getLogger(__name__)

FAILED_HOLD_S = 10


class EngineGaveUpError(KidsArtError):
    """No engine replica was healthy for engine.max_outage_s (`kidsart serve` exits non-zero)."""

    kind = "engine_gave_up"


def run_foreground(
    profile_name: str,
    router_port: int | None = None,
    deployment: str | None = None,
    *,
    router_host: str | None = None,
    api_keys: list[str] | None = None,
    admin_keys: list[str] | None = None,
    insecure_no_auth: bool = False,
) -> None:
    stop = threading.Event()

    def request_stop(signum, _frame) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    failed = None
    stack = Stack(
        load_profile(profile_name, deployment),
        router_port=router_port,
        router_host=router_host,
        api_keys=api_keys,
        admin_keys=admin_keys,
        insecure_no_auth=insecure_no_auth,
    )
    log.info("%s", stack.key_status)
    try:
        stack.start()
        # ray.init installs its own SIGTERM handler in the driver; take it back so a
        # SIGTERM stops engine and router in order instead of exiting past them.
        for sig in previous:
            signal.signal(sig, request_stop)
        running, _ = stack.engine_replicas()
        log.info(
            "serving %s (deployment %s, prompt format %s) on %s with %d engine replica(s) (no engine port); "
            "%s; Ctrl-C to stop",
            profile_name,
            stack.deployment.source,
            stack.deployment.prompt_format.name,
            stack.url,
            running,
            stack.key_status,
        )
        # Ray Serve replaces dead engine replicas; only when none has been healthy for engine.max_outage_s do
        # we stop, after FAILED_HOLD_S in which /readyz answers 503 with the reason (for probes and operators)
        while not stop.wait(1.0):
            failed = _outage(stack)
            if failed:
                log.error("stopping in %d s: %s", FAILED_HOLD_S, failed)
                stop.wait(FAILED_HOLD_S)
                break
    finally:
        # ignore further signals while shutting down so a second Ctrl-C cannot leave orphans
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise EngineGaveUpError(failed)


def _outage(stack: Stack) -> str | None:
    """The stack's outage verdict; a status read that fails (the controller busy) is not an outage."""
    try:
        return stack.outage()
    except Exception as exc:  # Ray's errors while its controller restarts: read again next second
        log.warning("could not read Ray Serve's status: %s", exc)
        return None
