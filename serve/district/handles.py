"""The district job's handle path: images scored through the engine deployment with Ray Serve handles.

Inside the Ray cluster that serves the application (`--pipeline ray` without `--url`), the
job's Ray Data actors do the router's per-image work themselves, with the router's own
code (`serve.scoring.EngineScorer.score_upload`: decode, the prompt format's image recipe,
one engine call per image carrying every dimension, RAIL, points): no HTTP, no proxy, no
router replica. What the application serves (rubric, adapters, prompt format, limits) is
read once from a router replica (`runtime_info`), so the answers equal the router's.

Faults, as the HTTP path's client sorts them (`serve.district.client`): a replica that
died is retried on another by `EngineScorer`; while no engine replica runs
(`EngineUnavailableError`, the router's 503) the call is retried with the one retry
policy until `max_outage_s`, then `RouterUnavailableError` stops the run resumably; an
input the service refuses (the router's 4xx) or an engine failure on one image (5xx)
becomes that row's error.
"""

from __future__ import annotations

import logging
import random
import time

from adapters.errors import ConfigError, KidsArtError
from serve.client import RetryPolicy, RouterUnavailableError, retry_kwargs
from serve.district.client import INPUT_ERROR_STATUSES, parse_score_answer
from serve.errors import EngineUnavailableError, status_for
from serve.scoring import APP_NAME, ENGINE_DEPLOYMENT, EngineScorer, EngineWatch, RouterRuntime

log = logging.getLogger(__name__)

RUNTIME_TIMEOUT_S = 60.0


def served_runtime(app_name: str = APP_NAME) -> dict:
    """What the running application serves (serve.scoring.RouterRuntime as a dict), from one of its routers."""
    from ray import serve

    from serve.router import ROUTER_DEPLOYMENT

    try:
        router = serve.get_deployment_handle(ROUTER_DEPLOYMENT, app_name)
        return router.runtime_info.remote().result(timeout_s=RUNTIME_TIMEOUT_S)
    except Exception as exc:  # Ray's errors for a missing app or deployment are several types
        raise ConfigError(
            f"no running {app_name!r} application with a {ROUTER_DEPLOYMENT} deployment on this Ray "
            f"cluster ({exc.__class__.__name__}: {str(exc)[:300]}); deploy it first (kidsart serve, "
            "or serve run on a file from kidsart deploy-config)"
        ) from exc


class HandleScoreClient:
    """The district job's scoring client over Ray Serve handles; the same results as `ScoreClient`."""

    def __init__(
        self,
        runtime: dict,
        *,
        dimensions: list[str] | None = None,
        policy: RetryPolicy | None = None,
        feedback: bool = False,
        app_name: str = APP_NAME,
        engine=None,
        watch: EngineWatch | None = None,
    ):
        """`engine` (the engine deployment's handle) and `watch` default to the application's own."""
        parsed = RouterRuntime.model_validate(runtime)
        if engine is None:
            from ray import serve

            engine = serve.get_deployment_handle(ENGINE_DEPLOYMENT, app_name)
        self.watch = watch or EngineWatch(parsed.max_outage_s, app_name=app_name)
        self.scorer = EngineScorer(parsed, engine, self.watch)
        self.dimensions = list(dimensions or [])
        self.feedback = feedback
        self.policy = policy or RetryPolicy()
        self.url = f"ray-serve://{app_name}/{ENGINE_DEPLOYMENT}"  # named in messages, as a router URL would be
        self._rng = random.Random(self.policy.seed)
        self.retries = 0
        self.last_success = time.monotonic()

    async def aclose(self) -> None:
        self.watch.stop()

    async def wait_ready(self) -> None:
        """Until an engine replica runs, at most `max_outage_s`."""
        from tenacity import AsyncRetrying

        self.watch.start()
        try:
            async for attempt in AsyncRetrying(**self._kwargs("engine replicas")):
                with attempt:
                    await self.watch.refresh()
                    reason = self.watch.reason()
                    if reason is not None:
                        raise EngineUnavailableError(reason)
        except EngineUnavailableError as exc:
            raise RouterUnavailableError(f"no engine replica within {self.policy.max_outage_s:.0f} s: {exc}") from exc

    async def score(self, data: bytes, *, request_id: str, description: str = "") -> dict:
        """{"status": "ok", "scores": {...}} or {"status": "error", "error_type", "error", "http_status"}."""
        from tenacity import AsyncRetrying

        self.watch.start()
        try:
            async for attempt in AsyncRetrying(**self._kwargs(request_id)):
                with attempt:
                    body, _ = await self.scorer.score_upload(
                        data, self.dimensions or None, description or None, request_id, self.feedback
                    )
        except EngineUnavailableError as exc:
            raise RouterUnavailableError(
                f"no usable answer from the engine deployment within "
                f"{self.policy.max_outage_s:.0f} s (last: {exc}); rerun with --resume "
                "once it is back"
            ) from exc
        except KidsArtError as exc:  # refused input (the router's 4xx) or a failure on this image (5xx): its row
            status = status_for(exc)
            if status not in INPUT_ERROR_STATUSES and status < 500:
                raise
            self.last_success = time.monotonic()
            return {
                "status": "error",
                "error_type": getattr(exc, "kind", "error"),
                "error": str(exc),
                "http_status": status,
            }
        self.last_success = time.monotonic()
        return parse_score_answer(body, self.dimensions, self.feedback)

    def _kwargs(self, label: str) -> dict:
        kwargs = retry_kwargs(self.policy, self._rng, label, (EngineUnavailableError,))
        before = kwargs["before_sleep"]

        def count(state) -> None:
            self.retries += 1
            before(state)

        return {**kwargs, "before_sleep": count}
