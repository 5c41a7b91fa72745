"""Integration: who may call what. The router's API keys, no engine port (vLLM on loopback, the other
listeners Ray's), and request bodies refused while they are read (size and time), on the session's live
stack (keys on)."""

from __future__ import annotations

import base64
import select
import socket
import time

import httpx
import psutil
import pytest

from loadtest.soak import actor_processes
from serve.body import body_limit
from tests.conftest import AUTH, drawing, engine_replicas, png_bytes

pytestmark = pytest.mark.integration


def test_router_v1_needs_a_valid_key_and_probes_stay_open(live_stack):
    body = {"image": base64.b64encode(png_bytes(drawing(61))).decode(), "dimensions": ["realism"]}
    for headers in ({}, {"Authorization": "Bearer wrong-key-wrong-key-wrong"}, {"Authorization": "Basic abc"}):
        for method, path, kwargs in (
            ("GET", "/v1/models", {}),
            ("POST", "/v1/score", {"json": body}),
            ("POST", "/v1/chat/completions", {"json": {"model": "kidsartbench"}}),
            ("GET", "/v1/no-such-route", {}),
        ):
            response = httpx.request(method, f"{live_stack.url}{path}", headers=headers, timeout=60, **kwargs)
            assert response.status_code == 401, (path, headers, response.text)
            assert response.json()["error"]["type"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{live_stack.url}/healthz").status_code == 200
    assert httpx.get(f"{live_stack.url}/readyz").status_code == 200
    assert httpx.get(f"{live_stack.url}/metrics").status_code == 200  # open by default (metrics_require_key)
    assert httpx.get(f"{live_stack.url}/v1/models", headers=AUTH).status_code == 200
    assert httpx.post(f"{live_stack.url}/v1/score", headers=AUTH, json=body, timeout=120).status_code == 200
    assert httpx.get(f"{live_stack.url}/v1/no-such-route", headers=AUTH).status_code == 404


def test_no_engine_port_vllm_on_loopback_and_every_other_socket_is_rays(live_stack):
    """The router is the only network surface of ours: no vLLM API server, vLLM's own sockets on loopback,
    the router's port on its profile's address; every other listening socket belongs to Ray (GCS, raylet,
    each worker's gRPC server, agents), which Ray 2.60 binds to all interfaces whatever node address it is
    given (docs/security.md)."""
    stack_processes = [p for p in psutil.Process().children(recursive=True) if p.is_running()]
    assert not [p.pid for p in stack_processes if "vllm.entrypoints" in " ".join(_cmdline(p))], "a vLLM API server runs"
    replicas = engine_replicas()
    assert replicas and all(replicas.values()), replicas
    vllm_processes = [c for pid in replicas for c in psutil.Process(pid).children(recursive=True)]
    assert vllm_processes
    vllm_listening = {
        c.laddr.ip for p in vllm_processes for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
    }
    assert vllm_listening <= {"127.0.0.1"}, vllm_listening
    router_port = int(live_stack.url.rsplit(":", 1)[1])
    listening = [
        (c.laddr.ip, c.laddr.port, p.name()) for p in [psutil.Process(), *stack_processes] for c in _listening(p)
    ]
    router = [entry for entry in listening if entry[1] == router_port]
    assert router and {ip for ip, _, _ in router} == {"127.0.0.1"}, router
    others = [entry for entry in listening if entry[0] not in ("127.0.0.1", "::1") and entry[1] != router_port]
    not_ray = [entry for entry in others if not _is_ray(entry[2])]
    assert not not_ray, f"non-loopback listeners that are not Ray's: {not_ray}"
    print(f"\nlistening beyond loopback (Ray's own): {sorted({(ip, name) for ip, _, name in others})}")


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _listening(process) -> list:
    try:
        return [c for c in process.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    except psutil.Error:
        return []


def _is_ray(name: str) -> bool:
    # Ray's daemons and workers; the test process itself is Ray's driver (its core worker's gRPC server)
    return name.startswith(("ray::", "gcs_server", "raylet")) or name in ("python", "python3", "python3.11", "pytest")


def _raw_post(url: str, head: str, chunks, pause_s: float = 0.0) -> tuple[int, int, float]:
    """Send a body by hand (chunked, maybe slowly) until the server answers or stops reading;
    (status, bytes of body sent, seconds)."""
    host, port = url.removeprefix("http://").split(":")
    started, sent, answer = time.monotonic(), 0, b""
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head.encode())
        sock.settimeout(5.0)  # a send that blocks this long: the server has stopped reading
        for chunk in chunks:
            try:
                sock.sendall(chunk)
                sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            # an answer already there? (select, not recv(MSG_DONTWAIT): on a socket with a timeout CPython
            # waits up to that timeout for readability before it calls recv)
            if select.select([sock], [], [], 0)[0]:
                break
            if pause_s:
                time.sleep(pause_s)
        sock.settimeout(60)
        while b"\r\n" not in answer:
            try:
                more = sock.recv(65536)
            except ConnectionResetError:  # the server closed with unread data: its answer may be lost
                break
            if not more:
                break
            answer += more
    return int(answer.split(b" ")[1]), sent, time.monotonic() - started


def _peak_rss_while(groups: dict[str, list[psutil.Process]], work) -> dict:
    """Run `work()` while sampling each group's summed RSS every 10 ms; {group: peak bytes, "result": ...}."""
    import threading

    def rss(group):
        return sum(p.memory_info().rss for p in group)

    peaks, done = {name: rss(group) for name, group in groups.items()}, threading.Event()

    def sample():
        while not done.is_set():
            for name, group in groups.items():
                peaks[name] = max(peaks[name], rss(group))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = work()
    finally:
        done.set()
        sampler.join()
    return {**peaks, "result": result}


def test_bodies_are_refused_while_they_are_read(live_stack):
    limit = body_limit(live_stack.profile.router.max_image_bytes)
    # declared too large: refused from the header, before the body is sent
    declared = (
        f"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {300 * 1024 * 1024}\r\n\r\n"
    )
    status, sent, seconds = _raw_post(live_stack.url, declared, [b"{"])
    assert status == 413 and sent == 1 and seconds < 10, (status, sent, seconds)
    head_chunked = (
        f"POST /v1/score HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    # chunked, no Content-Length: cut off in Ray Serve's proxy once past the limit (serve.body); the proxy holds
    # at most the limit (and its join), the router replica nothing of it
    replicas, proxies = actor_processes("ScoringRouter"), actor_processes("ProxyActor")
    assert replicas and proxies
    before = {"replica": sum(p.memory_info().rss for p in replicas), "proxy": sum(p.memory_info().rss for p in proxies)}
    peaks = _peak_rss_while(
        {"replica": replicas, "proxy": proxies},
        lambda: _raw_post(
            live_stack.url, head_chunked, (b"100000\r\n" + b"A" * (1 << 20) + b"\r\n" for _ in range(300))
        ),
    )
    status, sent, seconds = peaks.pop("result")
    assert status == 413 and sent < 2 * limit, (status, sent)
    growth_mb = {name: (peaks[name] - before[name]) / 2**20 for name in before}
    print(
        f"a 300 MB chunked body refused after {sent / 2**20:.0f} MB sent, in {seconds:.1f} s (limit "
        f"{limit / 2**20:.1f} MB);"
        f" peak RSS growth: router replica +{growth_mb['replica']:.0f} MB, proxy +{growth_mb['proxy']:.0f} MB"
    )
    limit_mb = limit / 2**20
    assert growth_mb["replica"] < 16 and growth_mb["proxy"] < 2 * limit_mb + 32, growth_mb
    # trickled: 408 after the profile's body_timeout_s
    timeout_s = live_stack.profile.router.body_timeout_s
    trickle = (b"1\r\nA\r\n" for _ in range(10_000))
    status, sent, seconds = _raw_post(live_stack.url, head_chunked, trickle, pause_s=0.2)
    assert status == 408 and timeout_s - 1 <= seconds <= timeout_s + 10, (status, seconds)
    # and the router keeps serving
    ok = httpx.post(
        f"{live_stack.url}/v1/score",
        headers=AUTH,
        timeout=120,
        json={"image": base64.b64encode(png_bytes(drawing(62))).decode(), "dimensions": ["realism"]},
    )
    assert ok.status_code == 200


def test_the_json_envelope_is_bounded(live_stack):
    image = base64.b64encode(png_bytes(drawing(63))).decode()
    long_text = httpx.post(
        f"{live_stack.url}/v1/score", headers=AUTH, timeout=60, json={"image": image, "description": "x" * 5000}
    )
    assert long_text.status_code == 422 and "description" in long_text.json()["error"]["message"]
    many = httpx.post(
        f"{live_stack.url}/v1/score", headers=AUTH, timeout=60, json={"image": image, "dimensions": ["realism"] * 100}
    )
    assert many.status_code == 422 and "dimensions" in many.json()["error"]["message"]


def test_awkward_images_are_scored_and_hostile_ones_refused_while_the_router_stays_small(live_stack):
    from tests.hostile_images import awkward_images, hostile_images

    for name, data in awkward_images().items():
        response = httpx.post(f"{live_stack.url}/v1/score", headers=AUTH, files={"image": (name, data)}, timeout=120)
        assert response.status_code == 200 and len(response.json()["scores"]) == 9, (name, response.text)
    for name, (data, fragment) in hostile_images().items():
        for kwargs in ({"files": {"image": (name, data)}}, {"json": {"image": base64.b64encode(data).decode()}}):
            response = httpx.post(f"{live_stack.url}/v1/score", headers=AUTH, timeout=60, **kwargs)
            assert response.status_code in (400, 413) and fragment in response.json()["error"]["message"], (
                name,
                response.text,
            )
    png = base64.b64encode(png_bytes(drawing(64))).decode()
    for url, fragment in (
        (f"data:image/jpeg;base64,{png}", "bytes are PNG"),
        ("http://127.0.0.1:1/a.png", "does not fetch"),
        ("file:///etc/passwd", "does not fetch"),
        ("https://example.com/a.png", "does not fetch"),
    ):
        chat = httpx.post(
            f"{live_stack.url}/v1/chat/completions",
            headers=AUTH,
            timeout=60,
            json={
                "model": "kidsartbench",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
            },
        )
        assert 400 <= chat.status_code < 500 and fragment in chat.json()["error"]["message"], (url, chat.text)
    # peak resident memory of the router replica(s) while 20 bombs (10 G pixels declared) are refused
    from tests.hostile_images import png_bomb

    replicas = actor_processes("ScoringRouter")
    assert replicas, "no router replica process found"
    before = sum(p.memory_info().rss for p in replicas)

    def bombs() -> None:
        for _ in range(20):
            assert (
                httpx.post(
                    f"{live_stack.url}/v1/score", headers=AUTH, files={"image": ("b.png", png_bomb())}, timeout=60
                ).status_code
                == 413
            )

    growth_mb = (_peak_rss_while({"replica": replicas}, bombs)["replica"] - before) / 2**20
    print(f"router replica RSS while 20 bombs were refused: {before / 2**20:.0f} MB before, peak +{growth_mb:.1f} MB")
    assert growth_mb < 50
    assert httpx.get(f"{live_stack.url}/readyz").status_code == 200
