"""Deployment files from a profile: a Ray Serve config, and a KubeRay `RayService` that embeds it.

`serve_config(profile)` is the YAML `serve run FILE` / `serve deploy FILE` take: one
application (`kidsart`, import path `serve.app:build`, whose `args` name the profile) with
the engine and router deployments' options written out from the profile by the same
functions `kidsart serve` deploys with (`serve.engine_server.engine_options`,
`serve.router.router_options`), so a file and a `kidsart serve` of one profile deploy the
same thing, and an operator can edit the replicas or resources in the file.
`rayservice_manifest(profile)` embeds that config as `spec.serveConfigV2` beside a head
group and a worker group (one engine replica per worker pod) sized from the profile.

What a file cannot carry, the nodes' environment must (`node_environment`): the proxy's
body limits (Ray Serve's proxy is a system actor, started with the node's environment)
and the API keys (from a Secret, never in a file).
"""

from __future__ import annotations

import math

import yaml

from adapters.profiles import Profile
from serve.body import proxy_environment
from serve.keys import ADMIN_KEYS_ENV, API_KEYS_ENV
from serve.scoring import APP_NAME

IMPORT_PATH = "serve.app:build"
RAY_VERSION = "2.60.0"  # requirements/cpu-constraints.txt: the Ray the image must hold


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people and kubectl: no anchors for repeated lists, multi-line strings as `|` blocks."""

    def ignore_aliases(self, data) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def dump(document: dict) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=120)


def node_environment(profile: Profile) -> dict[str, str]:
    """The environment every Ray node needs before `ray start` (the proxy's body limits)."""
    return proxy_environment(
        profile.router.max_image_bytes, profile.router.body_timeout_s, profile.batch.max_file_bytes
    )


def serve_config(
    profile: Profile,
    *,
    profile_ref: str | None = None,
    deployment_ref: str | None = None,
    insecure_no_auth: bool = False,
) -> dict:
    """The Ray Serve config (a `ServeDeploySchema` document) of a profile.

    `profile_ref` is how the cluster finds the profile (default: its name, shipped in the package);
    `deployment_ref` a deployment set to serve instead of the profile's own."""
    from serve.adapter_sets import sets_options
    from serve.app import AppArgs
    from serve.batch.runner import runner_options
    from serve.engine import engine_env
    from serve.engine_server import engine_options
    from serve.router import router_options

    router = profile.router
    args = AppArgs(
        profile=profile_ref or profile.name,
        deployment=deployment_ref,
        listen_host=router.host,
        insecure_no_auth=insecure_no_auth,
    )
    return {
        "proxy_location": router.proxy_location,
        "http_options": {"host": router.host, "port": router.port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": args.model_dump(exclude_defaults=True),
                "deployments": [
                    engine_options(profile.engine, engine_env(profile)),
                    router_options(router),
                    runner_options(router.resources),
                    sets_options(router.resources),
                ],
            }
        ],
    }


def _engine_replica_bounds(profile: Profile) -> tuple[int, int, int]:
    """(min, initial, max) engine replicas: the autoscaling bounds, or the fixed count three times."""
    scaling = profile.engine.autoscaling
    if scaling is None:
        n = profile.engine.num_replicas
        return n, n, n
    return scaling.min_replicas, max(scaling.min_replicas, 1), scaling.max_replicas


def _container(
    name: str, image: str, cpus: int, memory_gib: int, env: list[dict], gpus: int = 0, ports: list[dict] | None = None
) -> dict:
    limits: dict = {"cpu": str(cpus), "memory": f"{memory_gib}Gi"}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    container = {"name": name, "image": image, "env": env, "resources": {"limits": limits, "requests": dict(limits)}}
    if ports:
        container["ports"] = ports
    return container


def _resources_param(resources: dict[str, float]) -> dict:
    """`rayStartParams.resources` (a JSON object as a string), or nothing."""
    if not resources:
        return {}
    import json

    return {"resources": json.dumps(resources, sort_keys=True)}


