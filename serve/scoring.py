"""The fast path: one prepared image, all its dimensions scored by one engine replica, RAIL in the router.

`EngineScorer` calls the engine deployment (`serve.engine_server.EngineServer`) through a Ray
Serve handle: one `score` call per image carries the pixels and the dimensions wanted, so the
image's requests all reach one replica (vision-encoded once there), and images spread over the
replicas by Ray Serve's routing (the least busy of two sampled). The answer's score-token
logprobs become RAIL scores here, with the one shared function.

Faults: a call whose replica died (its actor gone, or vLLM's engine dead inside it) is sent
again, and Ray Serve routes it to another replica; after `ENGINE_ATTEMPTS` the answer is 503.
`EngineWatch` reads Ray Serve's own status of the engine deployment every second: while no
replica is running, requests are answered 503 + Retry-After at once instead of waiting in
Ray Serve's queue, and /readyz says why (and when the outage has outlasted
`engine.max_outage_s`, that `kidsart serve` is stopping).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from adapters.calibration import Calibration, with_interval
from adapters.errors import UnknownDimensionError
from adapters.feedback import FEEDBACK_MODULE, FeedbackSettings, require_feedback_adapter
from adapters.limits import InputLimits
from adapters.profiles import BatchSettings, RouterSettings
from adapters.prompts import PromptFormat
from adapters.rail import rail_from_token_logprobs
from adapters.rubric import Rubric, load_rubric
from serve import metrics
from serve.errors import EngineResponseError, EngineUnavailableError
from serve.protocol import ScoreAnswer

log = logging.getLogger(__name__)

APP_NAME = "kidsart"  # the Ray Serve application `kidsart serve` and the configs of `kidsart deploy-config` deploy
ENGINE_DEPLOYMENT = "EngineServer"  # the engine deployment's name (serve.engine_server deploys it)
ENGINE_ATTEMPTS = 4  # calls of one image before a 503: a dead replica's calls go to another one
RETRY_PAUSE_S = 0.5  # between attempts: Ray Serve's routing learns of the dead replica meanwhile
WATCH_PERIOD_S = 1.0


class RouterRuntime(BaseModel):
    """Everything a router replica needs, resolved by the driver that starts it."""

    model_config = ConfigDict(extra="forbid")

    rubric: str = Field(description="Rubric name or path.")
    adapters: dict[str, str] = Field(description="Served dimension -> adapter label (name@version).")
    settings: RouterSettings = Field(
        description="The profile's router settings (admission, timeouts, keys on /metrics)."
    )
    limits: InputLimits = Field(description="The profile's image size and input limits.")
    prompt_format: PromptFormat = Field(
        description="The deployment's prompt format: its image recipe prepares uploads."
    )
    feedback_adapter: str | None = Field(
        default=None,
        description="Label (name@version) of the deployment's feedback adapter, served as module "
        f"{FEEDBACK_MODULE!r}; None: feedback requests get 422.",
    )
    feedback: FeedbackSettings = Field(
        default_factory=FeedbackSettings, description="The profile's feedback generation settings."
    )
    deployment_name: str = Field(default="", description="The deployment set's name (named in errors).")
    api_key_digests: list[str] = Field(
        default_factory=list,
        description="SHA-256 hex digests of the router's API "
        "keys; empty: no key is asked (loopback only, or --insecure-no-auth).",
    )
    max_outage_s: float = Field(
        default=300.0,
        gt=0,
        description="The profile's engine.max_outage_s: past it with no "
        "healthy engine replica, /readyz says the service is stopping.",
    )
    batch: BatchSettings = Field(default_factory=BatchSettings, description="The profile's Batch API limits.")
    calibration: Calibration | None = Field(
        default=None, description="The deployment's intervals (adapters.calibration); none: answers carry none."
    )
    modules: dict[str, str] = Field(
        default_factory=dict,
        description=f"Dimension (and {FEEDBACK_MODULE!r}) -> the engine's content-addressed LoRA module; sent with "
        "each call, so the engines serve whichever set the router serves (empty: the engines' start set).",
    )
    lora_paths: dict[str, str] = Field(
        default_factory=dict, description="Module name -> adapter folder (an engine loads a module it lacks)."
    )
    admin_key_digests: list[str] = Field(
        default_factory=list,
        description="SHA-256 hex digests of the admin keys (KIDSART_ADMIN_KEYS): only they reach /v1/admin/*.",
    )

    def serving(self, served) -> RouterRuntime:
        """This runtime serving another adapter set (a `serve.protocol.ServedSet`): its adapters, feedback
        adapter, calibration and modules; everything else (limits, keys, settings) as it is."""
        return self.model_copy(
            update={
                "adapters": served.adapters,
                "feedback_adapter": served.feedback_adapter,
                "calibration": served.calibration,
                "deployment_name": served.name,
                "modules": served.modules,
                "lora_paths": served.lora_paths,
            }
        )

    def lora(self, module: str) -> list[str] | None:
        """[module name, folder] of a dimension (or feedback) for the engine call; None: the engine's own."""
        name = self.modules.get(module)
        return [name, self.lora_paths[name]] if name else None


