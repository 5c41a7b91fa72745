"""Start and stop the whole serving stack: vLLM engine + Ray Serve router.

`Stack(profile)` validates the deployment set, starts the engine, starts a local
Ray instance and the router application, and waits until /readyz answers. Stopping
shuts down Serve, Ray and the engine's process group, in that order.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from adapters.errors import KidsArtError
from adapters.manifest import Deployment, load_profile_deployment
from adapters.score_tokens import base_score_token_ids
from adapters.profiles import Profile
from serve.body import proxy_environment
from serve.engine import EngineProcess
from serve.keys import check_exposure, digest
from serve.scoring import RouterRuntime
from serve.supervisor import EngineSupervisor
from serve.vllm_plugin.engine_auth import ENGINE_KEY_ENV

log = logging.getLogger(__name__)

APP_NAME = "kidsart"


class StackStartError(KidsArtError):
    kind = "stack_start_failed"


def router_runtime(profile: Profile, deployment: Deployment, engine_url: str, engine_api_key: str | None = None,
                   api_keys: tuple[str, ...] | list[str] = ()) -> RouterRuntime:
    return RouterRuntime(
        engine_url=engine_url,
        engine_api_key=engine_api_key,
        rubric=str(deployment.rubric.name),
        adapters={dim: deployment.adapters[dim].manifest.label for dim in deployment.dimensions},
        engine_modules=deployment.module_names,
        score_token_ids=base_score_token_ids(profile.base.resolved_path, deployment.rubric.score_tokens),
        settings=profile.router,
        limits=profile.limits,
        api_key_digests=[digest(key) for key in api_keys],
        base_model_id=profile.base.model_id,
        prompt_format=deployment.prompt_format,
        feedback_adapter=deployment.feedback.manifest.label if deployment.feedback else None,
        feedback=profile.feedback,
        deployment_name=deployment.name,
    )


def with_ports(profile: Profile, router_port: int | None = None, engine_port: int | None = None,
               router_host: str | None = None) -> Profile:
    """A copy of the profile with other ports, or the router on another address (tests, parallel stacks, serve --host)."""
    update = {}
    router = {k: v for k, v in (("port", router_port), ("host", router_host)) if v is not None}
    if router:
        update["router"] = profile.router.model_copy(update=router)
    if engine_port is not None:
        update["engine"] = profile.engine.model_copy(update={"port": engine_port})
    return profile.model_copy(update=update)


def _ray_descendants() -> list:
    """Processes a local Ray instance started under this driver (GCS, raylet, agents, workers)."""
    import psutil

    return [p for p in psutil.Process().children(recursive=True) if _is_ray_process(p)]


def _is_ray_process(process) -> bool:
    import psutil

    try:
        text = " ".join(process.cmdline()[:3]) + " " + process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "ray" in text and "vllm" not in text.lower()


def _reap(processes: list, timeout: float = 10.0) -> None:
    """Give Ray's processes `timeout` s to exit after ray.shutdown(), then kill what is left."""
    import psutil

    _gone, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        log.warning("killing leftover Ray process %d (%s)", process.pid, process.name())
        try:
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
    """The engine and the router for one profile; a context manager."""

    def __init__(
        self,
        profile: Profile,
        *,
        router_port: int | None = None,
        engine_port: int | None = None,
        log_dir: Path | None = None,
        engine_url: str | None = None,
        engine_api_key: str | None = None,
        api_keys: list[str] | None = None,
        insecure_no_auth: bool = False,
        router_host: str | None = None,
    ):
        self.profile = with_ports(profile, router_port, engine_port, router_host)
        self.api_keys = list(api_keys or [])
        # refused here, before anything starts, when the router would be open on a non-loopback address
        self.key_status = check_exposure(self.profile.router.host, self.api_keys, insecure_no_auth)
        # an engine started elsewhere takes its key from its operator (the argument or the environment)
        self.external_engine_key = engine_api_key or os.environ.get(ENGINE_KEY_ENV) or None
        self.deployment = load_profile_deployment(self.profile)
        self.log_dir = Path(log_dir) if log_dir else Path("runs") / "logs"
        self.external_engine_url = engine_url
        self.engine = EngineProcess(self.profile, self.deployment, log_path=self.log_dir / "engine.log")
        self.supervisor: EngineSupervisor | None = None
        self._status_dir: str | None = None
        self._ray_started = False

    @property
    def url(self) -> str:
        return f"http://{self.profile.router.host}:{self.profile.router.port}"

    def start(self) -> "Stack":
        started = time.monotonic()
        try:
            if self.external_engine_url is None:
                self.engine.start()
                self._status_dir = tempfile.mkdtemp(prefix="kidsart-engine-")
                self.supervisor = EngineSupervisor(self.engine, self.profile.engine,
                                                   Path(self._status_dir) / "status.json").start()
                self._start_router(self.engine.url, self.engine.api_key)
            else:
                self._start_router(self.external_engine_url, self.external_engine_key)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("stack ready at %s in %.1f s", self.url, time.monotonic() - started)
        return self

    def _start_router(self, engine_url: str, engine_api_key: str | None) -> None:
        import ray
        from ray import serve

        from serve.router import build_app

        runtime = router_runtime(self.profile, self.deployment, engine_url, engine_api_key, self.api_keys)
        if self.supervisor is not None:
            runtime.engine_status_path = str(self.supervisor.status_path)
        if not ray.is_initialized():
            # Ray's processes inherit this: its HTTP proxy then refuses oversized and trickled bodies itself
            router = self.profile.router
            os.environ.update(proxy_environment(router.max_image_bytes, router.body_timeout_s))
            ray.init(
                num_cpus=self.profile.router.ray_num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            self._ray_started = True
        else:
            log.warning("Ray was already running: its proxy keeps the body limits it started with")
        serve.start(http_options={"host": self.profile.router.host, "port": self.profile.router.port})
        serve.run(
            build_app(runtime, num_replicas=self.profile.router.num_replicas),
            name=APP_NAME,
            route_prefix="/",
            blocking=False,
        )

    def _wait_ready(self, timeout: float = 120.0) -> None:
        wait_router_ready(self.url, timeout)

    def stop(self) -> None:
        try:
            import ray
            from ray import serve

            if ray.is_initialized():
                ray_processes = _ray_descendants() if self._ray_started else []
                try:
                    serve.shutdown()
                finally:
                    if self._ray_started:
                        ray.shutdown()
                        self._ray_started = False
                        _reap(ray_processes)
        finally:
            if self.supervisor is not None:
                self.supervisor.stop()  # first, so it cannot restart the engine being stopped
            self.engine.stop()
            if self._status_dir is not None:
                shutil.rmtree(self._status_dir, ignore_errors=True)
                self._status_dir = None
        log.info("stack stopped")

    @property
    def failed(self) -> str | None:
        """Why the engine is gone for good (its restart attempts spent), or None."""
        return self.supervisor.failed if self.supervisor is not None else None

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