def rayservice_manifest(profile: Profile, config: dict, *, name: str = "kidsart") -> dict:
    """A KubeRay RayService: `config` as `serveConfigV2`, a head group, one engine replica per GPU worker pod."""
    cluster, engine = profile.cluster, profile.engine
    env = [{"name": k, "value": v} for k, v in sorted(node_environment(profile).items())]
    env.append({"name": API_KEYS_ENV, "valueFrom": {"secretKeyRef": {"name": cluster.api_keys_secret, "key": "keys"}}})
    # the admin keys (promote / roll back adapter sets) from the same Secret; without them those routes answer 403
    admin = {"name": cluster.api_keys_secret, "key": "admin-keys", "optional": True}
    env.append({"name": ADMIN_KEYS_ENV, "valueFrom": {"secretKeyRef": admin}})
    low, initial, high = _engine_replica_bounds(profile)
    worker_cpus = math.ceil(engine.num_cpus) + cluster.worker_cpus_beside_engine
    head_resources = {k: v * profile.router.num_replicas for k, v in profile.router.resources.items()}
    head = {
        # the head runs Ray's control plane, the proxy and the routers (num_cpus 0); engines go to the workers
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0", **_resources_param(head_resources)},
        "template": {
            "spec": {
                "containers": [
                    _container(
                        "ray-head",
                        cluster.image,
                        cluster.head_cpus,
                        cluster.head_memory_gib,
                        env,
                        ports=[
                            {"containerPort": 6379, "name": "gcs"},
                            {"containerPort": 8265, "name": "dashboard"},
                            {"containerPort": 10001, "name": "client"},
                            {"containerPort": profile.router.port, "name": "serve"},
                        ],
                    )
                ]
            }
        },
    }
    worker = {
        "groupName": "engines",
        "replicas": initial,
        "minReplicas": low,
        "maxReplicas": high,
        "rayStartParams": {"num-cpus": str(worker_cpus), **_resources_param(engine.resources)},
        "template": {
            "spec": {
                "containers": [
                    _container(
                        "ray-worker",
                        cluster.image,
                        worker_cpus,
                        cluster.worker_memory_gib,
                        env,
                        gpus=math.ceil(engine.num_gpus) * engine.tensor_parallel_size,
                    )
                ]
            }
        },
    }
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "kidsart", "kidsart/profile": profile.name}},
        "spec": {
            "serveConfigV2": dump(config),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                # Ray Serve's autoscaler asks for engine replicas; KubeRay's adds worker pods to place them
                "enableInTreeAutoscaling": low != high,
                "headGroupSpec": head,
                "workerGroupSpecs": [worker],
            },
        },
    }


def header(profile: Profile, rayservice: bool) -> str:
    """The comment at the top of a written file: where it came from and what the nodes need."""
    lines = [
        f"Written by `kidsart deploy-config --profile {profile.name}{' --rayservice' if rayservice else ''}`.",
        "Regenerate it after changing the profile; replicas and resources may be edited here.",
    ]
    if not rayservice:
        lines += ["Every Ray node needs this environment before `ray start` (the proxy's body limits):"]
        lines += [f"  export {k}='{v}'" for k, v in sorted(node_environment(profile).items())]
        lines += [
            f"and {API_KEYS_ENV} (comma-separated keys) where the application is built, unless the router "
            f"listens on loopback only; {ADMIN_KEYS_ENV} there too to promote adapter sets (kidsart adapters).",
            "Apply: `serve run FILE --address HEAD:6379` (or `serve deploy FILE` with the dashboard).",
        ]
    else:
        lines += [
            f"Needs the KubeRay operator and a Secret {profile.cluster.api_keys_secret!r} with key `keys`:",
            f"  kubectl create secret generic {profile.cluster.api_keys_secret} --from-literal=keys=KEY1,KEY2",
            "Apply: `kubectl apply -f FILE`.",
        ]
    return "".join(f"# {line}\n" for line in lines)


def render(
    profile: Profile,
    *,
    rayservice: bool = False,
    profile_ref: str | None = None,
    deployment_ref: str | None = None,
    insecure_no_auth: bool = False,
) -> str:
    """The file `kidsart deploy-config` writes, as text."""
    config = serve_config(
        profile, profile_ref=profile_ref, deployment_ref=deployment_ref, insecure_no_auth=insecure_no_auth
    )
    document = rayservice_manifest(profile, config) if rayservice else config
    return header(profile, rayservice) + dump(document)


def validate(text: str) -> dict:
    """The Serve config in `text` (a config, or a RayService's `serveConfigV2`) checked with Ray's own schema
    (`ray.serve.schema.ServeDeploySchema`); a ConfigError naming the problem otherwise."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    from adapters.errors import ConfigError

    document = yaml.safe_load(text)
    if isinstance(document, dict) and document.get("kind") == "RayService":
        document = yaml.safe_load(document["spec"]["serveConfigV2"])
    try:
        ServeDeploySchema.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"not a valid Ray Serve config: {exc}") from exc
    return document
