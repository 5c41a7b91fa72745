"""Where a district run gets its router, rubric and limits from, then runs the job.

Three ways, chosen by the CLI's options:
- `--url`: a running router, from anywhere; its `GET /v1/models` names the rubric it
  serves, says whether it has a feedback adapter and gives its input limits (a resumed
  run keeps the rubric it started with);
- `--pipeline ray --ray-address ADDR`: inside the Ray cluster that serves the
  application: the job scores through the engine deployment with Ray Serve handles
  (serve.district.handles), and reads what is served from a router replica;
- `--profile`: the profile's stack (engine replicas + router) is started for this run and
  stopped after (with `--pipeline ray`, scored through its handles); vLLM's processes end
  with their replica even if the run is killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.errors import ConfigError, KidsArtError
from adapters.limits import DEFAULT_LIMITS, InputLimits
from serve.district.job import RUN_META, DistrictJobConfig, JobResult, run_job

if TYPE_CHECKING:
    from serve.client import ServedModels

log = logging.getLogger(__name__)


@dataclass
class Target:
    """What the run talks to, from the CLI's options: a router's URL, or a profile (and deployment set) whose
    stack is started here."""

    url: str | None = None
    profile: str | None = None
    deployment: str | None = None
    rubric: str | None = None  # --rubric: else the profile's, the resumed run's, or the router's
    router_port: int | None = None


def previous_rubric(out: Path) -> str | None:
    """The rubric of the run already in `out` (a resumed run keeps its rubric without asking the router)."""
    try:
        return json.loads((out / RUN_META).read_text(encoding="utf-8")).get("rubric")
    except (OSError, ValueError):
        return None


def served_models(url: str, max_wait_s: float = 30.0) -> ServedModels:
    """What the router at `url` serves (rubric, dimensions, feedback adapter, limits), waiting up to
    `max_wait_s` for a router that is still starting."""
    from serve.client import RetryPolicy, ScoringClient

    try:
        with ScoringClient(url, policy=RetryPolicy(max_outage_s=max_wait_s, max_delay_s=5.0)) as client:
            return client.served()
    except KidsArtError as exc:
        raise ConfigError(
            f"could not read {url}/v1/models ({exc.__class__.__name__}: {exc}); pass --rubric NAME"
        ) from exc


def run_district(config: DistrictJobConfig, target: Target, *, announce=log.info) -> JobResult:
    """Resolve the router, the cluster or the profile's stack, the rubric and the limits; run the job."""
    from adapters.feedback import require_feedback_adapter

    handles = config.pipeline == "ray" and not target.url
    with contextlib.ExitStack() as stack_ctx:
        limits, url, runtime = DEFAULT_LIMITS, target.url, None
        if target.profile:
            from adapters.manifest import load_profile_deployment
            from adapters.profiles import load_profile

            loaded = load_profile(target.profile, target.deployment)
            served = load_profile_deployment(loaded)
            config.rubric = target.rubric or served.rubric.name
            limits = loaded.limits
            if config.feedback:
                require_feedback_adapter(served.feedback is not None, f"deployment {served.name!r} ({served.source})")
            if not url:
                url = _start_stack(stack_ctx, loaded, config, target, announce)
        if handles:
            config.rubric, limits, runtime = _from_cluster(config, target)
        elif not target.profile:
            config.rubric, limits = _from_router(
                url, target.rubric or previous_rubric(Path(config.out)), config.feedback
            )
        return run_job(config, url=None if handles else url, limits=limits, runtime=runtime)


def _from_cluster(config: DistrictJobConfig, target: Target) -> tuple[str, InputLimits, dict]:
    """(rubric, limits, runtime) of the application on the Ray cluster (this process's, or `--ray-address`)."""
    from adapters.feedback import require_feedback_adapter
    from serve.district.handles import served_runtime
    from serve.district.ray_pipeline import connect_ray

    connect_ray(config.ray_address)
    runtime = served_runtime()
    rubric = str(runtime["rubric"])
    if target.rubric and target.rubric != rubric:
        raise ConfigError(f"--rubric {target.rubric!r}, but the application on the cluster serves {rubric!r}")
    if config.feedback:
        require_feedback_adapter(runtime.get("feedback_adapter") is not None, "the application on the cluster")
    return rubric, InputLimits.model_validate(runtime["limits"]), runtime


def _from_router(url: str, rubric: str | None, feedback: bool) -> tuple[str, InputLimits]:
    """(rubric, limits) of the router at `url`. A router that cannot be read now is fine when the rubric is
    known (a resumed run, --rubric): the job's client waits for it, and its own limits still apply per image."""
    from adapters.feedback import require_feedback_adapter

    try:
        served = served_models(url)
    except ConfigError:
        if rubric is None or feedback:
            raise
        log.warning("could not read %s/v1/models: default input limits for discovery, rubric %s", url, rubric)
        return rubric, DEFAULT_LIMITS
    if feedback:
        require_feedback_adapter(served.feedback_adapter is not None, f"the router at {url}")
    return rubric or served.rubric, served.limits


def _start_stack(stack_ctx: contextlib.ExitStack, loaded, config: DistrictJobConfig, target: Target, announce) -> str:
    from serve.stack import Stack

    out = Path(config.out)
    announce(f"starting the {loaded.name!r} stack (engine replicas + router) for this run ...")
    stack = stack_ctx.enter_context(Stack(loaded, router_port=target.router_port, log_dir=out / "logs"))
    return stack.url
