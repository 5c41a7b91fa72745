"""Start and stop the whole serving stack: one Ray Serve application of engine replicas and router.

`Stack(profile)` validates the deployment set, starts a local Ray instance, deploys the application (the engine
deployment,
`serve.engine_server`, and the router in front of it, `serve.router`) and waits until the
router's /readyz answers. Ray Serve then owns the engines' lives: it health-checks every
replica and replaces one whose engine died. `Stack.outage()` reads Ray Serve's status of the
engine deployment and says when no replica has been healthy for `engine.max_outage_s`
(`kidsart serve` then exits non-zero). Stopping shuts down Serve (each replica shuts its
engine down), then the Ray instance this stack started, then reaps anything left of it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import httpx

from adapters.errors import KidsArtError
from adapters.manifest import Deployment, load_profile_deployment
from adapters.profiles import Profile
from adapters.score_tokens import base_score_token_ids
from serve.body import proxy_environment
from serve.keys import check_exposure, digest
from serve.scoring import APP_NAME, EngineWatch, RouterRuntime, engine_status

log = logging.getLogger(__name__)


class StackStartError(KidsArtError):
    kind = "stack_start_failed"


def router_runtime(
    profile: Profile,
    deployment: Deployment,
    api_keys: tuple[str, ...] | list[str] = (),
    admin_keys: tuple[str, ...] | list[str] = (),
) -> RouterRuntime:
    from serve.engine import lora_paths

    return RouterRuntime(
        rubric=str(deployment.rubric.name),
        adapters={dim: deployment.adapters[dim].manifest.label for dim in deployment.dimensions},
        settings=profile.router,
        limits=profile.limits,
        api_key_digests=[digest(key) for key in api_keys],
        prompt_format=deployment.prompt_format,
        feedback_adapter=deployment.feedback.manifest.label if deployment.feedback else None,
        feedback=profile.feedback,
        deployment_name=deployment.name,
        max_outage_s=profile.engine.max_outage_s,
        batch=profile.batch,
        calibration=deployment.calibration,
        modules=deployment.module_names,
        lora_paths=lora_paths(deployment),
        admin_key_digests=[digest(key) for key in admin_keys],
    )


def engine_runtime(profile: Profile, deployment: Deployment):
    """What each engine replica is built from (serve.engine_server.EngineRuntime)."""
    from serve.engine import engine_cli_args, lora_paths
    from serve.engine_server import EngineRuntime

    return EngineRuntime(
        cli_args=engine_cli_args(profile, deployment),
        lora_paths=lora_paths(deployment),
        modules=deployment.module_names,
        rubric=str(deployment.rubric.name),
        prompt_format=deployment.prompt_format,
        score_token_ids=base_score_token_ids(profile.base.resolved_path, deployment.rubric.score_tokens),
        feedback=profile.feedback,
        image_size=profile.image_size,
    )


def build_application(
    profile: Profile,
    deployment: Deployment,
    api_keys: tuple[str, ...] | list[str] = (),
    home: Path | None = None,
    admin_keys: tuple[str, ...] | list[str] = (),
):
    """The bound Ray Serve application (engine deployment, router, batch runner, adapter sets) for a profile and
    deployment set; the Batch API's and the served set's state under `home` (default: the data directory,
    KIDSART_HOME)."""
    from adapters.locations import data_home
    from serve.adapter_sets import SetChecks, served_set, sets_deployment
    from serve.batch.runner import runner_deployment
    from serve.engine import engine_env
    from serve.engine_server import engine_deployment
    from serve.router import build_app

    home = home or data_home()
    engine = engine_deployment(profile.engine, engine_runtime(profile, deployment), engine_env(profile))
    batches = runner_deployment(profile.batch, APP_NAME, profile.router.resources, home)
    checks = SetChecks(
        max_lora_rank=profile.engine.max_lora_rank,
        base_dir=str(profile.base.resolved_path) if profile.base.source == "local" else None,
        image_size=profile.image_size,
    )
    sets = sets_deployment(served_set(deployment), checks, profile.router.resources, home)
    return build_app(router_runtime(profile, deployment, api_keys, admin_keys), engine, batches, sets)


def with_ports(profile: Profile, router_port: int | None = None, router_host: str | None = None) -> Profile:
    """A copy of the profile with the router on another port or address (tests, parallel stacks, serve --host)."""
    router = {k: v for k, v in (("port", router_port), ("host", router_host)) if v is not None}
    return profile.model_copy(update={"router": profile.router.model_copy(update=router)}) if router else profile


def _descendants() -> list:
    """Every process started under this driver: Ray's (GCS, raylet, workers) and vLLM's under its workers."""
    import psutil

    return psutil.Process().children(recursive=True)


def _reap(processes: list, timeout: float = 10.0) -> None:
    """Give the stack's processes `timeout` s to exit after ray.shutdown(), then kill what is left."""
    import psutil

    _gone, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        try:
            log.warning("killing leftover process %d (%s)", process.pid, process.name())
            process.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=5)


