"""Shared fixtures: the tiny profile, free ports, and one real stack per test session."""

from __future__ import annotations

import contextlib
import io
import socket

import pytest
from PIL import Image, ImageDraw


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readyz(url: str) -> tuple[int, str]:
    """(status, body) of a router's /readyz; (0, the error) when nothing answers."""
    import httpx

    try:
        response = httpx.get(f"{url}/readyz", timeout=5)
        return response.status_code, response.text
    except httpx.HTTPError as exc:
        return 0, repr(exc)


def engine_replicas(root: int | None = None) -> dict[int, list[int]]:
    """Each live engine replica's process (Ray's `ServeReplica:...:EngineServer` worker) under `root` (default: this
    process, whose stacks' Ray it started) -> the pids of the vLLM EngineCore processes under it (the engine proper)."""
    import os

    import psutil

    found = {}
    for process in descendants(root if root is not None else os.getpid()):
        try:
            if any("ServeReplica:" in part and "EngineServer" in part for part in process.cmdline()):
                found[process.pid] = [c.pid for c in process.children() if "EngineCore" in c.name()]
        except psutil.Error:
            continue
    return found


def wait_for(predicate, timeout: float, what: str, poll: float = 0.25):
    """Poll `predicate` until it returns something truthy (returned), or fail naming `what`."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def descendants(pid: int) -> list:
    """Every live descendant process of `pid` (psutil), none if it is gone."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def still_running(pids) -> list[int]:
    """Those of `pids` whose process is alive and not a zombie."""
    import psutil

    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture(scope="session")
def tiny_profile():
    from adapters.base_builder import ensure_local_base
    from adapters.profiles import load_profile

    profile = load_profile("tiny")
    ensure_local_base(profile)  # the tiny base is a committed fixture: never built by the tests
    return profile


def drawing(seed: int, size=(320, 240)) -> Image.Image:
    """A small seeded test drawing (shapes on paper)."""
    import random

    rng = random.Random(seed)
    image = Image.new("RGB", size, (250, 248, 240))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(2, 8)):
        x0, y0 = rng.randint(0, size[0] - 40), rng.randint(0, size[1] - 40)
        box = (x0, y0, x0 + rng.randint(20, 120), y0 + rng.randint(20, 100))
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour, outline=(0, 0, 0))
    return image


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


_SESSION_STACK: dict = {}  # the live_stack, once a test has started it

# The session's live stack runs with API keys on (as a district would): tests send this key; the stacks
# of own_stack() run without keys on loopback, the other configuration.
LIVE_API_KEY = "kidsart-test-session-key-0001"
OTHER_API_KEY = "kidsart-test-session-key-0002"  # a second caller: its files and batches are not the first's
LIVE_ADMIN_KEY = "kidsart-test-admin-key-0001"  # promotes and rolls back adapter sets; cannot score
AUTH = {"Authorization": f"Bearer {LIVE_API_KEY}"}


@pytest.fixture(scope="session")
def live_stack(tiny_profile, tmp_path_factory):
    """The real stack (engine replica + Ray Serve router) on the tiny model, on a free port, with API keys on, for the
    whole session.
    """
    import os

    from serve.stack import Stack

    stack = Stack(
        tiny_profile,
        router_port=free_port(),
        log_dir=tmp_path_factory.mktemp("stack-logs"),
        api_keys=[LIVE_API_KEY, OTHER_API_KEY],
        admin_keys=[LIVE_ADMIN_KEY],
        home=tmp_path_factory.mktemp("kidsart-home"),  # its Batch API files and state, not the working directory's
    )
    stack.start()
    _SESSION_STACK["stack"] = stack
    previous = os.environ.get("KIDSART_API_KEY")
    os.environ["KIDSART_API_KEY"] = LIVE_API_KEY  # the project's own clients (and CLI subprocesses) send it
    yield stack
    if previous is None:
        os.environ.pop("KIDSART_API_KEY", None)
    else:
        os.environ["KIDSART_API_KEY"] = previous
    _SESSION_STACK.pop("stack", None)
    if not _SESSION_STACK.pop("stopped", False):
        stack.stop()


def stop_live_stack() -> None:
    """Stop the session's live stack, if it runs, for a test that needs Ray to itself (marked `own_ray`, so it runs
    after every test of the live stack: it is started again only if a later test asks for it)."""
    live = _SESSION_STACK.get("stack")
    if live is not None and not _SESSION_STACK.get("stopped"):
        live.stop()
        _SESSION_STACK["stopped"] = True


@pytest.fixture(autouse=True)
def _live_stack_running(request):
    """A test that asks for the live stack gets it running (even after an `own_ray` test stopped it), and leaves
    it serving: a test that killed part of it (an engine) must not hand the next test a stack still recovering."""
    uses = "live_stack" in request.fixturenames
    if uses and _SESSION_STACK.get("stopped"):
        _SESSION_STACK["stack"].start()
        _SESSION_STACK["stopped"] = False
    yield
    stack = _SESSION_STACK.get("stack")
    if uses and stack is not None and not _SESSION_STACK.get("stopped"):
        wait_for(lambda: readyz(stack.url)[0] == 200, 300, "the live stack to serve again after this test", poll=1.0)


def pytest_collection_modifyitems(config, items):
    """Tests marked `own_ray` last (stable): each stops the live stack, which then need not be started again."""
    items.sort(key=lambda item: item.get_closest_marker("own_ray") is not None)


@contextlib.contextmanager
def own_stack(profile, log_dir):
    """A stack of another profile or deployment in this test process (tests marked `own_ray`).

    Ray Serve is one per Ray instance (one HTTP proxy, one app namespace), so two stacks
    cannot run side by side in one process: the session's live stack, if it was started,
    is stopped first.
    """
    from serve.stack import Stack

    stop_live_stack()
    with Stack(profile, router_port=free_port(), log_dir=log_dir) as stack:
        yield stack