def _dead_replica(exc: BaseException) -> bool:
    """Whether a failed call died with its replica or its engine (worth sending again), not on its input."""
    from ray import exceptions as ray_exceptions

    if isinstance(
        exc, (ray_exceptions.ActorDiedError, ray_exceptions.ActorUnavailableError, ray_exceptions.RayActorError)
    ):
        return True
    cause = getattr(exc, "cause", None)
    # vLLM's EngineDeadError, raised by the replica once its engine process is gone (named, not imported:
    # the router never imports vLLM)
    return type(cause).__name__ in ("EngineDeadError", "EngineGenerateError") or "EngineDeadError" in str(exc)[:2000]


@dataclass
class EngineWatch:
    """Ray Serve's view of the engine deployment (running replicas), refreshed in the background."""

    max_outage_s: float
    app_name: str | None = None  # None: the application of the replica this runs in
    running: int | None = None  # None: not read yet
    message: str = ""
    down_since: float | None = None
    _task: asyncio.Task | None = field(default=None, repr=False)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def refresh(self) -> None:
        """Read Ray Serve's status now."""
        self.update(*await asyncio.to_thread(engine_status, self.app_name))

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the controller busy or restarting: keep the last view, say so in the log
                log.warning("could not read Ray Serve's status of the engine: %s", exc)
            await asyncio.sleep(WATCH_PERIOD_S)

    def update(self, running: int, message: str) -> None:
        self.running, self.message = running, message
        if running > 0:
            self.down_since = None
        elif self.down_since is None:
            self.down_since = time.monotonic()

    def outage_s(self) -> float:
        return 0.0 if self.down_since is None else time.monotonic() - self.down_since

    def reason(self) -> str | None:
        """Why the engine cannot be used now, or None when a replica is running."""
        if self.running is None:
            return "engine status not read yet"
        if self.running > 0:
            return None
        outage = self.outage_s()
        reason = f"no engine replica is healthy (for {outage:.0f} s)"
        if self.message:
            reason += f": {self.message[:300]}"
        if outage > self.max_outage_s:
            reason += f"; past engine.max_outage_s={self.max_outage_s:.0f} s, kidsart serve is stopping"
        return reason