def wait_router_ready(url: str, timeout: float = 120.0) -> float:
    """Poll the router's /readyz until it answers 200; the seconds waited, or StackStartError with the last reason."""
    started = time.monotonic()
    reason = "no answer"
    while time.monotonic() - started < timeout:
        try:
            response = httpx.get(f"{url}/readyz", timeout=5.0)
            if response.status_code == 200:
                return time.monotonic() - started
            reason = f"/readyz answered {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            reason = exc.__class__.__name__
        time.sleep(0.5)
    raise StackStartError(f"router at {url} not ready after {timeout:.0f} s: {reason}")


class Stack:
    """The engine replicas and the router for one profile; a context manager."""

    def __init__(
        self,
        profile: Profile,
        *,
        router_port: int | None = None,
        log_dir: Path | None = None,
        api_keys: list[str] | None = None,
        admin_keys: list[str] | None = None,
        insecure_no_auth: bool = False,
        router_host: str | None = None,
        home: Path | None = None,
    ):
        self.home = home
        self.profile = with_ports(profile, router_port, router_host)
        self.api_keys = list(api_keys or [])
        self.admin_keys = list(admin_keys or [])
        # refused here, before anything starts, when the router would be open on a non-loopback address
        self.key_status = check_exposure(self.profile.router.host, self.api_keys, insecure_no_auth)
        self.deployment = load_profile_deployment(self.profile)
        # the engine's and the router's logs are Ray's (one file per replica); `log_dir/ray` points at them
        self.log_dir = Path(log_dir) if log_dir else Path("runs") / "logs"
        self.watch = EngineWatch(self.profile.engine.max_outage_s)
        self._ray_started = False
        self._processes: list = []

    @property
    def url(self) -> str:
        return f"http://{self.profile.router.host}:{self.profile.router.port}"

    def start(self) -> Stack:
        started = time.monotonic()
        deadline = started + self.profile.engine.startup_timeout_s
        try:
            self._start_ray()
            from ray import serve

            serve.start(
                http_options={"host": self.profile.router.host, "port": self.profile.router.port},
                proxy_location=self.profile.router.proxy_location,
            )
            serve.run(
                build_application(self.profile, self.deployment, self.api_keys, self.home, self.admin_keys),
                name=APP_NAME,
                route_prefix="/",
                blocking=False,
            )
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise
        log.info("stack ready at %s in %.1f s", self.url, time.monotonic() - started)
        return self

    def _start_ray(self) -> None:
        import ray

        if ray.is_initialized():
            log.warning("Ray was already running: its proxy keeps the body limits it started with")
            return
        # Ray's processes inherit this: its HTTP proxy then refuses oversized and trickled bodies itself
        router = self.profile.router
        os.environ.update(
            proxy_environment(router.max_image_bytes, router.body_timeout_s, self.profile.batch.max_file_bytes)
        )
        # Ray 2.60 binds its own ports to all interfaces whatever node address it is given (it turns
        # 127.0.0.1 into the machine's address): docs/security.md
        ray.init(num_cpus=router.ray_num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self._ray_started = True
        self._link_logs()

    def _link_logs(self) -> None:
        """`log_dir/ray` -> this Ray session's log folder (serve/replica_<app>_EngineServer_*.log, worker-*.err)."""
        import ray

        try:
            logs = Path(ray._private.worker._global_node.get_logs_dir_path())  # Ray has no public accessor for it
        except AttributeError:
            log.info("Ray's log folder is not known here (a remote cluster): see the cluster's own logs")
            return
        link = self.log_dir / "ray"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            log.warning("%s exists and is not a link: Ray's logs are in %s", link, logs)
            return
        link.symlink_to(logs, target_is_directory=True)
        log.info("engine and router logs: %s -> %s", link, logs)

    def _wait_ready(self, deadline: float) -> None:
        """Until /readyz answers 200, or StackStartError: a deployment Ray Serve gave up on (its constructor
        failing), or `engine.startup_timeout_s` spent (the last reason named)."""
        from ray import serve

        reason = "no answer"
        while True:
            app = serve.status().applications.get(APP_NAME)
            if app is not None and str(app.status).endswith("DEPLOY_FAILED"):
                raise StackStartError(f"Ray Serve could not deploy {APP_NAME!r}: {app.message[:2000]}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StackStartError(
                    f"the stack at {self.url} was not ready within engine.startup_timeout_s="
                    f"{self.profile.engine.startup_timeout_s:.0f} s: {reason}"
                )
            try:
                wait_router_ready(self.url, min(5.0, remaining))
                return
            except StackStartError as exc:
                reason = str(exc)

    def engine_replicas(self) -> tuple[int, str]:
        """(running engine replicas, Ray Serve's message) of this stack's application."""
        return engine_status(APP_NAME)

    def outage(self) -> str | None:
        """Why the stack should give up (no engine replica healthy for engine.max_outage_s), or None."""
        self.watch.update(*self.engine_replicas())
        if self.watch.outage_s() > self.profile.engine.max_outage_s:
            return self.watch.reason()
        return None

    def stop(self) -> None:
        import ray
        from ray import serve

        if ray.is_initialized():
            self._processes = _descendants() if self._ray_started else []
            try:
                serve.shutdown()
            finally:
                if self._ray_started:
                    ray.shutdown()
                    self._ray_started = False
                    _reap(self._processes)
        log.info("stack stopped")

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
