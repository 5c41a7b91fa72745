"""Past one machine: a Ray cluster of three nodes on this machine, a worker node lost mid-run and added back.

As Ray's own tests do, `ray.cluster_utils.Cluster` starts a head node (Ray's control plane, Serve's controller
and proxy, the router: custom resource `kidsart_router`) and two worker nodes (one CPU and one `kidsart_engine`
each). The tiny profile's Serve config, written by `kidsart deploy-config` and edited as an operator would (two
engine replicas needing `kidsart_engine`, the router on the head, the proxy on the head only: three nodes here
share one machine and so one port), is applied with Ray's own `serve run --address`. Then, under a locust load
and a district job that scores through the engine deployment with Ray handles (`--pipeline ray --ray-address`),
the node of one engine replica is removed (its raylet and every process on it killed, as a machine lost). Checked:
no request fails other than 503 + Retry-After, the district job exits 0 with every input exactly once, Ray Serve
counts one replica while the node is gone (it cannot place the replacement anywhere: no node has a free
`kidsart_engine`), and places it again when a node is added back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from tests.conftest import free_port, readyz, stop_live_stack, wait_for
from tests.district_helpers import REPO, cli, journal_keys, journal_lines
from tests.locust_helpers import USERS, kill, requests_logged, start_locust

pytestmark = [pytest.mark.integration, pytest.mark.multinode, pytest.mark.own_ray]

BIN = Path(sys.executable).parent
ENGINE_RESOURCE, ROUTER_RESOURCE = "kidsart_engine", "kidsart_router"
AFTER_LOSS_S = 15.0


def _operator_edits(config: dict, port: int) -> dict:
    """What an operator changes in the written file for this cluster."""
    config["proxy_location"] = "HeadOnly"
    config["http_options"]["port"] = port
    engine, router, runner, sets = config["applications"][0]["deployments"]
    engine["num_replicas"] = 2
    engine["ray_actor_options"]["resources"] = {ENGINE_RESOURCE: 1}
    router["ray_actor_options"]["resources"] = {ROUTER_RESOURCE: 1}
    runner["ray_actor_options"]["resources"] = {ROUTER_RESOURCE: 1}
    sets["ray_actor_options"]["resources"] = {ROUTER_RESOURCE: 1}
    return config


def _raylet_pid(node) -> int:
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def _engine_replicas_on(node) -> int:
    from tests.conftest import engine_replicas

    return len(engine_replicas(_raylet_pid(node)))


def _running_engines() -> int:
    from serve.scoring import APP_NAME, engine_status

    return engine_status(APP_NAME)[0]


@pytest.fixture
def cluster(tmp_path):
    """Three Ray nodes on this machine (this process their driver), the proxy's body limits in their environment."""
    import ray
    from ray.cluster_utils import Cluster

    from adapters.profiles import load_profile
    from serve.deploy_config import node_environment

    stop_live_stack()
    os.environ.update(node_environment(load_profile("tiny")))  # inherited by every node's processes
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "resources": {ROUTER_RESOURCE: 4}, "include_dashboard": False},
    )
    workers = [cluster.add_node(num_cpus=1, resources={ENGINE_RESOURCE: 1}) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield cluster, workers
    finally:
        from ray import serve

        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()


def test_a_node_lost_mid_run_loses_no_work(cluster, tmp_path):
    from train.district import make_district

    cluster, workers = cluster
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    written = tmp_path / "tiny-serve.yaml"
    done = subprocess.run(
        [str(BIN / "kidsart"), "deploy-config", "--profile", "tiny", "--out", str(written)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    config_path = tmp_path / "cluster-serve.yaml"
    config_path.write_text(yaml.safe_dump(_operator_edits(yaml.safe_load(written.read_text()), port)))
    started = time.time()
    applied = subprocess.run(
        [str(BIN / "serve"), "run", "--address", cluster.address, "--non-blocking", str(config_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-3000:]
    wait_for(lambda: readyz(url)[0] == 200 and _running_engines() == 2, 420, "two engine replicas and the router")
    ready_s = time.time() - started
    lost, kept = workers
    assert _engine_replicas_on(lost) == 1 and _engine_replicas_on(kept) == 1, "one engine replica per worker node"
    scored = httpx.post(f"{url}/v1/score", json={"image": _png_b64()}, timeout=120)
    assert scored.status_code == 200 and len(scored.json()["scores"]) == 9, scored.text[:500]

    root = tmp_path / "district"
    info = make_district(root, seed=41, schools=1, grades=2, classes=2, images=60, broken=0, duplicates=0)
    out = tmp_path / "district-out"
    district_log = (tmp_path / "district.log").open("w", encoding="utf-8")
    district = subprocess.Popen(
        cli(
            str(root),
            "--out",
            str(out),
            "--pipeline",
            "ray",
            "--ray-address",
            cluster.address,
            "--ray-batch-size",
            "4",
            "--no-report",
            "--no-progress",
        ),
        cwd=REPO,
        env={**os.environ, "KIDSART_LOG_LEVEL": "WARNING"},
        stdout=district_log,
        stderr=subprocess.STDOUT,
    )
    locust, requests_log = start_locust(url, tmp_path, "locust")
    try:
        wait_for(
            lambda: sum(r["outcome"] == "ok" for r in requests_logged(requests_log)) >= 8 and journal_lines(out) >= 8,
            300,
            "locust and the district job to be scoring",
        )
        assert district.poll() is None, "the district job ended before the node was lost"
        lost_at = time.time()
        cluster.remove_node(lost, allow_graceful=False)
        wait_for(lambda: _running_engines() == 1, 120, "Ray Serve to count one engine replica")
        time.sleep(AFTER_LOSS_S)  # the load goes on with one replica, and nowhere to place another
        assert _running_engines() == 1
        cluster.add_node(num_cpus=1, resources={ENGINE_RESOURCE: 1})
        added_at = time.time()
        wait_for(lambda: _running_engines() == 2, 420, "Ray Serve to place the engine replica again", poll=1.0)
        back_at = time.time()
        district.wait(timeout=600)
        locust.send_signal(signal.SIGTERM)
        locust.wait(timeout=120)
    finally:
        kill(locust, district)
        district_log.close()
    district_output = (tmp_path / "district.log").read_text(encoding="utf-8")

    answered = requests_logged(requests_log)
    failures = [r for r in answered if r["outcome"] != "ok"]
    wrong = [r for r in failures if r["status"] != 503 or not r["retry_after"]]
    assert not wrong, f"failures other than 503 + Retry-After: {wrong[:5]}"
    around = [r for r in answered if r["start"] >= lost_at - 5 and r["end"] <= back_at]
    assert len(around) >= 10, f"too few requests between the loss and the return ({len(around)}) to show anything"
    assert district.returncode == 0, district_output[-3000:]
    keys = journal_keys(out)
    assert len(keys) == info["expected_inputs"] and Counter(keys).most_common(1)[0][1] == 1
    frame = pd.read_parquet(out / "scores.parquet")
    assert len(frame) == info["expected_inputs"] and (frame.status == "ok").all(), frame.status.value_counts()
    print(
        f"\nthree-node Ray cluster, `serve run` of the written tiny config: ready in {ready_s:.1f} s; a worker node "
        f"removed under {USERS} locust users and a district job (handles, {len(frame)} images): {len(answered)} "
        f"requests, {len(failures)} failed (all 503 + Retry-After), {len(around)} between the loss and the return; "
        f"replica placed again {back_at - added_at:.1f} s after a node was added ({back_at - lost_at:.1f} s after "
        f"the loss); district rows {len(frame)}, each once"
    )


def _png_b64() -> str:
    import base64

    from tests.conftest import drawing, png_bytes

    return base64.b64encode(png_bytes(drawing(4101))).decode("ascii")
