"""`kidsart deploy-config`: Serve configs and RayService manifests from profiles, checked with Ray's own schema.

The committed files under deploy/ must equal what the command writes now (they are its output, kept true to the
profiles). Starting a written config with `serve run` on a Ray cluster is tests/test_multinode.py's job.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from adapters.profiles import PROFILE_DIR, load_profile
from serve.deploy_config import render, serve_config, validate
from tests.district_helpers import REPO

KIDSART = str(Path(sys.executable).with_name("kidsart"))

PROFILES = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", PROFILES)
@pytest.mark.parametrize("rayservice", [False, True])
def test_every_profile_writes_a_config_ray_accepts(name, rayservice):
    text = render(load_profile(name), rayservice=rayservice)
    config = validate(text)  # ray.serve.schema.ServeDeploySchema
    app = config["applications"][0]
    assert app["import_path"] == "serve.app:build" and app["args"]["profile"] == name
    assert [d["name"] for d in app["deployments"]] == ["EngineServer", "ScoringRouter", "BatchRunner", "AdapterSets"]


def test_a_config_ray_refuses_is_named():
    from adapters.errors import ConfigError

    broken = yaml.safe_dump(
        {
            "applications": [
                {
                    "name": "kidsart",
                    "import_path": "serve.app:build",
                    "deployments": [{"name": "EngineServer", "num_replicas": "many"}],
                }
            ]
        }
    )
    with pytest.raises(ConfigError, match="num_replicas"):
        validate(broken)


def test_the_engine_deployment_carries_the_profiles_replicas_resources_and_health_checks():
    profile = load_profile("production")
    engine, router, runner, sets = serve_config(profile)["applications"][0]["deployments"]
    assert runner["num_replicas"] == 1 and sets["num_replicas"] == 1  # one of each however many routers
    assert sets["ray_actor_options"] == router["ray_actor_options"] == {"num_cpus": 0}  # beside the routers
    assert engine["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 8, "target_ongoing_requests": 64.0}
    assert "num_replicas" not in engine  # autoscaling instead
    assert engine["ray_actor_options"]["num_gpus"] == 1.0
    assert engine["health_check_period_s"] == profile.engine.health_check_period_s
    assert router["num_replicas"] == 2 and router["ray_actor_options"]["num_cpus"] == 0
    spread = profile.model_copy(
        update={
            "engine": profile.engine.model_copy(
                update={
                    "num_replicas": 2,
                    "autoscaling": None,
                    "resources": {"kidsart_engine": 1.0},
                    "max_replicas_per_node": 1,
                }
            )
        }
    )
    engine = serve_config(spread)["applications"][0]["deployments"][0]
    assert engine["num_replicas"] == 2 and engine["max_replicas_per_node"] == 1
    assert engine["ray_actor_options"]["resources"] == {"kidsart_engine": 1.0}


def test_the_rayservice_embeds_the_same_config_and_sizes_its_groups_from_the_profile():
    profile = load_profile("production")
    manifest = yaml.safe_load(render(profile, rayservice=True))
    assert manifest["kind"] == "RayService" and manifest["apiVersion"] == "ray.io/v1"
    assert yaml.safe_load(manifest["spec"]["serveConfigV2"]) == serve_config(profile)
    cluster = manifest["spec"]["rayClusterConfig"]
    (head,) = [cluster["headGroupSpec"]]
    (worker,) = cluster["workerGroupSpecs"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # engines never land on the head
    assert (worker["minReplicas"], worker["maxReplicas"]) == (1, 8)  # one engine replica per GPU pod
    limits = worker["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    assert cluster["enableInTreeAutoscaling"] is True
    env = {e["name"]: e for e in head["template"]["spec"]["containers"][0]["env"]}
    assert env["KIDSART_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == profile.cluster.api_keys_secret
    assert "KIDSART_PROXY_BODY_LIMITS" in env  # the proxy's body limits come from the nodes' environment


@pytest.mark.parametrize(
    "path, rayservice", [("deploy/production-serve.yaml", False), ("deploy/production-rayservice.yaml", True)]
)
def test_the_committed_production_files_are_what_the_command_writes_now(path, rayservice):
    committed = (REPO / path).read_text(encoding="utf-8")
    validate(committed)
    assert committed == render(load_profile("production"), rayservice=rayservice, profile_ref="production"), (
        f"{path} is stale: regenerate it with `kidsart deploy-config --profile production "
        f"{'--rayservice ' if rayservice else ''}--out {path}`"
    )


def test_the_cli_writes_a_valid_file_and_refuses_an_unknown_profile(tmp_path):
    out = tmp_path / "tiny.yaml"
    done = subprocess.run(
        [KIDSART, "deploy-config", "--profile", "tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert validate(out.read_text(encoding="utf-8"))["http_options"]["host"] == "127.0.0.1"
    bad = subprocess.run(
        [KIDSART, "deploy-config", "--profile", "no-such-profile", "--out", str(tmp_path / "x.yaml")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert bad.returncode != 0 and "no-such-profile" in bad.stderr and not (tmp_path / "x.yaml").exists()


def test_the_app_builder_refuses_unknown_args_and_an_open_router_without_keys(monkeypatch):
    from pydantic import ValidationError

    from serve.app import build
    from serve.keys import KeyConfigError

    with pytest.raises(ValidationError, match="num_engines"):
        build({"profile": "tiny", "num_engines": 3})
    monkeypatch.delenv("KIDSART_API_KEYS", raising=False)
    with pytest.raises(KeyConfigError):
        build({"profile": "tiny", "listen_host": "0.0.0.0"})
