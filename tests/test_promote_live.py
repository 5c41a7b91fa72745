"""Promote and roll back adapter sets on the live keyed stack under locust's nominal load, with `kidsart adapters`.

A scoring key is refused (403), no key 401, an admin key cannot score (401), a missing set 422. A worse set (the
untrained adapters) is refused by the gate (exit 2, the figures printed) and nothing changes. A set no worse (the
trained adapters with one weight nudged: new content hashes, scores equal to float noise) passes the gate and is
served without a restart: answers name its version. Rollback returns to the start set. Locust's nominal users (8)
run throughout: no request fails.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from safetensors.numpy import load_file, save_file

from adapters.manifest import load_manifest, write_manifest
from tests.conftest import AUTH, LIVE_ADMIN_KEY, LIVE_API_KEY, drawing, png_bytes, wait_for
from tests.locust_helpers import kill, requests_logged, start_locust
from tests.test_adapter_sets import DEPLOYMENTS, untrained_set
from train.synth import write_dataset

pytestmark = pytest.mark.integration

KIDSART = str(Path(sys.executable).with_name("kidsart"))
NUDGED_VERSION = "raft-1.t1"


def nudged_set(folder: Path) -> Path:
    """The committed trained set with every adapter's first lora_B weight moved by 1e-6 and version NUDGED_VERSION."""
    spec = yaml.safe_load((DEPLOYMENTS / "tiny.yaml").read_text(encoding="utf-8"))
    adapters = []
    for entry in spec["adapters"]:
        source = (DEPLOYMENTS / entry).resolve()
        target = folder / source.name
        shutil.copytree(source, target)
        weights = load_file(str(target / "adapter_model.safetensors"))
        first = sorted(k for k in weights if "lora_B" in k)[0]
        weights[first].flat[0] += 1e-6  # new bytes and hashes; scores equal within float noise
        save_file(weights, str(target / "adapter_model.safetensors"))
        write_manifest(target, load_manifest(target).model_copy(update={"version": NUDGED_VERSION}))
        adapters.append(str(target))
    spec["adapters"] = adapters
    spec["feedback_adapter"] = str((DEPLOYMENTS / spec["feedback_adapter"]).resolve())
    spec.pop("calibration")  # calibrated for the raft-1 adapters only
    path = folder / "nudged.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def _adapters(url: str, key: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [KIDSART, "adapters", *args, "--url", url, "--admin-key", key],
        capture_output=True,
        text=True,
        timeout=600,
    )


def _realism_adapter(url: str, image: str) -> str:
    answer = httpx.post(url + "/v1/score", json={"image": image, "dimensions": ["realism"]}, headers=AUTH, timeout=60)
    answer.raise_for_status()
    return answer.json()["scores"]["realism"]["adapter"]


def test_promote_is_gated_served_without_a_restart_under_load_and_rolled_back(live_stack, tmp_path):
    url = live_stack.url
    holdout = write_dataset(24, 503, tmp_path / "holdout")
    worse, better = untrained_set(tmp_path), nudged_set(tmp_path)
    image = base64.b64encode(png_bytes(drawing(5))).decode()
    gate = ["--holdout", str(holdout), "--holdout-images", str(holdout.parent / "images")]

    refused = _adapters(url, LIVE_API_KEY, "status")
    assert refused.returncode == 2 and "403" in refused.stderr and "may score but not change" in refused.stderr
    assert httpx.post(url + "/v1/admin/adapters/rollback", timeout=30).status_code == 401  # no key
    admin = {"Authorization": f"Bearer {LIVE_ADMIN_KEY}"}
    assert httpx.post(url + "/v1/score", json={"image": image}, headers=admin, timeout=30).status_code == 401
    missing = httpx.post(url + "/v1/admin/adapters/promote", json={"deployment": "/no/such.yaml"}, headers=admin)
    assert missing.status_code == 422 and "does not exist" in missing.json()["error"]["message"]

    locust, requests_log = start_locust(url, tmp_path, "locust", users=8)  # the nominal scenario's users
    try:
        wait_for(lambda: sum(r["outcome"] == "ok" for r in requests_logged(requests_log)) >= 8, 120, "locust traffic")
        no = _adapters(url, LIVE_ADMIN_KEY, "promote", str(worse), *gate)
        assert no.returncode == 2, no.stderr[-2000:]
        assert "REFUSED" in no.stdout and "mean SRCC on 24 held-out artworks" in no.stdout
        assert _realism_adapter(url, image) == "realism@raft-1"

        yes = _adapters(url, LIVE_ADMIN_KEY, "promote", str(better), *gate)
        assert yes.returncode == 0, yes.stderr[-2000:]
        assert "accepted" in yes.stdout and f"realism@{NUDGED_VERSION}" in yes.stdout
        wait_for(lambda: _realism_adapter(url, image) == f"realism@{NUDGED_VERSION}", 10, "answers from the new set")

        back = _adapters(url, LIVE_ADMIN_KEY, "rollback")
        assert back.returncode == 0 and "realism@raft-1" in back.stdout, back.stderr[-2000:]
        wait_for(lambda: _realism_adapter(url, image) == "realism@raft-1", 10, "answers from the start set again")
        wait_for(lambda: len(requests_logged(requests_log)) >= 40, 120, "more locust traffic after the rollback")
    finally:
        kill(locust)
        status = _adapters(url, LIVE_ADMIN_KEY, "status")
        if "serving tiny (" not in status.stdout:
            _adapters(url, LIVE_ADMIN_KEY, "rollback")  # leave the session's stack on its start set
    answered = requests_logged(requests_log)
    failed = [r for r in answered if r["outcome"] != "ok"]
    assert len(answered) >= 40 and not failed, f"{len(failed)} of {len(answered)} failed: {failed[:3]}"