def engine_status(app_name: str | None = None) -> tuple[int, str]:
    """(running replicas, status message) of the engine deployment, from Ray Serve's controller.

    Asks the controller for this one deployment's details (`get_deployment_details`, the call Ray Serve's own
    tests use) instead of `serve.status()`: measured on a running stack, `serve.status()` took 54 ms of the
    caller's CPU and 4.8 ms of the controller's per call (it builds every application's details and rebuilds
    each deployment's request-router config with cloudpickle), this 1.6 ms and 2.0 ms. The router's watch asks
    every second, so on a 2-core machine `serve.status()` alone took ~5% of a core from the model."""
    import ray
    from ray import serve
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    if app_name is None:
        app_name = serve.get_replica_context().app_name
    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    try:
        details = ray.get(controller.get_deployment_details.remote(app_name, ENGINE_DEPLOYMENT))
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, KeyError):  # the application, or its engine deployment, is not (or no more) there
            return 0, f"no {ENGINE_DEPLOYMENT} deployment in application {app_name!r}"
        raise
    running = sum(1 for replica in details.replicas if getattr(replica.state, "value", replica.state) == "RUNNING")
    return running, details.message or str(details.status)


@dataclass
class EngineScorer:
    """The router's side of the engine deployment: selection, calls with retries, RAIL."""

    runtime: RouterRuntime
    engine: object  # the engine deployment's DeploymentHandle
    watch: EngineWatch | None = None
    rubric: Rubric = field(init=False)

    def __post_init__(self) -> None:
        self.rubric = load_rubric(self.runtime.rubric)

    def select(self, dimensions: list[str] | None) -> list:
        """The requested dimensions (validated), or every deployed one when none are named."""
        if not dimensions:
            return [d for d in self.rubric.dimensions if d.name in self.runtime.adapters]
        selected = self.rubric.select(dimensions)
        missing = [d.name for d in selected if d.name not in self.runtime.adapters]
        if missing:
            raise UnknownDimensionError(f"no adapter is deployed for dimension(s) {missing}")
        return selected

    async def prepare(self, data: bytes):
        """Decode and prepare an upload once (the prompt format's image recipe), in a thread (decoding is CPU
        work): the pixels every dimension sees, as an HxWx3 uint8 array. Bad input raises the typed image errors."""
        import numpy

        from adapters.images import normalize_bytes

        limits = self.runtime.limits

        def work():
            image = normalize_bytes(
                data,
                limits.image_size,
                recipe=self.runtime.prompt_format.image_recipe,
                max_bytes=limits.max_image_bytes,
                max_pixels=limits.max_image_pixels,
            )
            return numpy.asarray(image.convert("RGB"), dtype=numpy.uint8)

        return await asyncio.to_thread(work)

    async def score_upload(
        self,
        data: bytes,
        dimensions: list[str] | None,
        description: str | None,
        request_id: str,
        feedback: bool = False,
    ) -> tuple[ScoreAnswer, int]:
        """One uploaded image end to end (prepare, score, points and total, the comment when asked): the score
        answer and the prompt tokens used. The router and the district job's handle path both use it."""
        pixels = await self.prepare(data)
        scores, prompt_tokens = await self.score(pixels, dimensions, description)
        comment = await self.feedback(pixels, scores, description) if feedback else None  # its prompt has the scores
        return ScoreAnswer.of(self.rubric, request_id, scores, comment), prompt_tokens

    async def score(
        self, pixels, dimensions: list[str] | None = None, description: str | None = None
    ) -> tuple[dict, int]:
        """Score one prepared image (HxWx3 uint8) on the chosen dimensions; returns (scores, prompt tokens used)."""
        selected = self.select(dimensions)
        names = [d.name for d in selected]
        loras = {d: self.runtime.lora(d) for d in names} if self.runtime.modules else None
        answer = await self._call("score", self.runtime.settings.engine_timeout_s, pixels, names, description, loras)
        scores, prompt_tokens = {}, 0
        for dim in selected:
            try:
                entry = answer[dim.name]
                rail = rail_from_token_logprobs(entry["logprobs"], self.rubric.score_tokens, self.rubric.levels)
            except (KeyError, TypeError, ValueError) as exc:
                raise EngineResponseError(f"the engine's answer for {dim.name} has no score-token logprobs") from exc
            scores[dim.name] = with_interval(
                dim.name,
                {"score": rail.score, "probs": rail.probs, "std": rail.std, "adapter": self.runtime.adapters[dim.name]},
                self.runtime.calibration,
                self.rubric.levels,
            )
            metrics.SCORES.labels(dim.name).observe(rail.score)
            prompt_tokens += int(entry.get("prompt_tokens", 0))
        return scores, prompt_tokens

    def check_feedback(self) -> None:
        """Refuse a feedback request at once when the deployment has no feedback adapter."""
        require_feedback_adapter(
            self.runtime.feedback_adapter is not None, f"deployment {self.runtime.deployment_name!r}"
        )

    async def feedback(self, pixels, scores: dict, description: str | None = None) -> dict:
        """A comment on one image from the feedback adapter, with the scores just predicted in its prompt."""
        self.check_feedback()
        points = {d: e["score"] for d, e in scores.items()}
        lora = self.runtime.lora(FEEDBACK_MODULE)
        text = await self._call("feedback", self.runtime.feedback.timeout_s, pixels, points, description, None, lora)
        if not isinstance(text, str):
            raise EngineResponseError("the engine's feedback answer has no text")
        metrics.FEEDBACK.inc()
        return {"text": text.strip(), "adapter": self.runtime.feedback_adapter}

    async def _call(self, method: str, timeout_s: float, *args):
        """One engine call, sent again (to another replica) when its replica died; 503 when none can answer."""
        for attempt in range(1, ENGINE_ATTEMPTS + 1):
            reason = self.watch.reason() if self.watch is not None else None
            if reason is not None and self.watch.running == 0:
                raise EngineUnavailableError(f"the scoring engine is unavailable: {reason}")
            started = time.perf_counter()
            try:
                return await self._answer(getattr(self.engine, method).remote(*args), method, timeout_s)
            except EngineUnavailableError:
                raise
            except Exception as exc:  # Ray wraps the replica's errors; sorted just below
                if not _dead_replica(exc):
                    log.error("engine %s failed: %s", method, str(exc)[:1000])
                    raise EngineResponseError(
                        f"the scoring engine failed on the {method} request: {type(exc).__name__}"
                    ) from exc
                log.warning(
                    "engine replica lost during %s (attempt %d of %d): %s",
                    method,
                    attempt,
                    ENGINE_ATTEMPTS,
                    type(exc).__name__,
                )
                if attempt == ENGINE_ATTEMPTS:
                    raise EngineUnavailableError(
                        f"the scoring engine replica was lost ({method}); {ENGINE_ATTEMPTS} attempts failed"
                    ) from exc
                await asyncio.sleep(RETRY_PAUSE_S * attempt)
            finally:
                metrics.ENGINE_LATENCY.observe(time.perf_counter() - started)
        raise AssertionError("unreachable")

    async def _answer(self, response, method: str, timeout_s: float):
        """The call's answer; a 503 (the call cancelled) when it outlives `timeout_s`, or when Ray Serve's status
        shows no engine replica while it waits (Ray Serve would hold it until a replacement has started)."""
        waiter = asyncio.ensure_future(_resolved(response))
        deadline = time.monotonic() + timeout_s
        while True:
            done, _ = await asyncio.wait({waiter}, timeout=min(WATCH_PERIOD_S, max(0.0, deadline - time.monotonic())))
            if done:
                return waiter.result()
            reason = None
            if self.watch is not None and self.watch.running == 0:
                reason = f"the scoring engine is unavailable: {self.watch.reason()}"
            elif time.monotonic() >= deadline:
                reason = f"the scoring engine did not answer within {timeout_s} s ({method})"
            if reason is not None:
                response.cancel()
                waiter.cancel()
                raise EngineUnavailableError(reason)

    async def ready(self) -> tuple[bool, str]:
        if self.watch is None:
            return True, "ready"
        reason = self.watch.reason()
        return (True, "ready") if reason is None else (False, reason)


async def _resolved(response):
    """Await a Ray Serve DeploymentResponse (a coroutine, so asyncio can wait on it beside a timer)."""
    return await response
