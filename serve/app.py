"""The application builder a Ray Serve config names: `import_path: serve.app:build`.

`serve run FILE` / `serve deploy FILE` (and KubeRay's `serveConfigV2`) call `build(args)` on the
cluster with the config's `args`; it loads the profile and its deployment set there, as
`kidsart serve` does, and binds the engine deployment and the router. The config's
`deployments:` entries (written by `kidsart deploy-config` from the same profile) then set
each deployment's replicas, resources and health checks; an operator edits them there.

API keys never sit in a config file: the router's keys are read from `KIDSART_API_KEYS` (and its
admin keys, which promote and roll back adapter sets, from `KIDSART_ADMIN_KEYS`) in
the environment of the process that builds the application (on a cluster, the Ray nodes';
on Kubernetes, from a Secret), and a router listening beyond loopback refuses to start
without one unless the config says `insecure_no_auth: true`.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class AppArgs(BaseModel):
    """The `args` of the application in a Serve config."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field(description="Profile name (adapters/profiles/) or path to a profile YAML, as on the cluster.")
    deployment: str | None = Field(
        default=None, description="Deployment-set YAML to serve instead of the profile's own."
    )
    listen_host: str = Field(
        default="127.0.0.1",
        description="The address Ray Serve's proxy listens on (the config's "
        "http_options.host): beyond loopback, API keys are required.",
    )
    insecure_no_auth: bool = Field(
        default=False,
        description="Serve beyond loopback without API keys (a private network the operator vouches for).",
    )


def build(args: dict):
    """The bound application (engine deployment + router) for a Serve config's `args`."""
    from adapters.logs import setup_logging
    from adapters.manifest import load_profile_deployment
    from adapters.profiles import load_profile
    from serve.keys import check_exposure, load_admin_keys, load_api_keys
    from serve.stack import build_application

    setup_logging()
    parsed = AppArgs.model_validate(args)
    profile = load_profile(parsed.profile, parsed.deployment)
    keys = load_api_keys()
    log.info("%s", check_exposure(parsed.listen_host, keys, parsed.insecure_no_auth))
    admin_keys = load_admin_keys(keys)
    return build_application(profile, load_profile_deployment(profile), keys, admin_keys=admin_keys)
